"""Ports of sandboxes: a small GET through the proxy beside process.run('true') (same loop,
one for one), download throughput through the proxy beside the file API's, and 100
concurrent keep-alive clients of one proxied server."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from benchmarks.client import Api, _check
from benchmarks.config import Config
from benchmarks.measure import latency
from benchmarks.report import Metric
from benchmarks.server import Server
from benchmarks.stats import mb_per_s, summarize

PORTS = "Ports: the HTTP proxy into sandboxes"
API = "/api/v1"
PORT = 8000
WEB_SERVER = Path(__file__).resolve().parents[1] / "tests" / "support" / "sandbox_web_server.py"


def start_web_server(api: Api, sandbox_id: str) -> str:
    api.write_file(sandbox_id, "/workspace/server.py", WEB_SERVER.read_bytes())
    _check(
        api.http.post(
            f"{API}/sandboxes/{sandbox_id}/processes",
            json={"command": "python3", "args": ["/workspace/server.py", str(PORT)]},
        )
    )
    base = f"{API}/sandboxes/{sandbox_id}/ports/{PORT}"
    deadline = time.monotonic() + 20
    while api.http.get(f"{base}/headers").status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError("the web server in the sandbox did not start")
        time.sleep(0.1)
    return base


def concurrent_clients(url: str, clients: int, requests_each: int) -> tuple[list[float], int]:
    async def one(client: httpx.AsyncClient, samples: list[float]) -> int:
        errors = 0
        for _ in range(requests_each):
            t0 = time.perf_counter()
            try:
                ok = (await client.get(url)).status_code == 200
            except httpx.HTTPError:
                ok = False
            samples.append(time.perf_counter() - t0)
            errors += not ok
        return errors

    async def main() -> tuple[list[float], int]:
        samples: list[float] = []
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            counts = await asyncio.gather(*(one(client, samples) for _ in range(clients)))
        return samples, sum(counts)

    return asyncio.run(main())


def ports(server: Server, cfg: Config) -> list[Metric]:
    runs = max(50, cfg.run_iterations // 3)
    size_mib = cfg.large_file_bytes // (1024 * 1024)
    with Api(server.url) as api:
        sandbox_id = str(api.create()["id"])
        server.created.add(sandbox_id)
        try:
            base = start_web_server(api, sandbox_id)
            api.write_file(sandbox_id, "/workspace/small.txt", b"x" * 100)
            get_samples: list[float] = []
            run_samples: list[float] = []
            for i in range(runs + 5):
                t0 = time.perf_counter()
                _check(api.http.get(f"{base}/small.txt"))
                t1 = time.perf_counter()
                api.run(sandbox_id, "true")
                t2 = time.perf_counter()
                if i >= 5:
                    get_samples.append(t1 - t0)
                    run_samples.append(t2 - t1)
            api.run(sandbox_id, "sh", "-c", f"head -c {size_mib}M /dev/zero > /workspace/big.bin")
            proxy_rates, file_rates = [], []
            for _ in range(3):
                t0 = time.perf_counter()
                with api.http.stream("GET", f"{base}/big.bin") as response:
                    received = sum(len(chunk) for chunk in response.iter_raw())
                proxy_rates.append(mb_per_s(received, time.perf_counter() - t0))
                t0 = time.perf_counter()
                with api.http.stream(
                    "GET", f"{API}/sandboxes/{sandbox_id}/files", params={"path": "/workspace/big.bin"}
                ) as response:
                    received = sum(len(chunk) for chunk in response.iter_raw())
                file_rates.append(mb_per_s(received, time.perf_counter() - t0))
            clients = 100
            many, errors = concurrent_clients(f"{server.url}{base}/small.txt", clients, max(5, runs // 20))
        finally:
            api.delete(sandbox_id)
            server.created.discard(sandbox_id)
    proxy_p50 = sorted(get_samples)[len(get_samples) // 2]
    run_p50 = sorted(run_samples)[len(run_samples) // 2]
    return [
        latency(
            "ports.get_small",
            PORTS,
            "GET of 100 bytes through the path-based proxy (a new tunnel each)",
            get_samples,
            baselines=("ports.run_true",),
        ),
        latency("ports.run_true", PORTS, "process.run('true'), same loop", run_samples, short="run('true')"),
        Metric(
            key="ports.get_over_run",
            section=PORTS,
            label="proxied GET p50 minus process.run('true') p50",
            unit="ms",
            value=(proxy_p50 - run_p50) * 1000,
        ),
        Metric(
            key="ports.download",
            section=PORTS,
            label=f"download of {size_mib} MiB through the proxy",
            unit="MB/s",
            value=sorted(proxy_rates)[1],
            baselines=("ports.file_read",),
            note="reps: " + ", ".join(f"{r:.0f}" for r in proxy_rates) + " MB/s",
        ),
        Metric(
            key="ports.file_read",
            section=PORTS,
            label="the same file through the file API (baseline)",
            unit="MB/s",
            value=sorted(file_rates)[1],
            short="file API",
            note="reps: " + ", ".join(f"{r:.0f}" for r in file_rates) + " MB/s",
        ),
        Metric(
            key="ports.concurrent",
            section=PORTS,
            label=f"{clients} concurrent keep-alive clients, GET of 100 bytes each",
            unit="ms",
            summary=summarize([s * 1000 for s in many]),
            note=f"{errors} errors in {len(many)} requests",
        ),
    ]
