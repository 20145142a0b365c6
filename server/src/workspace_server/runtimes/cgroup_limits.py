"""Changing the cpu, memory and pids limits of a running sandbox (cgroup v1).

A warm pool sandbox is started with the default limits; a create that asks for others can
still be served from the pool once its cgroups carry the new ones. runc applied the first
limits, and `runc update` could change them, but that is a Go program's start (~15 ms) per
claim against microseconds for the files the kernel enforces. runc's own record of the
limits goes stale; nothing reads it back (we never call `runc update`).
"""

from __future__ import annotations

from pathlib import Path

from workspace_server.domain.errors import RuntimeFailure
from workspace_server.domain.models import ResourceLimits
from workspace_server.runtimes import oci_config

MEMORY_LIMIT = "memory.limit_in_bytes"
MEMSW_LIMIT = "memory.memsw.limit_in_bytes"  # memory plus swap; absent without swap accounting
NO_LIMIT = 2**63 - 1  # what a new cgroup starts with


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
