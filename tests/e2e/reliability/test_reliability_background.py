"""Background processes through server crashes and slow readers: nothing a client followed
is lost or repeated, the processes and their logs live on in the agent, and a reader that
does not keep up slows nobody down."""

from __future__ import annotations

import asyncio
import ctypes
import os
import re
import socket
import subprocess
import threading
import time

import httpx

from tests.e2e.reliability.reliability_support import Harness, metric_samples, rss_bytes, wait_until
from workspace_sdk import (
    AsyncWorkspaceClient,
    CreateSandboxParams,
    DroppedEvent,
    ExitEvent,
    ProcessOutputEvent,
    RunCommandOptions,
    StdoutEvent,
    WorkspaceClient,
)

LINES = 600
TICKER = RunCommandOptions(
    args=[
        "-c",
        f"import time\nfor i in range({LINES}):\n    print(f'tick {{i:05d}}', flush=True)\n    time.sleep(0.01)\n",
    ]
)
EXPECTED = "".join(f"tick {i:05d}\n" for i in range(LINES))


def text(events: list[ProcessOutputEvent]) -> str:
    return "".join(e.data for e in events if isinstance(e, StdoutEvent))


def test_server_crash_mid_stream_loses_no_byte_and_everything_works_after() -> None:
    with Harness("bgcrash") as h:
        h.start()
        with WorkspaceClient(h.url, timeout=30) as client:
            sandbox = client.sandbox.create(CreateSandboxParams(template="workspace-test:latest"))
            ticker = client.process.start(sandbox.id, "python3", TICKER, tag="ticker")
            echo = client.process.start(sandbox.id, "cat", tag="echo", stdin=True)
            followed: list[ProcessOutputEvent] = []
            follower = threading.Thread(target=lambda: followed.extend(ticker))
            follower.start()
            wait_until(lambda: len(followed) > 5, 20, what="the follower to get output")

            h.crash()  # mid-stream: the follower's connection breaks
            time.sleep(0.5)
            h.start(same_port=True)

            # The handle resumed by itself at its offset: every byte once, in order.
            follower.join(60)
            assert not follower.is_alive()
            assert isinstance(followed[-1], ExitEvent) and followed[-1].code == 0
            assert text(followed) == EXPECTED
            assert not any(isinstance(e, DroppedEvent) for e in followed)

            # The restarted server sees the processes the agent kept.
            listed = {p.tag: p for p in client.process.list(sandbox.id) if p.tag}
            assert listed["ticker"].state == "exited" and listed["ticker"].exit_code == 0
            assert listed["echo"].state == "running" and listed["echo"].stdin
            assert text(list(client.process.connect(sandbox.id, "ticker", offset=0))) == EXPECTED
            # ...and stdin and kill work on a process started before the crash.
            echo_events = iter(client.process.connect(sandbox.id, "echo"))
            client.process.send_stdin(sandbox.id, "echo", "after the restart\n")
            assert next(echo_events) == StdoutEvent(data="after the restart\n", offset=0, end=18)
            client.process.kill(sandbox.id, "echo", 9)
            exited = next(echo_events)
            assert isinstance(exited, ExitEvent) and (exited.code, exited.signal) == (137, 9)
            assert echo.wait(10).signal == 9
            client.sandbox.delete(sandbox.id, force=True)


def test_a_slow_follower_slows_neither_the_process_nor_other_followers() -> None:
    """A follower that stops reading: the process still runs at full speed (its output goes
    to the log, not to any follower), the other follower gets every byte, and the slow one,
    once it reads again, is told what it missed."""
    with Harness("bgslow") as h:
        h.start()
        with WorkspaceClient(h.url, timeout=60) as client:
            sandbox = client.sandbox.create(CreateSandboxParams(template="workspace-test:latest"))
            script = (
                "import sys\nline = b'y' * 1023 + b'\\n'\n"
                "for _ in range(64 * 1024):\n    sys.stdout.buffer.write(line)\n"
            )
            writer = client.process.start(
                sandbox.id, "python3", RunCommandOptions(args=["-c", script]), log_bytes=1024 * 1024
            )
            slow = iter(client.process.connect(sandbox.id, writer.pid))
            # Connected, then it reads nothing while 64 MiB go by. Its first event is output, or
            # (on a slow machine, the log having moved on before the follow began) a drop.
            first = next(slow)
            assert isinstance(first, (StdoutEvent, DroppedEvent))
            exited = writer.wait(120)  # it finishes while the slow follower reads nothing
            assert exited.code == 0 and exited.end == 64 * 1024 * 1024

            # A fast follower replaying from the end of the kept log gets exactly it.
            kept = list(client.process.connect(sandbox.id, writer.pid, offset=-1024 * 1024))
            assert text(kept) == ("y" * 1023 + "\n") * 1024
            # The slow one goes on where it stopped: what the log no longer has is reported.
            rest = [first, *slow]
            gaps = [e for e in rest if isinstance(e, DroppedEvent)]
            assert gaps and gaps[0].end > gaps[0].offset
            assert isinstance(rest[-1], ExitEvent)
            received = sum(len(e.data) for e in rest if isinstance(e, StdoutEvent))
            dropped = sum(e.end - e.offset for e in gaps)
            assert received + dropped == 64 * 1024 * 1024
            client.sandbox.delete(sandbox.id, force=True)


