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
LIST = "list"  # -> ready(), JSON lines of file infos as data frames (OUT), then end()
MKDIR = "mkdir"  # -> ok(info)
REMOVE = "remove"  # -> ok()
MOVE = "move"  # -> ok(info)
COPY = "copy"  # -> ok(info)
READ = "read"  # -> ok(size), data frames (OUT), then end()
WRITE = "write"  # -> ready(), data frames (IN) from the host, its eof, then ok(info)
UNPACK = "unpack"  # -> ready(), a tar as data frames (IN) from the host, its eof, then ok(entries)
# Background processes (agent/background.py); `target` is a pid (int) or a tag (str).
START = "start"  # -> ok(process)
PROCESS = "process"  # -> ok(process)
FOLLOW = "follow"  # -> follow_start(pid, tag, offset, dropped), output frames, dropped(offset, end)*, exit_info
WAIT = "wait"  # -> ok(process) once it exited or the timeout ran out
STDIN = "stdin"  # -> ready(), data frames (IN) from the host, its eof, then ok(written)
CLOSE_STDIN = "close_stdin"  # -> ok()
KILL_PROCESS = "kill"  # -> ok(); any process started through the API, by pid, or a background one by tag
CONNECT_PORT = "connect_port"  # -> ok(), then a byte tunnel: IN frames to the port, OUT frames from it, eof() each way
WATCH = "watch"  # -> ready(), then JSON lines of file events as data frames (OUT) until the host closes

# ------------------------------------------------------------------ replies (agent -> host "type")
OK = "ok"
ERROR = "error"  # any operation may fail with error(code, message, details)
STARTED = "started"
EXIT = "exit"
READY = "ready"
END = "end"
FOLLOW_START = "start"
DROPPED = "dropped"

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


def unpack(path: str) -> Message:
    return {"op": UNPACK, "path": path}


def start(
    argv: List[str],
    env: Dict[str, str],
    cwd: str,
    user: str,
    timeout: Optional[float],
    stdin: bool,
    tag: Optional[str],
    log_bytes: int,
    retention: float,
) -> Message:
    """Start a background process; `retention`: seconds its exit and output stay after it exits."""
    message = spawn(argv, env, cwd, user, timeout, stdin, None)
    message.update(op=START, tag=tag, log_bytes=log_bytes, retention=retention)
    return message


def process(target: Any) -> Message:
    return {"op": PROCESS, "target": target}


def follow(target: Any, offset: int) -> Message:
    return {"op": FOLLOW, "target": target, "offset": offset}


def wait(target: Any, timeout: float) -> Message:
    return {"op": WAIT, "target": target, "timeout": timeout}


def stdin(target: Any) -> Message:
    return {"op": STDIN, "target": target}


def close_stdin(target: Any) -> Message:
    return {"op": CLOSE_STDIN, "target": target}


def kill_process(target: Any, signum: int) -> Message:
    return {"op": KILL_PROCESS, "target": target, "signal": signum}


def watch(path: str, recursive: bool) -> Message:
    return {"op": WATCH, "path": path, "recursive": recursive}


def connect_port(port: int) -> Message:
    return {"op": CONNECT_PORT, "port": port}


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


def ready() -> Message:
    return {"type": READY}


def end() -> Message:
    return {"type": END}


def follow_start(pid: int, tag: Optional[str], offset: int, dropped: int) -> Message:
    return {"type": FOLLOW_START, "pid": pid, "tag": tag, "offset": offset, "dropped": dropped}


def dropped(offset: int, end: int) -> Message:
    """Output bytes [offset, end) were no longer kept when the follower reached them."""
    return {"type": DROPPED, "offset": offset, "end": end}


def exit_info(
    code: Optional[int], signum: Optional[int], finished_at: Optional[str], timed_out: bool, end: int
) -> Message:
    """A background process's end, after all of its output."""
    return {
        "type": EXIT,
        "code": code,
        "signal": signum,
        "finished_at": finished_at,
        "timed_out": timed_out,
        "end": end,
    }
