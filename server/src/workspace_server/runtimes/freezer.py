"""Pausing a sandbox with the cgroup v1 freezer, the agent left out.

runc's own `pause` freezes the container's whole cgroup, agent included; a paused sandbox
must still serve file operations and the process list. So the freezing happens in a
`workload` child of the sandbox's freezer cgroup: it is set FROZEN first, then every
process of the sandbox but the agent (its init) is moved into it, and each one freezes on
arrival. A process forked meanwhile lands in the parent and is moved on the next pass;
frozen processes fork no more, so the passes end. Starting commands is held off by the
caller while this runs.

A frozen process cannot die, not even of SIGKILL (it sleeps in the refrigerator until
thawed): whatever kills a sandbox's processes thaws them first.
"""

from __future__ import annotations

import os
from pathlib import Path

from workspace_server.domain.errors import RuntimeFailure
from workspace_server.runtimes.base import WorkloadSample

CONTROLLER = "freezer"  # sandboxes' freezer cgroups: runtimes/cgroups.py SandboxCgroups.directory
FREEZER_ROOT = Path("/sys/fs/cgroup") / CONTROLLER
WORKLOAD = "workload"
MOVE_PASSES = 1000
SETTLE_SECONDS = 2.0  # a process in uninterruptible sleep freezes once it wakes


def available() -> bool:
    return FREEZER_ROOT.is_dir()


def procs(cgroup: Path) -> list[int]:
    try:
        return [int(line) for line in (cgroup / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def _state(workload: Path) -> str:
    try:
        return (workload / "freezer.state").read_text().strip()
    except OSError:
        return "THAWED"


def freeze(sandbox: Path, agent_pid: int) -> bool:
    """Freeze every process in `sandbox` (a freezer cgroup) and below it, but `agent_pid`.
    A few writes to cgroupfs, no waiting: True if every process is frozen already, False
    if some are still on their way (`settled` says when)."""
    if not sandbox.is_dir():
        raise RuntimeFailure(f"the sandbox has no freezer cgroup ({sandbox}): it is not running")
    workload = sandbox / WORKLOAD
    workload.mkdir(exist_ok=True)
    try:
        (workload / "freezer.state").write_text("FROZEN")
        for _ in range(MOVE_PASSES):
            strays = [pid for pid in procs(sandbox) if pid != agent_pid]
            if not strays:
                break
            for pid in strays:
                try:
                    (workload / "cgroup.procs").write_text(str(pid))
                except ProcessLookupError:
                    pass  # exited meanwhile
        else:
            raise RuntimeFailure("the sandbox's processes kept forking faster than they could be frozen")
    except OSError as exc:
        thaw(sandbox)
        raise RuntimeFailure(f"could not freeze the sandbox: {exc.strerror or exc}") from None
    return settled(sandbox)


def settled(sandbox: Path) -> bool:
    """True once every process of the frozen workload is frozen (FREEZING: not yet)."""
    return _state(sandbox / WORKLOAD) == "FROZEN"


def thaw(sandbox: Path) -> None:
    workload = sandbox / WORKLOAD
    if not workload.is_dir():
        return
    try:
        (workload / "freezer.state").write_text("THAWED")
    except OSError as exc:
        raise RuntimeFailure(f"could not thaw the sandbox: {exc.strerror or exc}") from None


def is_frozen(sandbox: Path) -> bool:
    return _state(sandbox / WORKLOAD) in ("FROZEN", "FREEZING")


def workload_sample(sandbox: Path, agent_pid: int) -> WorkloadSample | None:
    """Pids and CPU ticks (utime + stime + cutime + cstime) of the sandbox's processes."""
    pids = frozenset(pid for pid in procs(sandbox) + procs(sandbox / WORKLOAD) if pid != agent_pid)
    if not sandbox.is_dir():
        return None
    ticks = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
            ticks += sum(int(value) for value in fields[11:15])  # fields 14-17 of proc(5)
        except (OSError, ValueError, IndexError):
            continue
    return WorkloadSample(pids, ticks)


def clock_ticks_per_second() -> int:
    return os.sysconf("SC_CLK_TCK")
