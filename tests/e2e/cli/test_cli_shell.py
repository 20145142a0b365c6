"""`workspace shell` in a real terminal: tmux runs it, send-keys types, capture-pane reads."""

from __future__ import annotations

import shlex
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import WORKSPACE, run_cli, run_json

pytestmark = pytest.mark.skipif(subprocess.run(["which", "tmux"], capture_output=True).returncode != 0, reason="tmux")


class Tmux:
    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, *args: str) -> str:
        return subprocess.run(["tmux", *args], capture_output=True, text=True, check=True, timeout=30).stdout

    def send(self, *keys: str) -> None:
        self.run("send-keys", "-t", self.name, *keys)

    def type_line(self, text: str) -> None:
        self.send("-l", text)
        self.send("Enter")

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-J", "-t", self.name, "-S", "-200")

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        screen = self.screen()
        while not predicate(screen):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; the screen is:\n{screen}")
            time.sleep(0.05)
            screen = self.screen()
        return screen


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    session = Tmux(f"ws-cli-{uuid.uuid4().hex[:8]}")
    # A plain shell with a known prompt, 100x30, no rc files.
    session.run(
        "new-session",
        "-d",
        "-s",
        session.name,
        "-x",
        "100",
        "-y",
        "30",
        "env -i TERM=xterm PS1='local$ ' bash --norc --noprofile",
    )
    try:
        yield session
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session.name], capture_output=True, check=False)


@pytest.fixture
def sandbox_id(server_url: str) -> Iterator[str]:
    created: dict[str, Any] = run_json(server_url, "create")
    yield created["id"]
    run_cli(server_url, "rm", "--force", created["id"])


def test_shell_types_resizes_interrupts_and_restores_the_terminal(
    tmux: Tmux, server_url: str, sandbox_id: str, tmp_path: Path
) -> None:
    before, after, status = tmp_path / "before", tmp_path / "after", tmp_path / "status"
    tmux.wait_for(lambda s: "local$" in s)
    tmux.type_line(
        f"stty -g > {before}; WORKSPACE_API_URL={server_url} {shlex.quote(str(WORKSPACE))} shell {sandbox_id}"
    )
    tmux.wait_for(lambda s: f"user@{sandbox_id}" in s)

    # Typing: the remote shell echoes and runs what we type.
    tmux.type_line("echo typed-$((6*7))")
    tmux.wait_for(lambda s: "typed-42" in s)

    # The remote terminal has the local size, and follows a resize (SIGWINCH).
    tmux.type_line("stty size")
    tmux.wait_for(lambda s: "30 100" in s)
    tmux.run("resize-window", "-t", tmux.name, "-x", "120", "-y", "40")
    time.sleep(0.3)
    tmux.type_line("stty size")
    tmux.wait_for(lambda s: "40 120" in s)

    # Ctrl-C interrupts the remote command, not the CLI.
    tmux.type_line("sleep 300")
    time.sleep(0.5)
    tmux.send("C-c")
    tmux.type_line("echo still-$((1+1))")
    tmux.wait_for(lambda s: "still-2" in s)

    # `exit` leaves with the shell's status, and the local terminal is as it was.
    tmux.type_line("exit 7")
    tmux.wait_for(lambda s: s.rstrip().endswith("local$"))
    tmux.type_line(f"echo $? > {status}; stty -g > {after}")
    deadline = time.monotonic() + 10
    while not after.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    assert status.read_text().strip() == "7"
    assert after.read_text() == before.read_text()


def test_shell_leaves_on_ctrl_d(tmux: Tmux, server_url: str, sandbox_id: str, tmp_path: Path) -> None:
    status = tmp_path / "status"
    tmux.wait_for(lambda s: "local$" in s)
    tmux.type_line(
        f"WORKSPACE_API_URL={server_url} {shlex.quote(str(WORKSPACE))} shell {sandbox_id}; echo $? > {status}"
    )
    tmux.wait_for(lambda s: f"user@{sandbox_id}" in s)
    tmux.send("C-d")
    deadline = time.monotonic() + 20
    while not (status.exists() and status.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert status.read_text().strip() == "0"
    # The shell is gone from the sandbox, not merely detached.
    assert run_json(server_url, "ps", sandbox_id) == []


def test_shell_on_an_unknown_sandbox_is_one_error_line(server_url: str) -> None:
    result = run_cli(server_url, "shell", "sbx-nope")
    assert result.returncode == 1
    assert result.stderr.decode() == "error: sandbox sbx-nope not found (SANDBOX_NOT_FOUND)\n"
