"""Turns profiler output into "where the time goes" tables (pure: no I/O).

Server: pyinstrument's JSON call tree; every frame's self time is charged to a category:
libraries by library, Workspace's code by module, and the stdlib (asyncio streams and
queues, pathlib, typing...) and C builtins to whoever called them, except where the
stdlib is the story itself (JSON, codecs, epoll waits, socket syscalls). Agent: py-spy's raw collapsed stacks;
each sample goes to the innermost frame that matches a rule."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

IDLE = "idle: event loop waiting in epoll (incl. uvloop's own C code)"
# uvloop runs the loop in C: below the loop's root Python frame, time in no Python frame
# is the epoll wait plus uvloop's C internals (socket syscalls, callback scheduling).
LOOP_ROOTS = (("Runner.run", "asyncio/runners.py"),)
PROFILER = "profiler itself"

# A frame matching these takes its whole subtree: what it calls is part of the same story.
STICKY_RULES: list[tuple[str, tuple[str, ...]]] = [
    (
        "threadpool hand-off: sync code run in a worker thread (starlette run_in_threadpool)",
        ("starlette/concurrency.py", "anyio/to_thread.py"),
    ),
]
# (category, substrings of the frame's file path); first match wins. Libraries and the
# stdlib modules worth naming keep their own category whoever calls them.
LIBRARY_RULES: list[tuple[str, tuple[str, ...]]] = [
    (PROFILER, ("/pyinstrument/", "benchmarks/profiled_server.py")),
    ("HTTP server: uvicorn + httptools/h11 (parsing, protocol, ASGI glue)", ("/uvicorn/", "/h11/", "/httptools/")),
    (
        "web framework: FastAPI/Starlette (routing, DI, middleware, responses, telemetry hooks)",
        ("/fastapi/", "/starlette/", "/anyio/", "/opentelemetry/"),
    ),
    ("pydantic: request validation + response serialization", ("/pydantic/", "/pydantic_core/")),
    ("JSON encode/decode", ("/json/",)),
    ("UTF-8 decoding (codecs)", ("/codecs.py", "<frozen codecs>")),
    ("metrics (prometheus_client)", ("/prometheus_client/",)),
    ("logging", ("/logging/",)),
]
# Workspace's own code.
WORKSPACE_RULES: list[tuple[str, tuple[str, ...]]] = [
    (
        "agent link: framing, streams, flow control, socket writes (agent_link/, wire.py)",
        ("workspace_server/agent_link/", "workspace_server/agent/wire.py"),
    ),
    (
        "process service: spawn request, output collection (services/processes.py)",
        ("workspace_server/services/processes.py",),
    ),
    ("SSE framing + process route handlers (api/routes/processes.py)", ("workspace_server/api/routes/processes.py",)),
    (
        "file service + routes (services/files.py, api/routes/files.py)",
        ("workspace_server/services/files.py", "workspace_server/api/routes/files.py"),
    ),
    ("runtime calls on the request path (runtimes/)", ("workspace_server/runtimes/",)),
    ("GuardMiddleware (api/middleware.py)", ("workspace_server/api/middleware.py",)),
    ("other Workspace code (services, store, deps)", ("workspace_server/",)),
]
ASYNCIO = "asyncio machinery: tasks, futures, event-loop callbacks"
OTHER = "other (stdlib, libraries)"
IDLE_BUILTINS = re.compile(r"(^|\.)(poll|select|epoll_wait)$")
SOCKET_BUILTINS = re.compile(r"^socket\.(send|sendall|recv|recv_into|sendmsg|recvmsg)$|^(send|recv|recv_into)$")
SOCKET_IO = "kernel: socket send/recv syscalls"


@dataclass(frozen=True)
class Breakdown:
    seconds: dict[str, float]  # category -> seconds (or samples, for py-spy)
    total: float
    idle: float
    profiler: float

    @property
    def busy(self) -> float:
        return max(0.0, self.total - self.idle - self.profiler)


def is_stdlib(path: str) -> bool:
    return path.startswith("<") or ("/lib/python3" in path and "-packages/" not in path)


def server_category(file_path: str, function: str, parent_category: str | None) -> str:
    if file_path.startswith("<built-in>") or file_path == "":
        if IDLE_BUILTINS.search(function):
            return IDLE
        if SOCKET_BUILTINS.search(function):
            return SOCKET_IO
        return parent_category or OTHER
    if file_path.endswith("/selectors.py"):
        return IDLE
    for category, needles in LIBRARY_RULES:
        if any(n in file_path for n in needles):
            return category
    for category, needles in WORKSPACE_RULES:
        if any(n in file_path for n in needles):
            return category
    if is_stdlib(file_path) and parent_category not in (None, IDLE, PROFILER, ASYNCIO, OTHER):
        return parent_category  # typing, contextlib, pathlib... count for whoever called them
    if "/asyncio/" in file_path:
        return ASYNCIO
    return OTHER


def _frames(
    frame: dict[str, Any], parent_category: str | None, parent_label: str, sticky: bool
) -> Iterator[tuple[str, str, float]]:
    """(category, function label, self seconds) for a frame and all below it."""
    path = str(frame.get("file_path") or frame.get("file_path_short") or "")
    function = str(frame.get("function", ""))
    if frame.get("class_name"):
        function = f"{frame['class_name']}.{function}"
    label = f"{function}  {frame.get('file_path_short') or path}:{frame.get('line_no', 0)}"
    forced = next((c for c, needles in STICKY_RULES if any(n in path for n in needles)), None)
    if sticky and parent_category is not None:
        category = parent_category
    elif forced is not None:
        category, sticky = forced, True
    elif function.startswith("[") and parent_category is not None:  # [self], [await] pseudo-frames
        category, label = parent_category, parent_label
    elif any(function == name and path.endswith(where) for name, where in LOOP_ROOTS):
        category = IDLE
    else:
        category = server_category(path, function, parent_category)
    children = frame.get("children", [])
    self_time = float(frame.get("time", 0.0)) - sum(float(c.get("time", 0.0)) for c in children)
    if self_time > 0:
        yield category, label, self_time
    for child in children:
        yield from _frames(child, category, label, sticky)


def pyinstrument_breakdown(document: dict[str, Any]) -> Breakdown:
    seconds: dict[str, float] = defaultdict(float)
    root = document["root_frame"]
    for category, _, spent in _frames(root, None, "", False):
        seconds[category] += spent
    total = float(root.get("time", sum(seconds.values())))
    return Breakdown(dict(seconds), total, seconds.get(IDLE, 0.0), seconds.get(PROFILER, 0.0))


def top_functions(document: dict[str, Any], ops: float, count: int = 40) -> str:
    """The functions with the most self time (busy only), as a text table per op."""
    spent: dict[tuple[str, str], float] = defaultdict(float)
    for category, label, seconds in _frames(document["root_frame"], None, "", False):
        if category not in (IDLE, PROFILER):
            spent[(label, category)] += seconds
    lines = [f"{'ms/op':>8}  function  (category)"]
    for (label, category), seconds in sorted(spent.items(), key=lambda kv: -kv[1])[:count]:
        lines.append(f"{seconds * 1000.0 / ops:8.3f}  {label}  ({category.split(':')[0]})")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- py-spy (agent)

# (category, substrings of a "function (file:line)" frame); the innermost frame that
# matches any rule decides. Names, not line numbers: the agent changes.
AGENT_RULES: list[tuple[str, tuple[str, ...]]] = [
    ("JSON encode/decode", ("json/",)),
    ("command lookup: shutil.which over PATH", ("which (shutil.py", "CommandLookup.resolve")),
    (
        "process spawn: op_spawn setup, spawner hand-off, fork/exec",
        ("_execute_child", "_fork_exec", "Popen.__init__", "Spawner", "send_fds", "spawn"),
    ),
    (
        "link send: frame encode + sendall under the send lock",
        ("Link.send", "encode (wire.py", "encode_json", "sendall"),
    ),
    ("link receive + dispatch (reader thread)", ("_recv_exact", "_dispatch", "Link.serve", "decode_")),
    (
        "thread start/exit (a thread per operation / per pipe)",
        ("Thread.start", "Thread.__init__", "Thread._bootstrap_inner"),
    ),
    ("output pumps: poll + read of the command's pipes, flow-control window", ("pump",)),
    ("reaper: waitid/waitpid", ("Reaper",)),
    ("stdin writer", ("StdinWriter",)),
    ("file read/write ops", ("op_read", "op_write")),
    ("supervision loop (queue, events, cleanup)", ("_supervise",)),
]
# Only when no rule above matches anywhere in the stack: a frame in one of the agent's modules.
AGENT_MODULES = ("agent", "commands", "child", "errors", "files", "link", "reaper", "spawner", "terminal", "workers")
AGENT_FALLBACK = ("other agent code", tuple(f"({name}.py:" for name in AGENT_MODULES))
AGENT_OTHER = "other (interpreter, threading)"
SAMPLE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")


def agent_category(frames: list[str]) -> str:
    for frame in reversed(frames):
        for category, needles in AGENT_RULES:
            if any(n in frame for n in needles):
                return category
    category, needles = AGENT_FALLBACK
    if any(n in frame for frame in frames for n in needles):
        return category
    return AGENT_OTHER


def pyspy_breakdown(raw: str) -> Breakdown:
    """py-spy `--format raw` output: one `frame;frame;... COUNT` line per distinct stack
    (with --threads the first frame names the thread)."""
    samples: dict[str, float] = defaultdict(float)
    for line in raw.splitlines():
        match = SAMPLE.match(line.strip())
        if not match:
            continue
        frames = match.group("stack").split(";")
        samples[agent_category(frames)] += int(match.group("count"))
    total = sum(samples.values())
    return Breakdown(dict(samples), total, 0.0, 0.0)


# --------------------------------------------------------------------------- tables


def breakdown_rows(breakdown: Breakdown, ops: float, seconds_per_unit: float = 1.0) -> list[dict[str, Any]]:
    """Rows sorted by cost: category, ms per op, share of busy time. Idle and the
    profiler's own time are left out. `seconds_per_unit`: what one unit of the breakdown
    is worth (1 for pyinstrument's seconds, 1/rate for py-spy's samples)."""
    busy = breakdown.busy
    if busy <= 0 or ops <= 0:
        return []
    rows = []
    for category, amount in sorted(breakdown.seconds.items(), key=lambda kv: -kv[1]):
        if category in (IDLE, PROFILER):
            continue
        rows.append(
            {"category": category, "ms_per_op": amount * seconds_per_unit * 1000.0 / ops, "share": amount / busy}
        )
    return rows


def annotate_with_cpu(profile: dict[str, Any], cpu_ms_per_op: dict[str, float]) -> None:
    """The profiler inflates absolute times; its shares hold. For each section whose
    unprofiled CPU cost per op was measured, estimate each row as share × that cost."""
    for name, cost in cpu_ms_per_op.items():
        section = profile.get(name)
        if not isinstance(section, dict) or "rows" not in section:
            continue
        section["unprofiled_cpu_ms_per_op"] = cost
        for row in section["rows"]:
            if row.get("share") is not None:
                row["est_ms_per_op"] = float(row["share"]) * cost
