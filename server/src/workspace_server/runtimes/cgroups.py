"""Sandbox cgroups, all in one place: where they go, the workload's memory cgroup, changing
a running sandbox's limits, OOM kill counts, and removing them.

Where: this host may already run us inside a memory cgroup (cgroup v1); sandboxes are
created below it so that their memory stays accounted to us and within our own limit.
runc creates a sandbox's cgroups from its config (`cgroups_path`) and applies the first
limits; the rest is done here, through the files the kernel enforces.

Changing limits (cgroup v1): a warm pool sandbox is started with the default limits; a
create that asks for others can still be served from the pool once its cgroups carry the
new ones. `runc update` could change them, but that is a Go program's start (~15 ms) per
claim against microseconds for the files. runc's own record of the limits goes stale;
nothing reads it back (we never call `runc update`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from pathlib import Path

from workspace_server.domain.errors import RuntimeFailure
from workspace_server.domain.models import ResourceLimits
from workspace_server.runtimes import oci_config

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
MEMORY_CGROUP_ROOT = CGROUP_ROOT / "memory"
WORKLOAD_CGROUP = "workload"
CGROUP_DRAIN_SECONDS = 10.0
MEMORY_LIMIT = "memory.limit_in_bytes"
MEMSW_LIMIT = "memory.memsw.limit_in_bytes"  # memory plus swap; absent without swap accounting
NO_LIMIT = 2**63 - 1  # what a new cgroup starts with


def current_cgroup(controller: str = "memory", proc_cgroup: Path = Path("/proc/self/cgroup")) -> str:
    """Our cgroup path in `controller`'s hierarchy (v1), or the unified path (v2)."""
    unified = "/"
    for line in proc_cgroup.read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return path
        if controllers == "":
            unified = path
    return unified


def sandbox_cgroup_parent() -> str:
    base = current_cgroup("memory").rstrip("/")
    return f"{base}/workspace"


# ------------------------------------------------------------------ limit writes (pure)
def memory_writes(directory: Path, current: int, wanted: int, has_memsw: bool) -> list[tuple[Path, str]]:
    """The kernel keeps memory + swap >= memory at every step: it grows first and shrinks last."""
    limit = (directory / MEMORY_LIMIT, str(wanted))
    if not has_memsw:
        return [limit]
    memsw = (directory / MEMSW_LIMIT, str(wanted))
    return [memsw, limit] if wanted > current else [limit, memsw]


def limit_writes(
    memory_dir: Path,
    workload_dir: Path,
    cpu_dir: Path,
    pids_dir: Path,
    current: ResourceLimits,
    wanted: ResourceLimits,
    has_memsw: bool,
) -> list[tuple[Path, str]]:
    """Every cgroup file to write, in order, to move a sandbox from `current` to `wanted`
    (pure). The values are those `oci_config.build_config` gives runc for a new sandbox."""
    return [
        *memory_writes(
            memory_dir, oci_config.sandbox_memory_bytes(current), oci_config.sandbox_memory_bytes(wanted), has_memsw
        ),
        *memory_writes(
            workload_dir, oci_config.workload_memory_bytes(current), oci_config.workload_memory_bytes(wanted), has_memsw
        ),
        (cpu_dir / "cpu.cfs_quota_us", str(oci_config.cpu_quota(wanted))),
        (cpu_dir / "cpu.shares", str(oci_config.cpu_shares(wanted))),
        (pids_dir / "pids.max", str(wanted.pids)),
    ]


def write_all(writes: list[tuple[Path, str]]) -> None:
    for path, value in writes:
        try:
            path.write_text(value)
        except OSError as exc:
            raise RuntimeFailure(f"could not set {path.name} to {value}: {exc.strerror or exc}") from None


