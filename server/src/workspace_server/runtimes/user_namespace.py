"""A sandbox's user namespace, owned by the sandbox's own host uid.

The kernel charges per-user quotas (inotify instances and watches, fanotify groups, POSIX
message-queue bytes, queued real-time signals, locked memory) to every user namespace on
the way up, and in the host's namespace to the *owner* of the sandbox's namespace. Created
by runc (host root), every sandbox's namespace is owned by uid 0: all sandboxes and host
root then share one quota, and one sandbox could use it up for all of them.

So the namespace is created first by a small holder process that runs as the sandbox's own
host uid (the first uid of its range, runtimes/uid_ranges.py), with the rlimits that cap
the sandbox's total (the kernel takes a namespace's totals from its creator's rlimits);
host root writes its id maps (as newuidmap would), runc joins it by path, and the holder
exits once the sandbox runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

from workspace_server.domain.errors import RuntimeFailure
from workspace_server.runtimes import uid_ranges

# Per sandbox (the namespace's total) and per process (the OCI rlimits of oci_config.py).
MESSAGE_QUEUE_BYTES = 819200  # Linux's default RLIMIT_MSGQUEUE
PENDING_SIGNALS = 4096
READY_TIMEOUT = 10.0


def _ns(pid: int | str) -> str:
    return os.readlink(f"/proc/{pid}/ns/user")


def _start_holder(host_uid: int) -> subprocess.Popen[bytes]:
    holder = subprocess.Popen(
        [
            "prlimit",
            f"--msgqueue={MESSAGE_QUEUE_BYTES}",
            f"--sigpending={PENDING_SIGNALS}",
            "--",
            "setpriv",
            f"--reuid={host_uid}",
            f"--regid={host_uid}",
            "--clear-groups",
            "--",
            "unshare",
            "--user",
            "--",
            "sleep",
            "infinity",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    ours = _ns("self")
    deadline = time.monotonic() + READY_TIMEOUT
    try:
        while True:
            with contextlib.suppress(OSError):
                if Path(f"/proc/{holder.pid}/comm").read_text().strip() == "sleep" and _ns(holder.pid) != ours:
                    break
            if holder.poll() is not None:
                error = holder.stderr.read().decode(errors="replace") if holder.stderr else ""
                raise RuntimeFailure(f"could not create the sandbox's user namespace: {error.strip()}")
            if time.monotonic() > deadline:
                raise RuntimeFailure("could not create the sandbox's user namespace: the holder did not start")
            time.sleep(0.0005)
        mapping = f"0 {host_uid} {uid_ranges.RANGE_SIZE}\n"
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{holder.pid}/{name}", "w") as map_file:
                map_file.write(mapping)
    except BaseException:
        _stop_holder(holder)
        raise
    return holder


def _stop_holder(holder: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        holder.kill()
    holder.wait()
    if holder.stderr is not None:
        holder.stderr.close()


@contextlib.asynccontextmanager
async def owned_user_namespace(host_uid: int) -> AsyncIterator[str]:
    """The path of a new user namespace owned by `host_uid`, mapped onto its range; valid
    inside the block (runc joins it there; the sandbox keeps it alive afterwards)."""
    holder = await asyncio.to_thread(_start_holder, host_uid)
    try:
        yield f"/proc/{holder.pid}/ns/user"
    finally:
        await asyncio.shield(asyncio.to_thread(_stop_holder, holder))
