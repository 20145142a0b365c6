"""Where sandbox cgroups go.

This host may already run us inside a memory cgroup (cgroup v1); sandboxes must be
created below it so that their memory stays accounted to us and within our own limit.
"""

from __future__ import annotations

from pathlib import Path


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
