"""Builds the OCI runtime `config.json` of a sandbox (pure: no I/O)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workspace_server.domain.models import ResourceLimits
from workspace_server.runtimes import uid_ranges
from workspace_server.runtimes.base import SandboxSpec
from workspace_server.runtimes.user_namespace import MESSAGE_QUEUE_BYTES, PENDING_SIGNALS

# Every sandbox runs in its own user namespace, mapped onto a host uid range of its own
# (uid_ranges.py): root inside is the range's first uid, the sandbox user (uid 1000) that
# plus 1000; neither owns anything on the host.
SANDBOX_UID = 1000
AGENT_DIR = "/opt/workspace-agent"
AGENT_RUN_DIR = "/run/workspace"
AGENT_SOCKET_NAME = "agent.sock"
# The agent lives in the sandbox's memory cgroup, the sandbox's processes in a child of it
# limited to memory_mb (runtimes/runc.py): this much on top is the agent's own, so an OOM
# among the processes never reaches the agent.
AGENT_MEMORY_RESERVE_MB = 48

# The agent needs these to start commands as the sandbox user and to do file operations
# for it; commands run as that user hold none of them.
AGENT_CAPABILITIES = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_NET_BIND_SERVICE",
]

# Kernel interfaces that must never be reachable from a sandbox, as OCI runtimes mask them.
MASKED_PATHS = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

# Denied outright (EPERM) on top of the dropped capabilities: defence in depth against
# kernel attack surface that sandboxed code has no business touching.
DENIED_SYSCALLS = [
    "acct",
    "add_key",
    "bpf",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "init_module",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mount",
    "mount_setattr",
    "move_mount",
    "name_to_handle_at",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "quotactl",
    "reboot",
    "request_key",
    "setns",
    "swapoff",
    "swapon",
    "syslog",
    "umount2",
    "unshare",
    "userfaultfd",
    "vhangup",
]
NAMESPACE_CLONE_FLAGS = [
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
]
ENOSYS = 38
# Not needed in a sandbox, and bound by no per-user or per-sandbox quota: Linux AIO contexts
# come from one host-wide pool (fs.aio-max-nr), so one sandbox could take them all; io_uring
# is a large kernel attack surface (Docker's default profile denies it too). ENOSYS: "not
# supported here", so programs fall back (libaio users to threads, glibc's POSIX AIO never
# used these).
UNSUPPORTED_SYSCALLS = [
    "io_setup",
    "io_destroy",
    "io_submit",
    "io_cancel",
    "io_getevents",
    "io_pgetevents",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
]
# Pseudo-terminals per sandbox: its own devpts instance with `max=`. All non-initial
# instances share kernel.pty.max - kernel.pty.reserve (3072 by default), so one sandbox
# alone can never use them up.
PTY_MAX = 128


def seccomp_profile() -> dict[str, Any]:
    syscalls: list[dict[str, Any]] = [
        {"names": DENIED_SYSCALLS, "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
        # clone3 passes its flags in memory seccomp cannot read: make libc fall back to clone.
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
        {"names": UNSUPPORTED_SYSCALLS, "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
    ]
    for flag in NAMESPACE_CLONE_FLAGS:
        syscalls.append(
            {
                "names": ["clone"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": 1,
                "args": [{"index": 0, "value": flag, "valueTwo": flag, "op": "SCMP_CMP_MASKED_EQ"}],
            }
        )
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_AARCH64"],
        "syscalls": syscalls,
    }


CPU_PERIOD_US = 100_000


def sandbox_memory_bytes(limits: ResourceLimits) -> int:
    """The sandbox's memory cgroup: its processes' `memory_mb` plus the agent's reserve."""
    return (limits.memory_mb + AGENT_MEMORY_RESERVE_MB) * 1024 * 1024


def workload_memory_bytes(limits: ResourceLimits) -> int:
    """The memory cgroup of the sandbox's processes, below the sandbox's (runtimes/runc.py)."""
    return limits.memory_mb * 1024 * 1024


def cpu_shares(limits: ResourceLimits) -> int:
    return max(2, int(1024 * limits.cpu))


