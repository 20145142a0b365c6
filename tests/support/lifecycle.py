"""Shared helpers of the lifecycle tests (pause, stop, start, fork, restarts): a varied file
tree to make, a digest of every file a sandbox holds to compare, a background counter whose
pid and output must survive a pause, and the host's view of a sandbox's CPU time.

The in-sandbox parts take `sh`, a function that runs a bash script as root in the sandbox
and returns its stdout, so the HTTP, SDK and reliability tests share them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx

Shell = Callable[[str], str]
WRITABLE = "/workspace /home /root /tmp /var/tmp"

MAKE_TREE = r"""
set -e
mkdir -p /workspace/src/deep/er/still /workspace/empty-dir /root/secret /home/user/.cache
head -c 1048576 /dev/urandom > /workspace/src/random.bin
printf 'hello\n' > /workspace/src/hello.txt
: > /workspace/src/empty
ln -s hello.txt /workspace/src/link-to-hello
ln -s /does/not/exist /workspace/src/dangling
ln /workspace/src/hello.txt /workspace/src/hardlink
mkfifo /workspace/src/fifo
truncate -s 50M /workspace/src/sparse
printf 'x' | dd of=/workspace/src/sparse bs=1 seek=30000000 conv=notrunc status=none
echo 'root only' > /root/secret/key && chmod 600 /root/secret/key
cp /usr/bin/true /workspace/src/suid && chmod 4755 /workspace/src/suid
echo deep > /workspace/src/deep/er/still/file
echo 'user file' > /workspace/src/user-owned && chown 1000:1000 /workspace/src/user-owned
chown 4242:4343 /workspace/src/deep/er
touch -d '2001-02-03 04:05:06' /workspace/src/hello.txt
echo tmp > /tmp/in-tmp; echo vartmp > /var/tmp/in-var-tmp; echo home > /home/user/.cache/c
"""

DIGEST = (
    f"cd / && find {WRITABLE} -xdev -printf '%p %y %m %U:%G %s %l\\n' | sort && "
    f"find {WRITABLE} -xdev -type f -print0 | sort -z | xargs -0 -r sha256sum"
)


def make_tree(sh: Shell) -> None:
    sh(MAKE_TREE)


def digest(sh: Shell) -> str:
    """Every entry under the writable dirs: path, type, mode, numeric owner, size, link
    target, and the sha256 of every regular file. Equal digests: nothing lost or changed."""
    out = sh(DIGEST)
    assert "/workspace/src/random.bin" in out or "/workspace" in out
    return out


COUNTER = (
    "nohup bash -c 'i=0; while :; do echo $i >> /workspace/counter.log; i=$((i+1)); sleep 0.05; done' "
    ">/dev/null 2>&1 & echo $!"
)
BUSY = "nohup bash -c 'while :; do :; done' >/dev/null 2>&1 & echo $!"


def start_counter(sh: Shell) -> int:
    """A background loop appending 0, 1, 2, ... to /workspace/counter.log; its pid."""
    return int(sh(COUNTER).strip())


def counter_lines(sh: Shell) -> list[int]:
    return [int(line) for line in sh("cat /workspace/counter.log").split()]


def http_shell(client: httpx.Client, sandbox_id: str, user: str = "root") -> Shell:
    def sh(script: str) -> str:
        response = client.post(
            f"/sandboxes/{sandbox_id}/processes/run", json={"command": "bash", "args": ["-c", script], "user": user}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["exit_code"] == 0, body
        return str(body["stdout"])

    return sh


def memory_cgroup_of(pid: int) -> str:
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return path
    return "/"


def sandbox_cgroup(server_pid: int, controller: str, sandbox_id: str) -> Path:
    """The sandbox's cgroup directory in `controller`'s v1 hierarchy (server's layout)."""
    parent = memory_cgroup_of(server_pid).rstrip("/") + "/workspace"
    return Path("/sys/fs/cgroup") / controller / parent.lstrip("/") / sandbox_id


def cpu_seconds(server_pid: int, sandbox_id: str) -> float:
    """CPU time used so far by everything in the sandbox (agent included), from cpuacct."""
    usage = sandbox_cgroup(server_pid, "cpuacct", sandbox_id) / "cpuacct.usage"
    return int(usage.read_text()) / 1e9
