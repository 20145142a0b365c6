"""Attacks through kernel interfaces: mount, ptrace, namespaces, keyrings, modules, bpf...

Every syscall on the seccomp deny-list must fail with EPERM for the sandbox user and for
sandbox root (clone3 with ENOSYS, so libc falls back to clone, whose namespace flags the
filter can read). The classic tools (`mount`, `unshare`, `strace`) fail the same way.
"""

from __future__ import annotations

import json
import platform
from typing import Any

import httpx
import pytest

from tests.e2e.security.attack_support import output, py, sh

USERS = ["user", "root"]

# x86_64 numbers of every syscall the seccomp profile denies (oci_config.DENIED_SYSCALLS).
DENIED_X86_64 = {
    "acct": 163,
    "add_key": 248,
    "bpf": 321,
    "delete_module": 176,
    "finit_module": 313,
    "fsconfig": 431,
    "fsmount": 432,
    "fsopen": 430,
    "fspick": 433,
    "init_module": 175,
    "kexec_file_load": 320,
    "kexec_load": 246,
    "keyctl": 250,
    "lookup_dcookie": 212,
    "mount": 165,
    "mount_setattr": 442,
    "move_mount": 429,
    "name_to_handle_at": 303,
    "open_by_handle_at": 304,
    "open_tree": 428,
    "perf_event_open": 298,
    "pivot_root": 155,
    "quotactl": 179,
    "reboot": 169,
    "request_key": 249,
    "setns": 308,
    "swapoff": 168,
    "swapon": 167,
    "syslog": 103,
    "umount2": 166,
    "unshare": 272,
    "userfaultfd": 323,
    "vhangup": 153,
}

SYSCALLS = """
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
results = {}
for name, number in json.loads(sys.argv[1]).items():
    ctypes.set_errno(0)
    ret = libc.syscall(ctypes.c_long(number), ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0),
                       ctypes.c_long(0), ctypes.c_long(0), ctypes.c_long(0))
    if ret == 0 and name in ("clone", "clone3"):
        os._exit(0)
    results[name] = [ret, ctypes.get_errno()]
print(json.dumps(results))
"""

needs_x86_64 = pytest.mark.skipif(platform.machine() != "x86_64", reason="syscall numbers are x86_64's")


