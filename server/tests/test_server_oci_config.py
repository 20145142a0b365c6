from __future__ import annotations

from pathlib import Path
from typing import Any

from workspace_server.domain.models import ResourceLimits, Template
from workspace_server.runtimes import oci_config
from workspace_server.runtimes.base import SandboxSpec

DEFAULT_LIMITS = ResourceLimits()
HOST_UID = 100000 + 3 * 65536


def build(limits: ResourceLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    spec = SandboxSpec("sbx-1", Template("default", ""), limits, False)
    return oci_config.build_config(
        spec,
        writable_dir=Path("/d/rw"),
        run_dir=Path("/d/run"),
        agent_dir=Path("/a"),
        etc_dir=Path("/e"),
        cgroups_path="/cg/sbx-1",
        host_uid=HOST_UID,
    )


def test_every_namespace_is_private() -> None:
    kinds = {n["type"] for n in build()["linux"]["namespaces"]}
    assert kinds == {"pid", "network", "ipc", "uts", "mount", "user", "cgroup"}
    assert all("path" not in n for n in build()["linux"]["namespaces"])


def test_root_inside_is_an_unprivileged_host_uid() -> None:
    mapping = build()["linux"]["uidMappings"]
    assert mapping == [{"containerID": 0, "hostID": HOST_UID, "size": 65536}]
    assert build()["linux"]["gidMappings"] == mapping


def test_limits_become_cgroup_resources() -> None:
    resources = build(ResourceLimits(cpu=0.5, memory_mb=128, pids=64, disk_mb=10))["linux"]["resources"]
    # The agent has its own allowance on top; commands get exactly memory_mb (runtimes/runc.py).
    assert resources["memory"]["limit"] == (128 + oci_config.AGENT_MEMORY_RESERVE_MB) * 1024 * 1024
    assert resources["pids"]["limit"] == 64
    assert resources["cpu"]["quota"] == 50_000 and resources["cpu"]["period"] == 100_000


def test_host_dirs_are_read_only_and_private_dirs_writable() -> None:
    mounts = {m["destination"]: m for m in build()["mounts"]}
    assert mounts["/etc"]["source"] == "/e"
    for host_dir in ("/usr", "/etc", "/opt/workspace-agent"):
        assert "ro" in mounts[host_dir]["options"], host_dir
    for private in ("/workspace", "/tmp", "/home", "/root"):
        assert "rw" in mounts[private]["options"]
        assert mounts[private]["source"].startswith("/d/rw/")


def test_privileges_are_dropped() -> None:
    config = build()
    process = config["process"]
    assert process["noNewPrivileges"] is True
    assert "CAP_SYS_ADMIN" not in process["capabilities"]["bounding"]
    assert config["root"]["readonly"] is True
    assert "/proc/kcore" in config["linux"]["maskedPaths"]
    denied = config["linux"]["seccomp"]["syscalls"][0]["names"]
    assert {"mount", "unshare", "setns", "bpf", "keyctl"} <= set(denied)
