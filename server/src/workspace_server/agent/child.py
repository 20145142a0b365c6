"""The child step of starting a command: what runs in the new process before exec.

Kept apart from the parent's side (commands.py) and the user spawner (spawner.py), which
both start commands and both need these steps.
"""

from __future__ import annotations

import json
import os

from .terminal import set_controlling_tty

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, List  # noqa: F401 (type comments)

SANDBOX_USER = (1000, 1000)
# Commands are the OOM killer's first choice, so a memory hog dies and the agent survives.
# (Raising a score needs no privilege; lowering one would.)
COMMAND_OOM_SCORE_ADJ = b"500"
CHOOM = "/usr/bin/choom"


def choom_command():
    # type: () -> List[str]
    """choom as the agent can run it: in an image sandbox, the host's, through the host's
    loader (runtimes/image_root.py); it then execs the command with no trace of either."""
    given = os.environ.get("WORKSPACE_AGENT_CHOOM")
    return list(json.loads(given)) if given else [CHOOM]


class WorkloadCgroup:
    """A write handle on the memory cgroup the sandbox's processes live in, below the
    agent's own (the host passes it as the agent's stdin; -1 when there is none).

    Writing "0" moves the writer there; the kernel checks the opener's (host root's)
    credentials, so it works after a uid change too."""

    def __init__(self, fd: int = -1) -> None:
        self.fd = fd

    @classmethod
    def from_stdin(cls) -> "WorkloadCgroup":
        """Take the handle from stdin, which then reads /dev/null."""
        fd = os.dup(0)  # not inheritable: commands never see it
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        return cls(fd)

    def join(self) -> None:
        if self.fd >= 0:
            try:
                os.write(self.fd, b"0")
            except OSError:
                pass  # then the process shares the agent's cgroup: still within the sandbox's limit

    def drop(self) -> None:
        """Close the handle: code running as the sandbox user must never get hold of it."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def raise_oom_score(pid: str = "self") -> None:
    try:
        with open("/proc/%s/oom_score_adj" % pid, "wb") as f:
            f.write(COMMAND_OOM_SCORE_ADJ)
    except OSError:
        pass


def command_child_setup(cgroup: WorkloadCgroup, pty: bool) -> "Callable[[], None]":
    """The preexec function of a command the agent starts itself (not via the spawner)."""

    def prepare_command_child() -> None:
        cgroup.join()
        raise_oom_score()

    def prepare_pty_child() -> None:
        prepare_command_child()
        set_controlling_tty()

    return prepare_pty_child if pty else prepare_command_child
