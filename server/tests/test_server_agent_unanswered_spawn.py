"""When the user spawner dies after it was asked to start a command and before it answered:
whether the command started is read from who holds its stdio (one layer alone, no sandbox)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from workspace_server.agent import unanswered_spawn
from workspace_server.agent.unanswered_spawn import StartUnknown, started_command


class RecordedExits:
    """The reaper's record of exits nobody claimed (all since the request), reduced to what
    is asked of it."""

    def __init__(self, *pids: int) -> None:
        self.pids = pids

    def unclaimed_exits_since(self, since: float, among: Callable[[int], bool]) -> bool:
        return any(among(pid) for pid in self.pids)


@pytest.fixture
def stdio() -> Iterator[tuple[int, int, int]]:
    """The child's ends of a command's stdio, as the agent makes them: /dev/null and two pipes."""
    null = os.open(os.devnull, os.O_RDONLY)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    yield null, out_w, err_w
    for fd in (null, out_r, out_w, err_r, err_w):
        os.close(fd)


def test_a_command_that_runs_is_found_by_its_stdio(stdio: tuple[int, int, int]) -> None:
    command = subprocess.Popen(["sleep", "30"], stdout=stdio[1], stderr=stdio[2], start_new_session=True)
    try:
        assert started_command(stdio, RecordedExits(), 0.0, -1) == command.pid  # type: ignore[arg-type]
    finally:
        command.kill()
        command.wait()


def test_a_command_that_exited_while_its_child_holds_the_stdio_is_its_session_leader(
    stdio: tuple[int, int, int],
) -> None:
    leader = subprocess.Popen(
        ["sh", "-c", "sleep 30 & echo $!"], stdout=subprocess.PIPE, stderr=stdio[2], start_new_session=True
    )
    assert leader.stdout is not None
    child = int(leader.stdout.readline())
    leader.wait()  # reaped, as the agent's reaper would (keeping its exit for a registration)
    try:
        assert started_command(stdio, RecordedExits(), 0.0, -1) == leader.pid  # type: ignore[arg-type]
    finally:
        os.kill(child, 9)


def test_a_command_that_never_started_is_none(stdio: tuple[int, int, int]) -> None:
    assert started_command(stdio, RecordedExits(), 0.0, -1) is None  # type: ignore[arg-type]


def fake_proc(tmp_path: Path, last_pid: int) -> str:
    """A /proc with no processes in it and the pid namespace's last pid."""
    (tmp_path / "sys" / "kernel").mkdir(parents=True)
    (tmp_path / "sys" / "kernel" / "ns_last_pid").write_text(f"{last_pid}\n")
    return str(tmp_path)


@pytest.mark.parametrize(
    ("pid_before", "last_pid", "exited", "undecidable"),
    [
        (100, 120, 110, True),  # started since the request: it may have been the command
        (100, 120, 50, False),  # older (the dead spawner itself, an old orphan): no clue
        (100, 100, 100, False),
        (4000, 5, 3, True),  # the pids wrapped around
        (4000, 5, 3000, False),
        (-1, 120, 50, True),  # the last pid could not be read: any exit may be the command's
    ],
)
def test_an_unknown_exit_meanwhile_makes_it_undecidable_only_if_it_is_newer(
    stdio: tuple[int, int, int], tmp_path: Path, pid_before: int, last_pid: int, exited: int, undecidable: bool
) -> None:
    proc = fake_proc(tmp_path, last_pid)
    if undecidable:
        with pytest.raises(StartUnknown):
            started_command(stdio, RecordedExits(exited), 0.0, pid_before, proc)  # type: ignore[arg-type]
    else:
        assert started_command(stdio, RecordedExits(exited), 0.0, pid_before, proc) is None  # type: ignore[arg-type]


def test_the_shared_dev_null_is_not_taken_for_the_command(stdio: tuple[int, int, int]) -> None:
    """Every process may hold /dev/null; only the command holds its own pipes."""
    null_holder = subprocess.Popen(["sleep", "30"], stdin=stdio[0], start_new_session=True)
    try:
        assert started_command(stdio, RecordedExits(), 0.0, -1) is None  # type: ignore[arg-type]
    finally:
        null_holder.kill()
        null_holder.wait()


def test_holders_are_found_in_other_processes_only(stdio: tuple[int, int, int]) -> None:
    identity = os.fstat(stdio[1])
    assert list(unanswered_spawn.holders_of({(identity.st_dev, identity.st_ino)})) == []


# The spawner is forked as root and the reaper reaps every child: a process of its own.
SPAWNER_DIES_SCRIPT = textwrap.dedent("""
    import os, signal, threading, time
    from workspace_server.agent import spawner as spawner_module
    from workspace_server.agent.child import WorkloadCgroup
    from workspace_server.agent.commands import Commands
    from workspace_server.agent.reaper import Reaper
    from workspace_server.agent.workers import Workers

    spawner_module.SPAWNER_WATCH_INTERVAL = 60.0  # the stopped spawner is not retired meanwhile
    spawner_module.UserSpawner.RESPAWN_LIMIT = 0
    cgroup = WorkloadCgroup()
    spawner = spawner_module.UserSpawner(cgroup, spawner_module.__file__)
    spawner.fork()
    commands = Commands(spawner, Reaper(), Workers(), cgroup)

    def run(argv):
        exited = threading.Event()
        launch = commands.prepare({"argv": argv, "env": {"PATH": "/usr/bin:/bin"}})
        process = commands.start_in_parent(launch, lambda process: exited.set())
        assert exited.wait(10)
        return process

    earlier = run(["true"])  # the spawner has started and reported something before
    assert earlier.popen is None and earlier.exit_code == 0
    os.kill(spawner.pid, signal.SIGSTOP)  # asked, it cannot answer ...
    threading.Timer(0.3, os.kill, (spawner.pid, signal.SIGKILL)).start()  # ... and dies
    process = run(["sh", "-c", "id -u; echo ran"])
    print(process.exit_code, "agent" if process.popen is not None else "spawner")
    print(os.read(process.out_fd, 4096).decode(), end="")
""")


@pytest.mark.skipif(os.geteuid() != 0, reason="the spawner drops from root to the sandbox user")
def test_a_command_asked_of_a_spawner_that_died_unanswered_is_started_once_by_the_agent() -> None:
    answer = subprocess.run(
        [sys.executable, "-c", SPAWNER_DIES_SCRIPT], capture_output=True, text=True, timeout=60, check=False
    )
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.splitlines() == ["0 agent", "1000", "ran"], answer.stdout + answer.stderr
