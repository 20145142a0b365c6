"""``workspace shell``: a sandbox PTY in this terminal.

The local terminal is put in raw mode, so every key (Ctrl-C, Ctrl-D, arrows) goes to the
remote shell, whose own line discipline interprets it. Window size changes (SIGWINCH) are
forwarded. The terminal's settings are restored however the session ends.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import sys
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workspace_sdk import PtyHandle, WorkspaceClient

WAKE_RESIZE = b"r"
WAKE_ENDED = b"e"
EOF_KEY = b"\x04"


def terminal_size() -> tuple[int, int]:
    size = shutil.get_terminal_size((80, 24))
    return size.columns, size.lines


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def run_shell(api: WorkspaceClient, sandbox_id: str, program: str | None) -> int | None:
    """Run the session until the shell exits; returns its exit status."""
    import termios
    import tty

    from workspace_sdk import PtyOptions, WorkspaceError

    stdin_fd, stdout_fd = sys.stdin.fileno(), sys.stdout.fileno()
    interactive = os.isatty(stdin_fd)
    cols, rows = terminal_size()
    handle = api.pty.connect(sandbox_id, PtyOptions(cols=cols, rows=rows, shell=program))
    wake_read, wake_write = os.pipe()
    ended: list[WorkspaceError] = []

    def watch_session() -> None:
        try:
            handle.wait()
        except WorkspaceError as exc:
            ended.append(exc)
        finally:
            os.write(wake_write, WAKE_ENDED)

    saved = termios.tcgetattr(stdin_fd) if interactive else None
    previous_handler = signal.signal(signal.SIGWINCH, lambda _signum, _frame: os.write(wake_write, WAKE_RESIZE))
    try:
        if interactive:
            tty.setraw(stdin_fd, termios.TCSANOW)
        handle.on_data(lambda data: write_all(stdout_fd, data))
        threading.Thread(target=watch_session, name="workspace-shell-watch", daemon=True).start()
        pump(handle, stdin_fd, wake_read)
    finally:
        if saved is not None:
            termios.tcsetattr(stdin_fd, termios.TCSADRAIN, saved)
        signal.signal(signal.SIGWINCH, previous_handler)
        handle.close()
        os.close(wake_read)
        os.close(wake_write)
    if ended:
        raise ended[0]
    return handle.exit_code


def pump(handle: PtyHandle, stdin_fd: int, wake_fd: int) -> None:
    """Forward keystrokes and resizes until the session ends."""
    from workspace_sdk import WorkspaceError

    watched = [stdin_fd, wake_fd]
    while True:
        ready, _, _ = select.select(watched, [], [])
        if wake_fd in ready:
            tokens = os.read(wake_fd, 64)
            if WAKE_ENDED in tokens:
                return
            if WAKE_RESIZE in tokens:
                try:
                    handle.resize(*terminal_size())
                except WorkspaceError:
                    pass  # the session is ending; the watcher reports why
        if stdin_fd in ready:
            data = os.read(stdin_fd, 65536)
            try:
                if data:
                    handle.write(data)
                else:
                    # Local end of input (a pipe, not a terminal): end of input for the
                    # remote shell too, which then exits.
                    handle.write(EOF_KEY)
                    watched = [wake_fd]
            except WorkspaceError:
                watched = [wake_fd]  # closed under us; wait for the watcher