async def test_a_thousand_background_processes_fit_the_pids_limit_and_are_listed() -> None:
    """No thread per process in the agent: 1,000 processes cost 1,000 pids, not 2,000."""
    with Harness("bgmany") as h:
        h.start()
        async with AsyncWorkspaceClient(h.url, timeout=120) as client:
            sandbox = await client.sandbox.create(CreateSandboxParams(template="workspace-test:latest", pids=1100))
            gate = asyncio.Semaphore(16)

            async def start(i: int) -> int:
                async with gate:
                    handle = await client.process.start(
                        sandbox.id, "sleep", RunCommandOptions(args=["600"]), tag=f"sleeper-{i}"
                    )
                    return handle.pid

            pids = await asyncio.gather(*(start(i) for i in range(1000)))
            listed = [p for p in await client.process.list(sandbox.id) if p.background]
            assert {p.pid for p in listed} == set(pids)
            assert {p.tag for p in listed} == {f"sleeper-{i}" for i in range(1000)}
            assert all(p.state == "running" and p.command == "sleep" for p in listed)
            await client.process.kill(sandbox.id, "sleeper-500", 9)
            assert (await (await client.process.connect(sandbox.id, "sleeper-500")).wait(10)).signal == 9
            await client.sandbox.delete(sandbox.id, force=True)


def test_never_ending_output_keeps_agent_and_server_memory_flat() -> None:
    """`yes` writes without pause into a 1 MiB log: the log stays 1 MiB on disk and neither
    the agent's nor the server's memory follows the gigabytes written."""
    with Harness("bgflood") as h:
        h.start()
        with WorkspaceClient(h.url, timeout=60) as client:
            sandbox = client.sandbox.create(CreateSandboxParams(template="workspace-test:latest"))
            agent_pid = h.init_pid(sandbox.id)
            yes = client.process.start(sandbox.id, "yes", log_bytes=1024 * 1024)
            time.sleep(1)
            before = (rss_bytes(agent_pid), rss_bytes(h.pid))
            follower = iter(client.process.connect(sandbox.id, yes.pid))
            for _ in range(200):  # a follower too, replaying and following
                next(follower)
            written_before = client.process.get(sandbox.id, yes.pid).output_end or 0
            time.sleep(3)
            info = client.process.get(sandbox.id, yes.pid)
            assert (info.output_end or 0) - written_before > 50 * 1024 * 1024  # it kept writing
            assert (info.output_end or 0) - (info.output_start or 0) <= 1024 * 1024
            after = (rss_bytes(agent_pid), rss_bytes(h.pid))
            assert after[0] - before[0] < 16 * 1024 * 1024, (before, after)
            assert after[1] - before[1] < 32 * 1024 * 1024, (before, after)
            log_sizes = client.process.run(
                sandbox.id, "du", RunCommandOptions(args=["-sk", "/run/workspace/processes"], user="root")
            )
            assert int(log_sizes.stdout.split()[0]) < 4 * 1024, log_sizes.stdout
            yes.kill(9)
            client.sandbox.delete(sandbox.id, force=True)


SYS_PIDFD_OPEN = 434
SYS_PIDFD_GETFD = 438


def sever_agent_link(server_pid: int, agent_pid: int) -> None:
    """Shut down the server's end of its Unix socket to this agent, from outside: the link
    breaks while the server and the agent both live on."""
    agent_sockets = set()
    for fd in os.listdir(f"/proc/{agent_pid}/fd"):
        match = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(f"/proc/{agent_pid}/fd/{fd}"))
        if match:
            agent_sockets.add(match.group(1))
    listing = subprocess.run(["ss", "-xpn"], capture_output=True, text=True, check=True).stdout
    server_fd = None
    for line in listing.splitlines():
        fields = line.split()
        if f"pid={server_pid}," in line and len(fields) >= 8 and fields[7] in agent_sockets:
            server_fd = int(re.search(rf"pid={server_pid},fd=(\d+)", line).group(1))  # type: ignore[union-attr]
    assert server_fd is not None, "the server's end of the agent link was not found"
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = libc.syscall(SYS_PIDFD_OPEN, server_pid, 0)
    assert pidfd >= 0, os.strerror(ctypes.get_errno())
    try:
        stolen = libc.syscall(SYS_PIDFD_GETFD, pidfd, server_fd, 0)
        assert stolen >= 0, os.strerror(ctypes.get_errno())
        with socket.socket(fileno=stolen) as link:
            link.shutdown(socket.SHUT_RDWR)
    finally:
        os.close(pidfd)


def test_killing_the_agent_link_mid_stream_loses_no_byte() -> None:
    """The link drops while the agent lives: the server connects to it again, and a follower
    resumes at its offset with every byte once."""
    with Harness("bglink") as h:
        h.start()
        with WorkspaceClient(h.url, timeout=30) as client:
            sandbox = client.sandbox.create(CreateSandboxParams(template="workspace-test:latest"))
            ticker = client.process.start(sandbox.id, "python3", TICKER)
            followed: list[ProcessOutputEvent] = []
            follower = threading.Thread(target=lambda: followed.extend(ticker))
            follower.start()
            wait_until(lambda: len(followed) > 5, 20, what="the follower to get output")
            sever_agent_link(h.pid, h.init_pid(sandbox.id))
            follower.join(60)
            assert not follower.is_alive()
            assert isinstance(followed[-1], ExitEvent) and followed[-1].code == 0
            assert text(followed) == EXPECTED
            assert client.sandbox.get(sandbox.id).state == "running"
            assert client.process.run(sandbox.id, "true").exit_code == 0
            samples = metric_samples(httpx.get(h.url + "/metrics").text)
            assert samples[("workspace_agent_disconnects_total", ())] == 1  # it did drop
            client.sandbox.delete(sandbox.id, force=True)
