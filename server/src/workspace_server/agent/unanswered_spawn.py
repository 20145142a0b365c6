"""Did a command start, when the user spawner died after it was asked and before it answered?

The OOM killer picks the spawner (it lives among the commands, with their raised score), so
in a sandbox out of memory it can die in the middle of a start. Reporting an error then would
be wrong either way: the command may run untracked, or a harmless retry would be refused.
Whatever the spawner started holds the stdio we made for it, so the sandbox's /proc answers:
a process holding our pipes (or pty) is the command, or one of its children; none means it
never started, unless something may have run and exited already, which we cannot tell apart
and then say so (never start a command twice)."""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Iterable, Optional, Set, Tuple

    from .reaper import Reaper

LEADER_WAIT = 1.0  # a child between vfork and setsid gets this long to become its session's leader
RESCAN_INTERVAL = 0.02
REAP_GRACE = 0.05  # the reaper reaps a zombie within this; then its exit is on record


class StartUnknown(Exception):
    """The command may have started and exited already: starting it again could run it twice."""


def last_pid(proc: str = "/proc") -> int:
    """The pid the sandbox's pid namespace handed out last (-1 if unreadable): a command
    started after this reading has a newer pid."""
    try:
        with open(proc + "/sys/kernel/ns_last_pid", "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return -1


def started_command(
    theirs: Tuple[int, int, int], reaper: Reaper, asked_at: float, pid_before: int, proc: str = "/proc"
) -> Optional[int]:
    """The pid of the command (its session leader) if it started; None if it surely did not.

    `theirs` are the child's stdio fds (still open here), `asked_at` the monotonic time the
    request was sent and `pid_before` last_pid() then: only a process started since can be
    the command (the dead spawner, or an orphan exiting meanwhile, is no clue). Raises
    StartUnknown when it cannot be told."""
    # stdout and stderr: pipes or a pty made for this command alone (stdin may be /dev/null)
    identities = {_identity(os.fstat(fd)) for fd in set(theirs[1:])}
    deadline = time.monotonic() + LEADER_WAIT
    while True:
        holders = set(holders_of(identities, proc))
        if not holders:
            break
        leader = _leader(holders, proc)
        if leader is not None:
            return leader
        if time.monotonic() > deadline:
            raise StartUnknown("processes hold its stdio but none leads their session")
        time.sleep(RESCAN_INTERVAL)
    time.sleep(REAP_GRACE)
    if reaper.unclaimed_exits_since(asked_at, _started_since(pid_before, proc)):
        raise StartUnknown("an unknown process exited meanwhile")
    return None


def _started_since(pid_before: int, proc: str) -> Callable[[int], bool]:
    pid_now = last_pid(proc)
    if pid_before < 0 or pid_now < 0:
        return lambda pid: True  # cannot tell: any exit may be the command's
    if pid_now >= pid_before:
        return lambda pid: pid_before < pid <= pid_now
    return lambda pid: pid > pid_before or pid <= pid_now  # the pids wrapped around


def holders_of(identities: Set[Tuple[int, int]], proc: str = "/proc") -> Iterable[int]:
    """Pids of the processes, other than us, with an fd open on one of these files."""
    me = os.getpid()
    for name in os.listdir(proc):
        if not name.isdigit() or int(name) == me:
            continue
        fd_dir = "%s/%s/fd" % (proc, name)
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue  # exited, or not ours to look into
        for fd in fds:
            try:
                held = os.stat("%s/%s" % (fd_dir, fd))
            except OSError:
                continue
            if _identity(held) in identities:
                yield int(name)
                break


def _leader(holders: Set[int], proc: str) -> Optional[int]:
    """The command's pid: it starts a session of its own, so it leads the session that its
    holders are in. A leader that has exited (its children still hold the stdio) is still
    the answer: the reaper keeps its exit for us. None while a holder is not yet in a session
    of its own (between vfork and setsid)."""
    sessions = set()
    ours = os.getsid(0)  # a child not yet in a session of its own is still in ours
    for pid in holders:
        try:
            sessions.add(os.getsid(pid))
        except OSError:
            continue  # exited meanwhile
    for session in sorted(sessions - {ours}):
        if session in holders or not _alive(session, proc):
            return session
    return None


def _alive(pid: int, proc: str) -> bool:
    try:
        with open("%s/%d/stat" % (proc, pid), "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def _identity(stat: os.stat_result) -> Tuple[int, int]:
    return stat.st_dev, stat.st_ino
