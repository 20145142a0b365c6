"""What the kernel says about a process or a cgroup: RSS, peak RSS, CPU time, memory
cgroup usage (cgroup v1 and v2)."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

CGROUP_ROOT = Path("/sys/fs/cgroup")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def status_kib(pid: int, field: str) -> int:
    """A `kB` field of /proc/PID/status (VmRSS, VmHWM...)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(f"{field} not in /proc/{pid}/status")


def rss_bytes(pid: int) -> int:
    return status_kib(pid, "VmRSS") * 1024


def hwm_bytes(pid: int) -> int:
    return status_kib(pid, "VmHWM") * 1024


def reset_hwm(pid: int) -> bool:
    """Reset the peak-RSS mark (VmHWM) to the current RSS; needs root. False if refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


@dataclass(frozen=True)
class CpuTimes:
    """Seconds of CPU: the process's own threads, and its reaped children."""

    own: float
    children: float

    def __sub__(self, other: CpuTimes) -> CpuTimes:
        return CpuTimes(self.own - other.own, self.children - other.children)


def cpu_times(pid: int, tid: int | None = None) -> CpuTimes:
    """A process's CPU times, or one of its threads' (`tid`; children are then zero)."""
    raw = Path(f"/proc/{pid}/task/{tid}/stat" if tid is not None else f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "
    utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))
    return CpuTimes((utime + stime) / CLOCK_TICKS, (cutime + cstime) / CLOCK_TICKS)


class RssSampler:
    """Peak RSS growth of a process over a `with` block: `peak_growth` is the highest RSS
    minus the RSS at the start.

    The kernel keeps the peak itself (VmHWM), so once it is reset (root) nothing needs to
    be sampled. Otherwise a thread samples RSS every `interval`. That thread costs the
    measuring process its GIL every 2 ms, which slowed the client being measured (a 1 MiB
    JSON decode holds the GIL for ~2 ms)."""

    def __init__(self, pid: int, interval: float = 0.002) -> None:
        self.pid = pid
        self.interval = interval
        self.start_rss = 0
        self.peak_rss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        sampling = not reset_hwm(self.pid)
        self.start_rss = rss_bytes(self.pid)
        self.peak_rss = self.start_rss
        if sampling:
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak_rss = max(self.peak_rss, rss_bytes(self.pid))
            except (OSError, KeyError):
                return
            time.sleep(self.interval)

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        try:
            self.peak_rss = max(self.peak_rss, hwm_bytes(self.pid), rss_bytes(self.pid))
        except (OSError, KeyError):
            pass

    @property
    def peak_growth(self) -> int:
        return max(0, self.peak_rss - self.start_rss)


# --------------------------------------------------------------------------- cgroups


def cgroup_of(pid: int, controller: str = "memory") -> str:
    """The process's cgroup path in `controller`'s v1 hierarchy, or its unified (v2) path."""
    unified = "/"
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return path
        if controllers == "":
            unified = path
    return unified


def memory_cgroup_dir(path: str) -> Path:
    """The directory of a memory cgroup path: v1 under memory/, else unified."""
    v1 = CGROUP_ROOT / "memory" / path.lstrip("/")
    if (CGROUP_ROOT / "memory").is_dir():
        return v1
    return CGROUP_ROOT / path.lstrip("/")


@dataclass(frozen=True)
class CgroupMemory:
    usage: int  # what the memory limit is charged with
    anon: int  # process memory (rss / anon)
    file: int  # page cache, including tmpfs (shmem)
    shmem: int


def cgroup_memory(directory: Path) -> CgroupMemory:
    stat: dict[str, int] = {}
    for line in (directory / "memory.stat").read_text().splitlines():
        key, _, value = line.partition(" ")
        if value.isdigit():
            stat[key] = int(value)
    if (directory / "memory.usage_in_bytes").exists():  # v1
        usage = int((directory / "memory.usage_in_bytes").read_text())
        return CgroupMemory(
            usage,
            stat.get("total_rss", stat.get("rss", 0)),
            stat.get("total_cache", stat.get("cache", 0)),
            stat.get("total_shmem", stat.get("shmem", 0)),
        )
    usage = int((directory / "memory.current").read_text())
    return CgroupMemory(usage, stat.get("anon", 0), stat.get("file", 0), stat.get("shmem", 0))
