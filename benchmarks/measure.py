"""What every scenario measures with: latency percentiles, CPU meters, parallel helpers,
and the report's section titles."""

from __future__ import annotations

import resource
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from benchmarks.client import Api, ApiError
from benchmarks.procfs import CpuTimes, cpu_times
from benchmarks.report import Metric
from benchmarks.server import Server
from benchmarks.stats import scaled, summarize

T = TypeVar("T")

LIFECYCLE = "Sandbox lifecycle: create → first command → delete"
COMMANDS = "Commands: process.run round trip"
TRANSFER = "Streaming and files"
PTY = "PTY"
CONCURRENCY = "Concurrency"
MEMORY = "Memory"
BASELINES = "Baselines (same run)"

# 63 printable bytes and a newline: `yes` repeats it; JSON escapes only the newline.
STREAM_LINE = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_"


def latency(
    key: str,
    section: str,
    label: str,
    samples: Sequence[float],
    *,
    baselines: tuple[str, ...] = (),
    short: str = "",
    note: str = "",
) -> Metric:
    """A row summarising samples taken in seconds, shown in milliseconds."""
    return Metric(
        key=key,
        section=section,
        label=label,
        unit="ms",
        summary=summarize(scaled(samples, 1000)),
        baselines=baselines,
        short=short,
        note=note,
    )


def cpu_seconds_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """Adds up the server's and an agent's CPU time over the `with` blocks it is used in."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.agent_pid: int | None = None
        self.server_seconds = 0.0
        self.agent_seconds = 0.0
        self._start: tuple[CpuTimes, CpuTimes | None] | None = None

    def __enter__(self) -> CpuMeter:
        agent = cpu_times(self.agent_pid) if self.agent_pid is not None else None
        self._start = (cpu_times(self.server.pid), agent)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._start is not None
        server0, agent0 = self._start
        self.server_seconds += (cpu_times(self.server.pid) - server0).own
        if self.agent_pid is not None and agent0 is not None:
            self.agent_seconds += (cpu_times(self.agent_pid) - agent0).own

    def rows(self, key: str, section: str, verb: str, mib: float) -> list[Metric]:
        if mib <= 0:
            return []
        return [
            Metric(
                key=f"{key}.cpu.server",
                section=section,
                label=f"  server CPU per MiB {verb}",
                unit="ms",
                value=self.server_seconds * 1000 / mib,
            ),
            Metric(
                key=f"{key}.cpu.agent",
                section=section,
                label=f"  agent CPU per MiB {verb}",
                unit="ms",
                value=self.agent_seconds * 1000 / mib,
            ),
        ]


def in_parallel(workers: int, items: Sequence[T], action: Callable[[T], object]) -> None:
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for future in [pool.submit(action, item) for item in items]:
            future.result()


def create_many(server: Server, count: int, workers: int, **params: Any) -> list[str]:
    ids: list[str] = []
    lock = threading.Lock()

    def create(_: int) -> None:
        with Api(server.url) as api:
            sandbox_id = str(api.create(**params)["id"])
        with lock:
            ids.append(sandbox_id)
            server.created.add(sandbox_id)

    in_parallel(workers, list(range(count)), create)
    return ids


def delete_many(server: Server, ids: Sequence[str], workers: int) -> None:
    def delete(sandbox_id: str) -> None:
        with Api(server.url) as api:
            api.delete(sandbox_id)
        server.created.discard(sandbox_id)

    in_parallel(workers, list(ids), delete)


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise ApiError(message)


# --------------------------------------------------------------------------- lifecycle


# Limits other than the server's defaults: a pool sandbox gets them on claim.
