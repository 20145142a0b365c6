"""Image templates: create → first command from an imported image (warm pool, and cold
beside the `default` template's cold create in the same loop), import of a 100 MB
`docker save` archive, a Containerfile build (every step run, and the unchanged rebuild that
is all cache hits), the disk 10 sandboxes of a 500 MB template add, and the idle memory of
image sandboxes. Runs on a server of its own with `--pool bench/busybox=1`."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from benchmarks.client import Api, _check
from benchmarks.config import Config
from benchmarks.measure import latency
from benchmarks.procfs import cgroup_memory, rss_bytes
from benchmarks.report import Metric
from benchmarks.server import Server

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests/support/images.py writes the archives

from tests.support import images  # noqa: E402
from tests.support.images import Entry, Image, layer_tar  # noqa: E402

TEMPLATES = "Image templates"
API = "/api/v1"
POOLED = "bench/busybox"
POOL_ARGS = ("--pool", f"{POOLED}=1")
MIB = 1024 * 1024
IMPORT_MB = 100
LARGE_TEMPLATE_MB = 500
DISK_SANDBOXES = 10
BUILD_ROUNDS = 5
CONTAINERFILE = """\
FROM {base}
ARG NONCE
RUN echo "$NONCE" > /etc/build-nonce
ENV APP=/opt/app
WORKDIR /opt/app
COPY app.sh ./
RUN ./app.sh > out.txt
"""


def import_archive(api: Api, archive: Path, name: str) -> dict[str, object]:
    with open(archive, "rb") as body:
        response = api.http.post(
            f"{API}/templates/import",
            params={"name": name, "replace": "true"},
            content=body,
            headers={"content-type": "application/octet-stream"},
            timeout=900,
        )
    result: dict[str, object] = _check(response).json()
    return result


def random_layer(megabytes: int, name: str) -> bytes:
    return layer_tar([Entry(name, os.urandom(megabytes * MIB))])


def wait_warm(api: Api, templates: tuple[str, ...], timeout: float = 60.0) -> None:
    """Until every one of these pools holds its sandbox, so none is refilling: a refill that
    started after the other template's claim would otherwise run during this one's create
    (it did, and charged the image row ~2 ms of another pool's cold start)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sizes = api.pool_sizes() or {}
        if all(sizes.get(template, 0) >= 1 for template in templates):
            return
        time.sleep(0.02)


def du_kib(path: Path) -> int:
    # -x: not into the mounted roots and disks (the merged view would count the layers)
    result = subprocess.run(["du", "-skx", str(path)], capture_output=True, text=True, check=True)
    return int(result.stdout.split()[0])


def template_benchmarks(server: Server, cfg: Config, scratch: Path) -> list[Metric]:
    rounds = max(5, cfg.lifecycle_iterations)
    warm: list[float] = []
    warm_default: list[float] = []
    cold_image: list[float] = []
    cold_default: list[float] = []
    imports: list[float] = []
    metrics: list[Metric] = []
    with Api(server.url) as api:
        import_archive(api, images.busybox_oci_archive(scratch / "busybox.tar"), POOLED)
        canonical = f"{POOLED}:latest"
        for i in range(rounds + 2):
            for template, samples in ((POOLED, warm), ("default", warm_default)):
                wait_warm(api, (canonical, "default"))
                t0 = time.perf_counter()
                sandbox_id = str(api.create(template=template)["id"])
                api.run(sandbox_id, "true")
                t1 = time.perf_counter()
                api.delete(sandbox_id)
                if i >= 2:
                    samples.append(t1 - t0)
        # Another disk size than the default: never from the pool, for either template.
        for i in range(rounds + 2):
            for template, samples in (("default", cold_default), (POOLED, cold_image)):
                t0 = time.perf_counter()
                sandbox_id = str(api.create(template=template, disk_mb=1000)["id"])
                api.run(sandbox_id, "true")
                t1 = time.perf_counter()
                api.delete(sandbox_id)
                if i >= 2:
                    samples.append(t1 - t0)
        archive = images.docker_archive(Image([random_layer(IMPORT_MB, "data.bin")]), scratch / "import.tar")
        for i in range(3):
            t0 = time.perf_counter()
            import_archive(api, archive, f"bench/import-{i}")
            imports.append(time.perf_counter() - t0)
            _check(api.http.delete(f"{API}/templates/bench/import-{i}"))
        archive.unlink()
        metrics += [
            latency(
                "templates.warm_default",
                TEMPLATES,
                "create → first command, default template, warm pool (same loop)",
                warm_default,
                short="default warm",
            ),
            latency(
                "templates.warm_to_first",
                TEMPLATES,
                "create → first command, imported busybox image, warm pool",
                warm,
                baselines=("templates.warm_default",),
            ),
            latency(
                "templates.cold_default",
                TEMPLATES,
                "cold create → first command, default template (same loop)",
                cold_default,
                short="default cold",
            ),
            latency(
                "templates.cold_image",
                TEMPLATES,
                "cold create → first command, imported busybox image",
                cold_image,
                baselines=("templates.cold_default",),
            ),
            Metric(
                key="templates.cold_ratio",
                section=TEMPLATES,
                label="cold image create over cold default create (p50s)",
                unit="x",
                value=sorted(cold_image)[len(cold_image) // 2] / sorted(cold_default)[len(cold_default) // 2],
            ),
            latency(
                "templates.import_100mb",
                TEMPLATES,
                f"import of a {IMPORT_MB} MB docker-save archive (upload, skopeo, unpack)",
                imports,
            ),
        ]
        metrics += build_benchmarks(api, canonical)
        metrics += disk_and_memory(server, api, scratch)
    return metrics


def build_context(base: str) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name, data, mode in (
            ("Containerfile", CONTAINERFILE.format(base=base).encode(), 0o644),
            ("app.sh", b"#!/bin/sh\necho built\n", 0o755),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def timed_build(api: Api, context: bytes, nonce: str) -> tuple[float, dict[str, object]]:
    """POST → the end event of the build's log (the record, ready): seconds, and the record."""
    t0 = time.perf_counter()
    response = api.http.post(
        f"{API}/templates/build",
        params={"name": "bench/built", "replace": "true", "build_arg": f"NONCE={nonce}"},
        content=context,
        headers={"content-type": "application/x-tar"},
        timeout=300,
    )
    build_id = _check(response).json()["id"]
    record: dict[str, object] = {}
    with api.http.stream("GET", f"{API}/builds/{build_id}/logs", timeout=300) as stream:
        event = ""
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: ") and event == "end":
                record = json.loads(line[len("data: ") :])
                break
    elapsed = time.perf_counter() - t0
    if record.get("state") != "ready":
        raise RuntimeError(f"the benchmark build failed: {record.get('error')}")
    return elapsed, record


def build_benchmarks(api: Api, base: str) -> list[Metric]:
    """A build of 2 RUN and 1 COPY step (each in a fresh sandbox of the image so far), then
    the same build again: every step a cache hit, no sandbox made."""
    context = build_context(base)
    first: list[float] = []
    rebuild: list[float] = []
    timed_build(api, context, "warm-up")
    for i in range(BUILD_ROUNDS):
        nonce = f"{time.time_ns()}-{i}"
        elapsed, record = timed_build(api, context, nonce)  # a new NONCE: every step runs
        steps = record["steps"]
        assert isinstance(steps, list) and not any(s["cached"] for s in steps if s["kind"] != "config")
        first.append(elapsed)
        elapsed, record = timed_build(api, context, nonce)  # unchanged: all cache hits
        steps = record["steps"]
        assert isinstance(steps, list) and all(s["cached"] for s in steps if s["kind"] != "config")
        rebuild.append(elapsed)
    _check(api.http.delete(f"{API}/templates/bench/built"))
    return [
        latency(
            "templates.build_first",
            TEMPLATES,
            "build, 2 RUN + 1 COPY steps, each run (same loop)",
            first,
            short="first build",
        ),
        latency(
            "templates.build_unchanged",
            TEMPLATES,
            "unchanged rebuild (all steps from the cache)",
            rebuild,
            baselines=("templates.build_first",),
        ),
    ]


def disk_and_memory(server: Server, api: Api, scratch: Path) -> list[Metric]:
    large = Image([images.busybox_layer(), random_layer(LARGE_TEMPLATE_MB, "large.bin")])
    archive = images.docker_archive(large, scratch / "large.tar")
    import_archive(api, archive, "bench/large")
    archive.unlink()
    sandboxes = server.data_dir / "sandboxes"
    time.sleep(0.5)
    before = du_kib(sandboxes)
    rss_before = rss_bytes(server.pid)
    ids = [str(api.create(template="bench/large")["id"]) for _ in range(DISK_SANDBOXES)]
    try:
        for sandbox_id in ids:
            api.run(sandbox_id, "true")
        time.sleep(3.0)
        added = du_kib(sandboxes) - before
        memories = [cgroup_memory(server.sandbox_cgroups / sandbox_id).usage for sandbox_id in ids]
        rss_after = rss_bytes(server.pid)
    finally:
        for sandbox_id in ids:
            api.delete(sandbox_id)
        _check(api.http.delete(f"{API}/templates/bench/large"))
    per_sandbox = (sum(memories) + max(0, rss_after - rss_before)) / len(ids)
    return [
        Metric(
            key="templates.du_10_sandboxes",
            section=TEMPLATES,
            label=f"disk added by {DISK_SANDBOXES} sandboxes of a {LARGE_TEMPLATE_MB} MB template (du)",
            unit="MiB",
            value=added / 1024,
            note="sandbox bundles: sparse disk images with the overlay upper dirs; the layers are shared",
        ),
        Metric(
            key="templates.idle_memory",
            section=TEMPLATES,
            label=f"idle memory per image sandbox, {DISK_SANDBOXES} up",
            unit="MiB",
            value=per_sandbox / MIB,
            note="sandbox memory cgroup usage + server RSS growth, per sandbox",
        ),
    ]
