"""Changing a claimed pool sandbox's limits: which cgroup files, which values, in which order."""

from __future__ import annotations

from pathlib import Path

import pytest

from workspace_server.domain.errors import RuntimeFailure
from workspace_server.domain.models import ResourceLimits, Template
from workspace_server.runtimes import cgroups, oci_config
from workspace_server.runtimes.base import SandboxSpec

MIB = 1024 * 1024
MEMORY, WORKLOAD, CPU, PIDS = Path("/m"), Path("/m/workload"), Path("/c"), Path("/p")


def plan(current: ResourceLimits, wanted: ResourceLimits, has_memsw: bool = True) -> list[tuple[str, str]]:
    writes = cgroups.limit_writes(MEMORY, WORKLOAD, CPU, PIDS, current, wanted, has_memsw)
    return [(str(path), value) for path, value in writes]


def test_growing_memory_raises_memory_plus_swap_first() -> None:
    writes = plan(ResourceLimits(memory_mb=512), ResourceLimits(memory_mb=2048, cpu=2.0, pids=1024))
    assert writes == [
        ("/m/memory.memsw.limit_in_bytes", str((2048 + 48) * MIB)),
        ("/m/memory.limit_in_bytes", str((2048 + 48) * MIB)),
        ("/m/workload/memory.memsw.limit_in_bytes", str(2048 * MIB)),
        ("/m/workload/memory.limit_in_bytes", str(2048 * MIB)),
        ("/c/cpu.cfs_quota_us", "200000"),
        ("/c/cpu.shares", "2048"),
        ("/p/pids.max", "1024"),
    ]


def test_shrinking_memory_lowers_memory_plus_swap_last() -> None:
    writes = plan(ResourceLimits(memory_mb=512), ResourceLimits(memory_mb=64, cpu=0.5, pids=16))
    names = [path for path, _ in writes]
    assert names[:4] == [
        "/m/memory.limit_in_bytes",
        "/m/memory.memsw.limit_in_bytes",
        "/m/workload/memory.limit_in_bytes",
        "/m/workload/memory.memsw.limit_in_bytes",
    ]
    assert ("/c/cpu.cfs_quota_us", "50000") in writes
    assert ("/c/cpu.shares", "512") in writes


def test_a_new_cgroup_gets_its_memory_limit_before_memory_plus_swap() -> None:
    writes = cgroups.memory_writes(WORKLOAD, cgroups.NO_LIMIT, 64 * MIB, has_memsw=True)
    assert [(str(path), value) for path, value in writes] == [
        ("/m/workload/memory.limit_in_bytes", str(64 * MIB)),
        ("/m/workload/memory.memsw.limit_in_bytes", str(64 * MIB)),
    ]


def test_without_swap_accounting_only_the_memory_limits_are_written() -> None:
    writes = plan(ResourceLimits(), ResourceLimits(memory_mb=256), has_memsw=False)
    assert not any("memsw" in path for path, _ in writes)
    assert ("/m/workload/memory.limit_in_bytes", str(256 * MIB)) in writes


def test_the_values_are_those_a_new_sandbox_gets_from_runc() -> None:
    wanted = ResourceLimits(cpu=1.5, memory_mb=300, pids=77)
    spec = SandboxSpec("sbx-x", Template("t", ""), wanted, False)
    resources = oci_config.build_config(
        spec,
        writable_dir=Path("/w"),
        run_dir=Path("/r"),
        agent_dir=Path("/a"),
        etc_dir=Path("/e"),
        cgroups_path="/x",
        host_uid=100000,
    )["linux"]["resources"]
    writes = dict(plan(ResourceLimits(), wanted))
    assert writes["/m/memory.limit_in_bytes"] == str(resources["memory"]["limit"])
    assert writes["/m/memory.memsw.limit_in_bytes"] == str(resources["memory"]["swap"])
    assert writes["/c/cpu.cfs_quota_us"] == str(resources["cpu"]["quota"])
    assert writes["/c/cpu.shares"] == str(resources["cpu"]["shares"])
    assert writes["/p/pids.max"] == str(resources["pids"]["limit"])


def test_a_failed_write_is_a_runtime_failure_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(RuntimeFailure, match=r"pids\.max"):
        cgroups.write_all([(tmp_path / "missing" / "pids.max", "8")])
