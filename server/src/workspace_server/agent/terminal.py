"""Terminal plumbing for commands that run on a pty."""

from __future__ import annotations

import fcntl
import os
import struct
import termios

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Tuple


def open_pty(cols: int, rows: int) -> "Tuple[int, int]":
    """A new pty pair (master, slave) with the given window size."""
    master_fd, slave_fd = os.openpty()
    set_winsize(slave_fd, cols, rows)
    return master_fd, slave_fd


def set_controlling_tty() -> None:
    """In a child on its own session with the pty as stdin: make it the controlling tty."""
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def set_winsize(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