def cpu_quota(limits: ResourceLimits) -> int:
    return int(CPU_PERIOD_US * limits.cpu)


def bind(source: Path | str, destination: str, *, readonly: bool) -> dict[str, Any]:
    options = ["rbind", "nosuid", "nodev"] + (["ro"] if readonly else ["rw"])
    return {"destination": destination, "type": "bind", "source": str(source), "options": options}


def process_rlimits(nofile: int = 4096) -> list[tuple[str, int]]:
    """Every sandbox process's rlimits (soft = hard). Message-queue bytes and pending
    signals are per uid inside; user_namespace.py caps the sandbox's total the same way."""
    return [("NOFILE", nofile), ("MSGQUEUE", MESSAGE_QUEUE_BYTES), ("SIGPENDING", PENDING_SIGNALS)]


def build_config(
    spec: SandboxSpec,
    *,
    writable_dir: Path,
    run_dir: Path,
    agent_dir: Path,
    etc_dir: Path,
    cgroups_path: str,
    host_uid: int,
    rootfs: Path | str = "rootfs",
    python: str = "/usr/bin/python3",
    nofile: int = 4096,
    user_namespace: str | None = None,
) -> dict[str, Any]:
    """`user_namespace`: the path of a namespace to join (user_namespace.py), else runc makes one."""
    limits = spec.limits
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", f"max={PTY_MAX}"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        },
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        bind("/usr", "/usr", readonly=True),
        bind(etc_dir, "/etc", readonly=True),
    ]
    mounts += [
        bind(writable_dir / "workspace", "/workspace", readonly=False),
        bind(writable_dir / "home", "/home", readonly=False),
        bind(writable_dir / "root", "/root", readonly=False),
        bind(writable_dir / "tmp", "/tmp", readonly=False),
        bind(writable_dir / "var-tmp", "/var/tmp", readonly=False),
        bind(agent_dir, AGENT_DIR, readonly=True),
        bind(run_dir, AGENT_RUN_DIR, readonly=False),
    ]
    memory_bytes = sandbox_memory_bytes(limits)
    resources: dict[str, Any] = {
        "devices": [{"allow": False, "access": "rwm"}],
        "memory": {"limit": memory_bytes, "swap": memory_bytes},
        "pids": {"limit": limits.pids},
        "cpu": {"shares": cpu_shares(limits), "quota": cpu_quota(limits), "period": CPU_PERIOD_US},
    }
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            # stdin is the host's write handle on the workload cgroup (runtimes/runc.py).
            "args": [
                python,
                "-S",
                "-E",
                "-B",
                f"{AGENT_DIR}/agent.py",
                "--workload-cgroup-on-stdin",
                f"{AGENT_RUN_DIR}/{AGENT_SOCKET_NAME}",
            ],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8"],
            "cwd": "/",
            "capabilities": dict.fromkeys(("bounding", "effective", "permitted"), AGENT_CAPABILITIES),
            # Joining a namespace owned by the sandbox's uid, runc (host root) may not set the
            # init's rlimits (EPERM): it then inherits them from runc (process_rlimits()).
            **(
                {}
                if user_namespace
                else {"rlimits": [{"type": f"RLIMIT_{n}", "hard": v, "soft": v} for n, v in process_rlimits(nofile)]}
            ),
            "noNewPrivileges": True,
            "oomScoreAdj": 0,  # commands get COMMAND_OOM_SCORE_ADJ: the OOM killer picks them first
        },
        "root": {"path": str(rootfs), "readonly": True},
        "hostname": spec.sandbox_id[:63],
        "mounts": mounts,
        "linux": {
            "uidMappings": [{"containerID": 0, "hostID": host_uid, "size": uid_ranges.RANGE_SIZE}],
            "gidMappings": [{"containerID": 0, "hostID": host_uid, "size": uid_ranges.RANGE_SIZE}],
            "namespaces": [
                {"type": "user", "path": user_namespace} if user_namespace else {"type": "user"},
                *({"type": t} for t in ("pid", "network", "ipc", "uts", "mount", "cgroup")),
            ],
            "cgroupsPath": cgroups_path,
            "resources": resources,
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
            "seccomp": seccomp_profile(),
        },
    }
