"""The official `e2b` SDK against Workspace's E2B layer: Sandbox.create() → commands.run('true')
with the warm pool, and commands.run('true') beside our own SDK's process.run('true') on the
same sandbox, interleaved one for one."""

from __future__ import annotations

import time

from benchmarks.config import Config
from benchmarks.measure import latency
from benchmarks.report import Metric
from benchmarks.server import Server

E2B = "E2B SDK compatibility (e2b 2.20.0)"
WARMUP = 3


def e2b_benchmarks(server: Server, cfg: Config) -> list[Metric]:
    from e2b import Sandbox

    from workspace_sdk import WorkspaceClient

    opts = {"api_url": server.url + "/e2b", "sandbox_url": server.url + "/e2b/envd", "api_key": "bench"}
    create_samples: list[float] = []
    for i in range(max(10, cfg.lifecycle_iterations // 2) + WARMUP):
        t0 = time.perf_counter()
        sandbox = Sandbox.create(**opts)
        sandbox.commands.run("true")
        elapsed = time.perf_counter() - t0
        sandbox.kill()
        if i >= WARMUP:
            create_samples.append(elapsed)
        time.sleep(0.2)  # let the pool refill, as a create-then-work client would see it
    e2b_samples: list[float] = []
    ours_samples: list[float] = []
    sandbox = Sandbox.create(**opts)
    try:
        with WorkspaceClient(server.url) as client:
            for i in range(max(50, cfg.run_iterations // 3) + WARMUP):
                t0 = time.perf_counter()
                sandbox.commands.run("true")
                t1 = time.perf_counter()
                client.process.run(sandbox.sandbox_id, "true")
                t2 = time.perf_counter()
                if i >= WARMUP:
                    e2b_samples.append(t1 - t0)
                    ours_samples.append(t2 - t1)
    finally:
        sandbox.kill()
    return [
        latency(
            "e2b.create_to_first",
            E2B,
            "Sandbox.create() → commands.run('true') through the e2b SDK, warm pool",
            create_samples,
        ),
        latency(
            "e2b.run_true",
            E2B,
            "commands.run('true') through the e2b SDK (bash -l -c, Connect stream)",
            e2b_samples,
            baselines=("e2b.sdk_run_true",),
        ),
        latency(
            "e2b.sdk_run_true",
            E2B,
            "process.run('true') through Workspace's SDK, same sandbox, interleaved",
            ours_samples,
            short="our SDK",
        ),
    ]
