"""The sandbox's PID 1 duty: reap every child, and hand exit statuses to whoever waits."""

from __future__ import annotations

import os
import threading
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Dict, Tuple


class Reaper:
    """Reaps every child of PID 1 and hands exit statuses to the processes we spawned.

    Starting a command can take long (its exec waits for memory in a full sandbox), so no
    lock is held while it starts: a child that exits before its pid is registered is kept
    as an early exit, and handed over at registration. Orphans reparented to us exit
    unclaimed too; their early exits are forgotten after a while (pids are not reused so
    soon: the pid namespace allocates them cyclically)."""

    EARLY_EXIT_KEEP = 30.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._watchers: Dict[int, Callable[[int, int], None]] = {}
        self._early_exits: Dict[int, Tuple[int, int, float]] = {}
        self._have_children = threading.Event()
        threading.Thread(target=self._run, name="reaper", daemon=True).start()

    def spawn(self, start: Callable[[], int], on_exit: Callable[[int, int], None]) -> int:
        """Start a child; `on_exit(code, signal)` once it is reaped (signal 0 if it exited)."""
        pid = start()
        self._have_children.set()
        with self._lock:
            early = self._early_exits.pop(pid, None)
            if early is None:
                self._watchers[pid] = on_exit
        if early is not None:
            on_exit(early[0], early[1])
        return pid

    def unclaimed_exits_since(self, since: float, among: Callable[[int], bool]) -> bool:
        """True if a child nobody has claimed (yet), with a pid `among` says may matter,
        exited at or after `since` (monotonic)."""
        with self._lock:
            return any(entry[2] >= since and among(pid) for pid, entry in self._early_exits.items())

    def _run(self) -> None:
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED)
            except ChildProcessError:
                self._have_children.clear()
                try:  # a child started between the waitid and the clear: do not sleep on it
                    os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                except ChildProcessError:
                    self._have_children.wait()
                continue
            except InterruptedError:
                continue
            if info is None:
                continue
            code = info.si_status if info.si_code == os.CLD_EXITED else 128 + info.si_status
            killed_by = 0 if info.si_code == os.CLD_EXITED else info.si_status
            now = time.monotonic()
            with self._lock:
                watcher = self._watchers.pop(info.si_pid, None)
                if watcher is None:
                    self._early_exits[info.si_pid] = (code, killed_by, now)
                    if len(self._early_exits) > 64:
                        self._early_exits = {
                            pid: entry
                            for pid, entry in self._early_exits.items()
                            if now - entry[2] < self.EARLY_EXIT_KEEP
                        }
            if watcher is not None:
                watcher(code, killed_by)


def exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code  # killed by signal N -> 128+N


def exit_signal(status: int) -> int:
    """The signal that killed the process (0 if it exited)."""
    return os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