def _syscalls(api: httpx.Client, sandbox_id: str, table: dict[str, int], user: str) -> dict[str, list[int]]:
    response = api.post(
        f"/sandboxes/{sandbox_id}/processes/run",
        json={"command": "python3", "args": ["-c", SYSCALLS, json.dumps(table)], "user": user, "timeout": 30},
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["exit_code"] == 0, result
    decoded: dict[str, list[int]] = json.loads(result["stdout"])
    return decoded


@needs_x86_64
@pytest.mark.parametrize("user", USERS)
def test_attack_denied_syscalls_fail_with_eperm(api: httpx.Client, sandbox: dict[str, Any], user: str) -> None:
    results = _syscalls(api, sandbox["id"], DENIED_X86_64, user)
    assert results == {name: [-1, 1] for name in DENIED_X86_64}


@needs_x86_64
@pytest.mark.parametrize("user", USERS)
def test_attack_clone_into_new_namespaces(api: httpx.Client, sandbox: dict[str, Any], user: str) -> None:
    """clone() with any CLONE_NEW* flag is denied; clone3 answers ENOSYS (its flags are out
    of seccomp's reach, so it is refused outright and libc falls back to clone)."""
    sigchld = 17
    flags = {
        "newns": 0x00020000,
        "newcgroup": 0x02000000,
        "newuts": 0x04000000,
        "newipc": 0x08000000,
        "newuser": 0x10000000,
        "newpid": 0x20000000,
        "newnet": 0x40000000,
    }
    code = SYSCALLS.replace(
        "ctypes.c_long(number), ctypes.c_long(0)",
        "ctypes.c_long(56 if name != 'clone3' else 435), ctypes.c_long(number)",
    )
    table = {name: flag | sigchld for name, flag in flags.items()}
    response = api.post(
        f"/sandboxes/{sandbox['id']}/processes/run",
        json={
            "command": "python3",
            "args": ["-c", code, json.dumps({**table, "clone3": 0})],
            "user": user,
            "timeout": 30,
        },
    )
    results = json.loads(response.json()["stdout"])
    assert results == {**{name: [-1, 1] for name in flags}, "clone3": [-1, 38]}, results


@pytest.mark.parametrize("user", USERS)
def test_attack_mount_filesystems(api: httpx.Client, sandbox: dict[str, Any], user: str) -> None:
    answer = sh(
        api,
        sandbox["id"],
        """
        mount -t tmpfs none /tmp 2>&1 || echo FAILED-tmpfs
        mount -t proc proc /workspace 2>&1 || echo FAILED-proc
        mount --bind /workspace /usr 2>&1 || echo FAILED-bind
        mount -o remount,rw /etc 2>&1 || echo FAILED-remount
        mount -t cgroup -o memory none /workspace 2>&1 || echo FAILED-cgroup
        umount /etc/passwd 2>&1 || echo FAILED-umount
        umount -l /proc/keys 2>&1 || echo FAILED-umount-mask
        cat /proc/keys | wc -c
    """,
        user=user,
    )
    for step in ("tmpfs", "proc", "bind", "remount", "cgroup", "umount", "umount-mask"):
        assert f"FAILED-{step}" in answer["stdout"], answer
    assert answer["stdout"].strip().endswith("0"), answer
    names = sh(api, sandbox["id"], "cut -d: -f1 /etc/passwd")["stdout"].split()
    assert names == ["root", "user", "nobody"]


@pytest.mark.parametrize("tool", ["ctypes", "strace"])
def test_attack_ptrace_pid_1_as_user(api: httpx.Client, sandbox: dict[str, Any], tool: str) -> None:
    """The sandbox user cannot trace or read the agent (PID 1, sandbox root)."""
    if tool == "ctypes":
        answer = py(
            api,
            sandbox["id"],
            """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
for request, name in ((16, "ATTACH"), (0x4206, "SEIZE")):
    ret = libc.ptrace(request, 1, 0, 0)
    print(name, ret, ctypes.get_errno())
for path in ("/proc/1/mem", "/proc/1/environ", "/proc/1/root/", "/proc/1/fd/0"):
    try:
        os.listdir(path) if path.endswith("/") else open(path, "rb").read(1)
        print("READ", path)
    except OSError as exc:
        print("denied", path, exc.errno)
""",
        )
        assert "ATTACH -1 1" in answer["stdout"] and "SEIZE -1 1" in answer["stdout"], answer
        assert "READ" not in answer["stdout"], answer
        assert answer["stdout"].count("denied") == 4, answer
    else:
        answer = sh(
            api,
            sandbox["id"],
            "command -v strace >/dev/null || { echo NO-STRACE; exit 0; }; "
            "timeout 5 strace -p 1 -e trace=none 2>&1; echo rc=$?",
        )
        if "NO-STRACE" in answer["stdout"]:
            pytest.skip("strace is not installed on this host")
        assert "Operation not permitted" in answer["stdout"], answer
        assert "attached" not in answer["stdout"].replace("attach: ptrace", ""), answer


@pytest.mark.parametrize("user", USERS)
def test_attack_unshare_namespaces(api: httpx.Client, sandbox: dict[str, Any], user: str) -> None:
    answer = sh(
        api,
        sandbox["id"],
        """
        for flags in -r -m -U -n -p\\ -f -i -u -C "-r -m"; do
            unshare $flags true 2>/dev/null && echo "UNSHARED $flags" || echo "refused $flags"
        done
    """,
        user=user,
    )
    assert "UNSHARED" not in answer["stdout"], answer
    assert answer["stdout"].count("refused") == 9, answer


@pytest.mark.parametrize("user", USERS)
def test_attack_setns_into_namespaces(api: httpx.Client, sandbox: dict[str, Any], user: str) -> None:
    answer = py(
        api,
        sandbox["id"],
        """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
for ns in sorted(os.listdir("/proc/self/ns")):
    try:
        fd = os.open("/proc/self/ns/" + ns, os.O_RDONLY)
    except OSError as exc:
        print("open-denied", ns, exc.errno)
        continue
    ret = libc.setns(fd, 0)
    print("setns", ns, ret, ctypes.get_errno())
""",
        user=user,
    )
    lines = [line.split() for line in answer["stdout"].splitlines()]
    assert len(lines) >= 7, answer
    for line in lines:
        assert line[0] == "open-denied" or line[2:] == ["-1", "1"], answer


@pytest.mark.parametrize("user", USERS)
def test_attack_keyctl_and_kernel_keyrings(api: httpx.Client, sandbox: dict[str, Any], user: str) -> None:
    answer = sh(
        api,
        sandbox["id"],
        """
        command -v keyctl >/dev/null && { keyctl show @s 2>&1; keyctl add user k v @u 2>&1; }
        python3 -c '
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
ret = libc.syscall(250, 0, -3, 0)  # keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING)
print("keyctl", ret, ctypes.get_errno())
ret = libc.syscall(248, b"user", b"k", b"v", 1, -4)  # add_key into the user keyring
print("add_key", ret, ctypes.get_errno())
'
        wc -c < /proc/keys
    """,
        user=user,
    )
    assert "keyctl -1 1" in answer["stdout"] and "add_key -1 1" in answer["stdout"], answer
    assert answer["stdout"].strip().endswith("0"), answer


def test_attack_privileged_operations_as_sandbox_root(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    """Sandbox root holds only the agent's capabilities: no raw sockets, device nodes,
    chroot, hostname, clock, module or admin operations."""
    answer = py(
        api,
        sandbox["id"],
        """
import ctypes, os, resource, socket, time
libc = ctypes.CDLL(None, use_errno=True)
def attempt(name, fn):
    try:
        fn()
        print("ALLOWED", name)
    except (OSError, ValueError) as exc:
        print("denied", name, getattr(exc, "errno", None))
def check(ret):
    if ret != 0:
        raise OSError(ctypes.get_errno(), "failed")
attempt("raw-socket", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
attempt("packet-socket", lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW))
attempt("mknod-block", lambda: os.mknod("/tmp/sda", 0o600 | 0o060000, os.makedev(8, 0)))
attempt("mknod-char", lambda: os.mknod("/tmp/mem", 0o600 | 0o020000, os.makedev(1, 1)))
attempt("chroot", lambda: os.chroot("/tmp"))
attempt("sethostname", lambda: check(libc.sethostname(b"pwned", 5)))
attempt("clock_settime", lambda: time.clock_settime(time.CLOCK_REALTIME, 0))
attempt("nice", lambda: os.nice(-10))
attempt("raise-nofile-limit", lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1 << 20, 1 << 20)))
attempt("iopl", lambda: check(libc.iopl(3)))
""",
        user="root",
    )
    assert "ALLOWED" not in answer["stdout"], answer
    assert answer["stdout"].count("denied") == 10, answer


def test_known_limit_sandbox_root_can_trace_its_own_agent(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    """Documented limit: sandbox root has the agent's uid and capabilities, so it can trace
    and signal the agent; the agent is inside the trust boundary of `user: root` commands,
    and the server treats the agent link as untrusted. SIGKILL to PID 1 from inside the
    namespace is ignored by the kernel, so the sandbox survives."""
    answer = sh(
        api,
        sandbox["id"],
        "command -v strace >/dev/null || { echo NO-STRACE; exit 0; }; kill -9 1; "
        "timeout 1 strace -p 1 -e trace=none 2>&1 | head -1",
        user="root",
    )
    if "NO-STRACE" in answer["stdout"]:
        pytest.skip("strace is not installed on this host")
    assert "Process 1 attached" in output(answer), answer
    assert sh(api, sandbox["id"], "echo alive")["stdout"] == "alive\n"
