"""Per-user kernel quotas (docs/security.md, "Deny other sandboxes kernel resources").

The kernel counts inotify instances, POSIX message-queue bytes and queued real-time signals
per user, up every user namespace to the host's, where a namespace counts for its owner;
pseudo-terminals and Linux AIO contexts come from host-wide pools. A `user` process in one
sandbox takes all it can of each and holds it; another sandbox, and host root, must still
get theirs. The attacker's process is killed at the end (its sandbox is deleted), which
gives everything back: no host-wide setting is changed.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.e2e.security.attack_support import run, sh

MakeSandbox = Callable[..., dict[str, Any]]

# Each probe: take as much as the kernel gives (bounded), report how much, hold it.
EXHAUST = r"""
import ctypes, errno, json, os, signal, sys, time
libc = ctypes.CDLL(None, use_errno=True)
what = sys.argv[1]
limit = int(sys.argv[3]) if len(sys.argv) > 3 else None  # at most this many (a victim's probe)
held, taken, error = [], 0, None
def fail():
    return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
if what == "inotify":
    for _ in range(limit or 4096):
        fd = libc.inotify_init1(0)
        if fd < 0:
            error = fail(); break
        held.append(fd); taken += 1
elif what == "mqueue":
    class Attr(ctypes.Structure):
        _fields_ = [(name, ctypes.c_long) for name in ("flags", "maxmsg", "msgsize", "cur", "p0", "p1", "p2", "p3")]
    attr = Attr(0, 10, 8192, 0)
    for i in range(limit or 4096):
        fd = libc.mq_open(("/ws-attack-%d" % i).encode(), os.O_CREAT | os.O_RDWR, 0o600, ctypes.byref(attr))
        if fd < 0:
            error = fail(); break
        libc.mq_unlink(("/ws-attack-%d" % i).encode())
        held.append(fd); taken += 1
elif what == "rtsig":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGRTMIN})
    for _ in range(limit or 200000):
        # sigqueue, not kill: signals sent with kill() are not counted against the limit
        if libc.sigqueue(os.getpid(), signal.SIGRTMIN, ctypes.c_long(0)) != 0:
            error = fail(); break
        taken += 1
elif what == "pty":
    for _ in range(limit or 4000):
        try:
            held.append(os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY))
        except OSError as exc:
            error = errno.errorcode[exc.errno]; break
        taken += 1
elif what == "aio":
    for _ in range(limit or 64):
        ctx = ctypes.c_ulong(0)
        if libc.syscall(206, 1 if limit else 65536, ctypes.byref(ctx)) != 0:  # io_setup
            error = fail(); break
        taken += 1
print(json.dumps({"taken": taken, "error": error}), flush=True)
time.sleep(float(sys.argv[2]))
"""


def start_holder(api: httpx.Client, sandbox_id: str, what: str) -> dict[str, Any]:
    """Exhaust `what` as the sandbox user in a background process that keeps it; its report."""
    put = api.put(f"/sandboxes/{sandbox_id}/files", params={"path": "/tmp/exhaust.py"}, content=EXHAUST.encode())
    assert put.status_code == 200, put.text
    sh(api, sandbox_id, f"python3 /tmp/exhaust.py {what} 120 > /tmp/{what}.out 2>&1 &")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        out = sh(api, sandbox_id, f"cat /tmp/{what}.out 2>/dev/null; true")["stdout"]
        if out.strip():
            report: dict[str, Any] = json.loads(out.splitlines()[-1])
            return report
        time.sleep(0.2)
    raise AssertionError(f"the {what} holder never reported")


def probe(api: httpx.Client, sandbox_id: str, what: str) -> dict[str, Any]:
    """Take a little of `what` (as the user) and report."""
    put = api.put(f"/sandboxes/{sandbox_id}/files", params={"path": "/tmp/exhaust.py"}, content=EXHAUST.encode())
    assert put.status_code == 200, put.text
    answer = run(api, sandbox_id, "python3", "/tmp/exhaust.py", what, "0", "1")
    report: dict[str, Any] = json.loads(answer["stdout"].splitlines()[-1])
    return report


def host_root_can(what: str) -> bool:
    """Host root (this test process) still gets one of `what`."""
    libc = ctypes.CDLL(None, use_errno=True)
    if what == "inotify":
        fd = libc.inotify_init1(0)
        if fd < 0:
            return False
        os.close(fd)
        return True
    if what == "aio":
        ctx = ctypes.c_ulong(0)
        if libc.syscall(206, 1, ctypes.byref(ctx)) != 0:
            return False
        libc.syscall(207, ctx)  # io_destroy
        return True
    if what == "pty":
        try:
            os.close(os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY))
        except OSError as exc:
            return exc.errno != errno.ENOSPC
        return True
    return True  # message queues and signals: host root's own count is checked through the victim


@pytest.mark.parametrize("what", ["inotify", "mqueue", "rtsig", "pty", "aio"])
def test_attack_one_sandbox_exhausting_a_kernel_quota_denies_no_other(
    api: httpx.Client, make_sandbox: MakeSandbox, what: str
) -> None:
    attacker = make_sandbox()
    victim = make_sandbox()
    report = start_holder(api, attacker["id"], what)
    if what == "aio":
        assert report["taken"] == 0 and report["error"] == "ENOSYS", report  # not available at all
    else:
        assert report["error"] is not None, f"the {what} probe hit no limit: {report}"
    other = probe(api, victim["id"], what)
    if what == "aio":
        assert other["error"] == "ENOSYS", other
    else:
        assert other["taken"] == 1 and other["error"] is None, f"{what}: the attacker denied its neighbour: {other}"
    assert host_root_can(what), f"{what}: the attacker denied host root"
    # Someone else's PTYs through the API still open (they come from the victim's own devpts).
    if what == "pty":
        assert report["taken"] <= 128, report
