"""Every operation of the agent protocol and every reply, in one place.

Standard library only, like wire.py: the agent imports it inside sandboxes under any
python3 >= 3.9. wire.py frames streams; this module says what travels on them:

- the host opens a stream with a request (`{"op": NAME, ...}`, built by the functions
  below, one per operation) and the agent answers with replies (`{"type": ...}`);
- a few operations then carry stream messages from the host (stdin end, kill, resize) and
  data frames either way (a command's output, a file's contents).

Adding an operation: a name and a request builder here (and reply builders if it answers
something new), its handler in the agent (agent.py's table), and one method on the host's
client (agent_link/client.py). Nothing else builds or reads these dicts.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs the agent start-up time; annotations are strings here
    from typing import Any, Dict, List, Optional

    Message = Dict[str, Any]

# ------------------------------------------------------------------ operations (request "op")
HELLO = "hello"  # -> ok(version, pid)
SPAWN = "spawn"  # -> started(pid), output frames, then exit(code, timed_out)
PROCESSES = "processes"  # -> ok(processes=[{pid, argv, pty}])
SIGNAL = "signal"  # -> ok()
SHUTDOWN = "shutdown"  # -> ok() once every command exited or the grace ran out
STAT = "stat"  # -> ok(info)
EXISTS = "exists"  # -> ok(exists)
LIST = "list"  # -> entries(files)*, then ok(files)
MKDIR = "mkdir"  # -> ok(info)
REMOVE = "remove"  # -> ok()
MOVE = "move"  # -> ok(info)
COPY = "copy"  # -> ok(info)
READ = "read"  # -> ok(size), data frames (OUT), then end()
WRITE = "write"  # -> ready(), data frames (IN) from the host, its eof, then ok(info)

# ------------------------------------------------------------------ replies (agent -> host "type")
OK = "ok"
ERROR = "error"  # any operation may fail with error(code, message, details)
STARTED = "started"
EXIT = "exit"
ENTRIES = "entries"
READY = "ready"
END = "end"

# ------------------------------------------------------------------ stream messages (host -> agent "type")
EOF = "eof"  # no more stdin / upload data
KILL = "kill"  # signal the command's process group
RESIZE = "resize"  # a pty's new window size


# ------------------------------------------------------------------ requests (host side)
def hello() -> Message:
    return {"op": HELLO}


def spawn(
    argv: List[str],
    env: Dict[str, str],
    cwd: str,
    user: str,
    timeout: Optional[float],
    stdin: bool,
    pty: Optional[Dict[str, int]],
) -> Message:
    """Start a command. user: "user" or "root"; pty: {"cols", "rows"} or None."""
    return {
        "op": SPAWN,
        "argv": argv,
        "env": env,
        "cwd": cwd,
        "user": user,
        "timeout": timeout,
        "stdin": stdin,
        "pty": pty,
    }


def processes() -> Message:
    return {"op": PROCESSES}


def signal(pid: int, signum: int) -> Message:
    return {"op": SIGNAL, "pid": pid, "signal": signum}


def shutdown(grace: float) -> Message:
    return {"op": SHUTDOWN, "grace": grace}


def stat(path: str) -> Message:
    return {"op": STAT, "path": path}


def exists(path: str) -> Message:
    return {"op": EXISTS, "path": path}


def list_dir(path: str) -> Message:
    return {"op": LIST, "path": path}


def mkdir(path: str, recursive: bool) -> Message:
    return {"op": MKDIR, "path": path, "recursive": recursive}


def remove(path: str, recursive: bool) -> Message:
    return {"op": REMOVE, "path": path, "recursive": recursive}


def move(source: str, destination: str) -> Message:
    return {"op": MOVE, "source": source, "destination": destination}


def copy(source: str, destination: str, recursive: bool) -> Message:
    return {"op": COPY, "source": source, "destination": destination, "recursive": recursive}


def read(path: str) -> Message:
    return {"op": READ, "path": path}


def write(path: str) -> Message:
    return {"op": WRITE, "path": path}


def eof() -> Message:
    return {"type": EOF}


def kill(signum: int) -> Message:
    return {"type": KILL, "signal": signum}


def resize(cols: int, rows: int) -> Message:
    return {"type": RESIZE, "cols": cols, "rows": rows}


# ------------------------------------------------------------------ replies (agent side)
def ok(**fields: Any) -> Message:
    message: Message = {"type": OK}
    message.update(fields)
    return message


def error(code: str, message: str, details: Optional[Dict[str, Any]] = None) -> Message:
    return {"type": ERROR, "code": code, "message": message, "details": details or {}}


def started(pid: int) -> Message:
    return {"type": STARTED, "pid": pid}


def exited(code: Optional[int], timed_out: bool) -> Message:
    return {"type": EXIT, "code": code, "timed_out": timed_out}


def entries(files: List[Message]) -> Message:
    return {"type": ENTRIES, "files": files}


def ready() -> Message:
    return {"type": READY}


def end() -> Message:
    return {"type": END}
