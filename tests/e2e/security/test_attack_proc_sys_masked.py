"""Attacks through /proc, /sys and /dev: masked kernel files, read-only kernel knobs,
kernel log and symbol leaks, device nodes."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.security.attack_support import sh

USERS = ["user", "root"]
MASKED_FILES = [
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
]
MASKED_DIRS = ["/proc/acpi", "/proc/asound", "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap"]


@pytest.mark.parametrize("user", USERS)
def test_attack_read_masked_proc_files(api: httpx.Client, sandbox: dict[str, Any], user: str) -> None:
    """Each masked file is absent on this kernel or reads as empty (/dev/null over it)."""
    script = "; ".join(f"echo {path}=$(cat {path} 2>/dev/null | head -c 4096 | wc -c)" for path in MASKED_FILES)
    answer = sh(api, sandbox["id"], script, user=user)
    for path in MASKED_FILES:
        assert f"{path}=0" in answer["stdout"], answer


@pytest.mark.parametrize("user", USERS)
def test_attack_list_masked_kernel_dirs(api: httpx.Client, sandbox: dict[str, Any], user: str) -> None:
    script = "; ".join(f"echo {path}=$(ls -A {path} 2>/dev/null | wc -l)" for path in MASKED_DIRS)
    answer = sh(api, sandbox["id"], script + f"; touch {MASKED_DIRS[0]}/x 2>/dev/null && echo WROTE", user=user)
    for path in MASKED_DIRS:
        assert f"{path}=0" in answer["stdout"], answer
    assert "WROTE" not in answer["stdout"]


@pytest.mark.parametrize("user", USERS)
def test_attack_write_proc_sys_knobs(api: httpx.Client, sandbox: dict[str, Any], user: str) -> None:
    """/proc/sys (core_pattern is the classic container escape), /proc/sysrq-trigger and
    the other read-only /proc trees refuse every write."""
    knobs = [
        "/proc/sys/kernel/core_pattern",
        "/proc/sys/kernel/hostname",
        "/proc/sys/vm/drop_caches",
        "/proc/sys/kernel/modprobe",
        "/proc/sys/fs/file-max",
        "/proc/sys/net/ipv4/ip_forward",
        "/proc/sysrq-trigger",
        "/proc/irq/default_smp_affinity",
        "/proc/self/oom_score_adj",
    ]
    before = sh(api, sandbox["id"], "cat /proc/sys/kernel/core_pattern /proc/sys/kernel/modprobe")["stdout"]
    script = "; ".join(f"echo 1 > {knob} 2>/dev/null && echo WROTE {knob}" for knob in knobs[:-1])
    script += "; echo -1000 > /proc/self/oom_score_adj 2>/dev/null && echo WROTE oom_score_adj"
    script += "; grep -E ' /proc/(sys|bus|fs|irq) ' /proc/self/mounts | cut -d' ' -f2,4"
    answer = sh(api, sandbox["id"], script + "; true", user=user)
    assert "WROTE" not in answer["stdout"], answer
    for tree in ("/proc/sys", "/proc/bus", "/proc/fs", "/proc/irq"):
        assert f"{tree} ro," in answer["stdout"], answer
    after = sh(api, sandbox["id"], "cat /proc/sys/kernel/core_pattern /proc/sys/kernel/modprobe")["stdout"]
    assert after == before
    with open("/proc/sys/kernel/core_pattern") as host:
        assert host.read() != "1\n"


@pytest.mark.parametrize("user", USERS)
def test_attack_write_sys_and_cgroups(api: httpx.Client, sandbox: dict[str, Any], user: str) -> None:
    """/sys is read-only and no cgroup file system is reachable: limits cannot be lifted."""
    answer = sh(
        api,
        sandbox["id"],
        """
        echo 1 > /sys/kernel/mm/ksm/run 2>/dev/null && echo WROTE ksm
        echo 1 > /sys/kernel/uevent_helper 2>/dev/null && echo WROTE uevent
        ls -A /sys/fs/cgroup | wc -l
        grep -c cgroup /proc/self/mounts
        cat /proc/self/cgroup | grep -v ':/$'
        true
    """,
        user=user,
    )
    assert "WROTE" not in answer["stdout"], answer
    # The cgroup namespace shows the sandbox its own cgroup as "/" (commands sit in its
    # memory child "workload", below the agent); no cgroupfs is mounted.
    lines = answer["stdout"].split()
    assert lines[:2] == ["0", "0"], answer
    assert [line.split(":", 1)[1] for line in lines[2:]] == ["memory:/workload"], answer


@pytest.mark.parametrize("user", USERS)
def test_attack_read_kernel_log_and_symbols(api: httpx.Client, sandbox: dict[str, Any], user: str) -> None:
    answer = sh(
        api,
        sandbox["id"],
        """
        dmesg >/dev/null 2>&1 && echo READ dmesg
        timeout 2 cat /proc/kmsg >/dev/null 2>&1 && echo READ kmsg
        head -20 /proc/kallsyms | cut -d' ' -f1 | sort -u
        true
    """,
        user=user,
    )
    assert "READ" not in answer["stdout"], answer
    assert answer["stdout"].split() == ["0000000000000000"], answer


@pytest.mark.parametrize("user", USERS)
def test_attack_open_host_devices(api: httpx.Client, sandbox: dict[str, Any], user: str) -> None:
    """/dev holds only the harmless character devices; disks, memory and ports are absent
    and cannot be created (no CAP_MKNOD, /dev is nodev where it matters)."""
    answer = sh(
        api,
        sandbox["id"],
        """
        ls /dev
        for d in /dev/vda /dev/sda /dev/mem /dev/kmem /dev/port /dev/kvm /dev/fuse /dev/net/tun; do
            [ -e $d ] && echo PRESENT $d
        done
        mknod /tmp/vda b 254 0 2>/dev/null && echo MADE block
        mknod /dev/shm/mem c 1 1 2>/dev/null && echo MADE mem
        true
    """,
        user=user,
    )
    assert "PRESENT" not in answer["stdout"] and "MADE" not in answer["stdout"], answer
    listed = set(answer["stdout"].split())
    assert listed <= {
        "fd",
        "full",
        "mqueue",
        "null",
        "ptmx",
        "pts",
        "random",
        "shm",
        "stderr",
        "stdin",
        "stdout",
        "tty",
        "urandom",
        "zero",
        "console",
    }, listed