def _cgroup_pids(path: Path) -> list[int]:
    try:
        return [int(line) for line in (path / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


class SandboxCgroups:
    """The cgroups of the sandboxes below one parent (`cgroups_path` = parent/<id>)."""

    def __init__(self, parent: str | None = None, root: Path = CGROUP_ROOT) -> None:
        self.parent = parent if parent is not None else sandbox_cgroup_parent()
        self.root = root

    def path(self, sandbox_id: str) -> str:
        """The sandbox's cgroups path, as runc's config takes it."""
        return f"{self.parent}/{sandbox_id}"

    def directory(self, controller: str, sandbox_id: str) -> Path:
        return self.root / controller / self.parent.lstrip("/") / sandbox_id

    @property
    def adjustable_limits(self) -> bool:
        """cgroup v1 only: on v2 a create with other limits starts cold."""
        return (self.root / "memory").is_dir()

    async def apply_limits(self, sandbox_id: str, current: ResourceLimits, wanted: ResourceLimits) -> None:
        if not self.adjustable_limits:
            raise RuntimeFailure("this host's cgroups cannot change a running sandbox's limits")
        memory = self.directory("memory", sandbox_id)
        writes = limit_writes(
            memory,
            memory / WORKLOAD_CGROUP,
            self.directory("cpu", sandbox_id),
            self.directory("pids", sandbox_id),
            current,
            wanted,
            has_memsw=(memory / MEMSW_LIMIT).exists(),
        )
        await asyncio.to_thread(write_all, writes)  # lowering memory may reclaim

    def make_workload(self, sandbox_id: str, limits: ResourceLimits) -> int:
        """The sandbox's processes get a memory cgroup of their own, below the sandbox's,
        limited to memory_mb; the agent stays in the sandbox's, which has a reserve on top.
        So a memory hog, however it spreads itself or lowers its OOM score, is OOM-killed
        within its own cgroup and never takes the agent with it.

        Returns a write handle on the workload's cgroup.procs, handed to the agent as its
        stdin: the kernel checks a write there against the credentials of whoever *opened*
        it (host root), so the agent can move the processes it starts into the workload and
        needs no view of the host's cgroupfs. It only ever moves processes *into* it."""
        if not self.adjustable_limits:  # not cgroup v1: everything shares the sandbox's limit
            return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        workload = self.directory("memory", sandbox_id) / WORKLOAD_CGROUP
        workload.mkdir(parents=True, exist_ok=True)
        # No swap either: the same limit on memory plus swap, where the kernel accounts it.
        wanted = oci_config.workload_memory_bytes(limits)
        write_all(memory_writes(workload, NO_LIMIT, wanted, has_memsw=(workload / MEMSW_LIMIT).exists()))
        return os.open(workload / "cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)

    def oom_kills(self, sandbox_id: str) -> int:
        """OOM kills in the sandbox: the agent's cgroup plus the workload's (cgroup v1
        counts each cgroup's own kills only)."""
        total = 0
        sandbox = self.directory("memory", sandbox_id)
        for control in (sandbox / "memory.oom_control", sandbox / WORKLOAD_CGROUP / "memory.oom_control"):
            try:
                for line in control.read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        total += int(value)
            except (OSError, ValueError):
                pass
        return total

    def directories(self, sandbox_id: str) -> list[Path]:
        """The sandbox's cgroups in every hierarchy, children (the workload) before parents."""
        found = []
        for controller in sorted(p.name for p in self.root.iterdir()) if self.root.is_dir() else []:
            path = self.directory(controller, sandbox_id)
            if path.is_dir():
                found += [Path(d) for d, _, _ in os.walk(path, topdown=False)]
        return found

    async def remove(self, sandbox_id: str) -> bool:
        """`runc delete --force` is satisfied once init is a zombie; processes busy at their
        CPU quota can take a while to die after that. Kill what is left, wait until the
        cgroups are empty, and only then remove them. False if some would not die."""
        deadline = asyncio.get_running_loop().time() + CGROUP_DRAIN_SECONDS
        while True:
            remaining = self.directories(sandbox_id)
            for path in remaining:
                for pid in _cgroup_pids(path):
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(OSError):
                    path.rmdir()
            remaining = [p for p in remaining if p.is_dir()]
            if not remaining:
                return True
            if asyncio.get_running_loop().time() > deadline:
                log.warning("could not remove cgroups %s: processes would not die", remaining)
                return False
            await asyncio.sleep(0.02)
