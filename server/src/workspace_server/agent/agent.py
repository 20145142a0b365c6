"""The in-sandbox agent: PID 1 of every sandbox. This module dispatches and serves.

Standard library only, so it runs under any python3 >= 3.9 a template provides. It listens
on one Unix socket (bind-mounted from the host), serves one host connection at a time and
multiplexes many operations over it (see wire.py): spawning processes with pipes or a
pty, delivering signals, reaping every zombie in the sandbox, and file operations, all
from inside the sandbox's own root, so no path can ever name a host file.

Threads, not asyncio: every operation runs on a worker thread and blocking calls stay
simple; the socket writer is serialised by a lock.

Modules: link (the host connection and its streams), workers (threads), reaper (PID 1's
reaping), spawner (the user spawner process), commands (spawn, supervise, signal), child
(a command's steps before exec), terminal (pty), files (file operations), errors.

Inside a sandbox this directory is no installed package: run as a script, this file makes
its own directory the package `workspace_agent`, so the modules import each other
relatively both here and on the host (as `workspace_server.agent`).
"""

from __future__ import annotations

import os
import sys

if not __package__:  # run as a script (inside a sandbox)
    _here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0]) == _here:
        del sys.path[0]  # our module names must never shadow the stdlib's
    _package = type(sys)("workspace_agent")
    _package.__path__ = [_here]
    sys.modules["workspace_agent"] = _package
    __package__ = "workspace_agent"

import json
import signal
import socket
import threading

from . import files, ops, wire
from .background import Background
from .child import WorkloadCgroup
from .commands import Commands
from .errors import OpError, log, os_error
from .identity import Identity, accept_host
from .link import Link
from .ports import Ports
from .reaper import Reaper
from .spawner import UserSpawner, run_spawner
from .workers import Workers

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Optional

    from .link import Stream

    Handler = Callable[[Stream, Dict[str, Any]], None]


PROCESS_LOGS = "processes"
RUN_DIR = "/run/workspace"  # the agent's own directory on the sandbox's disk (its socket's, locally)


class Agent:
    """Runs each operation the host opens on a worker thread, and answers its errors."""

    def __init__(self, spawner: UserSpawner, cgroup: WorkloadCgroup, log_dir: str) -> None:
        self.workers = Workers()
        self.commands = Commands(spawner, Reaper(), self.workers, cgroup)
        self.background = Background(self.commands, log_dir)
        self.ports = Ports(self.workers)
        self.handlers: Dict[str, Handler] = {
            ops.HELLO: self.op_hello,
            ops.SPAWN: self.commands.op_spawn,
            ops.PROCESSES: self.background.op_processes,
            ops.SIGNAL: self.commands.op_signal,
            ops.SHUTDOWN: self.background.op_shutdown,
            ops.START: self.background.op_start,
            ops.PROCESS: self.background.op_process,
            ops.FOLLOW: self.background.op_follow,
            ops.WAIT: self.background.op_wait,
            ops.STDIN: self.background.op_stdin,
            ops.CLOSE_STDIN: self.background.op_close_stdin,
            ops.KILL_PROCESS: self.background.op_kill,
            ops.WATCH: op_watch,
            ops.CONNECT_PORT: self.ports.op_connect_port,
            ops.STAT: files.op_stat,
            ops.EXISTS: files.op_exists,
            ops.LIST: files.op_list,
            ops.MKDIR: files.op_mkdir,
            ops.REMOVE: files.op_remove,
            ops.MOVE: files.op_move,
            ops.COPY: files.op_copy,
            ops.READ: files.op_read,
            ops.WRITE: files.op_write,
            ops.UNPACK: op_unpack,
        }

    def start_operation(self, stream: Stream, request: Dict[str, Any]) -> None:
        """Hand the operation to a worker; RuntimeError if no thread can be had."""
        self.workers.submit(self.handle, stream, request)

    def handle(self, stream: Stream, request: Dict[str, Any]) -> None:
        op = request.get("op")
        handler = self.handlers.get(op) if isinstance(op, str) else None
        try:
            if handler is None:
                raise OpError("INVALID_REQUEST", "unknown operation %r" % op)
            handler(stream, request)
        except OpError as exc:
            stream.finish(ops.error(exc.code, exc.message, exc.details))
        except OSError as exc:
            err = os_error(exc, request.get("path"))
            stream.finish(ops.error(err.code, err.message, err.details))
        except Exception as exc:  # the agent must outlive any one bad request
            log("operation %r failed: %r" % (op, exc))
            stream.finish(ops.error("INTERNAL", "agent error: %s" % exc))

    def op_hello(self, stream: Stream, request: Dict[str, Any]) -> None:
        stream.finish(ops.ok(version=wire.PROTOCOL_VERSION, pid=os.getpid()))


def op_unpack(stream: Stream, request: Dict[str, Any]) -> None:
    from .unpack import op_unpack as unpack  # tarfile: loaded by the first build step that copies

    unpack(stream, request)


def op_watch(stream: Stream, request: Dict[str, Any]) -> None:
    from .watch import op_watch as watch  # ctypes: loaded by the first watch, not at start-up

    watch(stream, request)


def serve(socket_path: str, cgroup: WorkloadCgroup) -> None:
    """Serve on a Unix socket: only the host can reach it (bind-mounted from there)."""
    spawner = UserSpawner(cgroup, os.path.abspath(__file__))
    spawner.fork()  # before any thread exists
    try:
        os.unlink(socket_path)
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    listener.bind(socket_path)
    os.umask(old_umask)
    listener.listen(4)
    log("listening on %s" % socket_path)
    # Background processes' output logs: beside the socket, on the sandbox's own disk, root's only.
    _serve(listener, Agent(spawner, cgroup, os.path.join(os.path.dirname(socket_path), PROCESS_LOGS)), None)


def serve_tcp(address: str, identity: Identity, cgroup: WorkloadCgroup) -> None:
    """Serve on TCP (a pod in a cluster): every connection must first pass the handshake,
    so only the server holding this sandbox's token gets a link."""
    spawner = UserSpawner(cgroup, os.path.abspath(__file__))
    spawner.fork()  # before any thread exists
    host, _, port = address.rpartition(":")
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host.strip("[]"), int(port)))
    listener.listen(16)
    log("listening on tcp %s" % address)
    _serve(listener, Agent(spawner, cgroup, os.path.join(RUN_DIR, PROCESS_LOGS)), identity)


def _serve(listener: socket.socket, agent: Agent, identity: Optional[Identity]) -> None:
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    links: Dict[str, Optional[Link]] = {"current": None}
    lock = threading.Lock()

    def attach(conn: socket.socket) -> None:
        if identity is not None:
            if not accept_host(conn, identity):
                conn.close()
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        link = Link(conn, agent.start_operation)
        with lock:
            current = links["current"]
            if current is not None and current.alive:
                # A new host connection replaces the old one (the server restarted). Only
                # after the handshake: an unauthenticated peer cannot cut the server off.
                try:
                    current.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            links["current"] = link
        link.serve()

    while True:
        conn, _ = listener.accept()
        # Its own thread: a TCP peer's handshake may stall, never the accepting loop.
        threading.Thread(target=attach, args=(conn,), daemon=True).start()


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["--spawner"]:  # a restarted user spawner (UserSpawner._respawn)
        run_spawner(socket.socket(fileno=int(args[1])), WorkloadCgroup(int(args[2])))
        return
    cgroup = WorkloadCgroup()
    if args[:1] == ["--workload-cgroup-on-stdin"]:
        cgroup = WorkloadCgroup.from_stdin()
        args = args[1:]
    tcp = None
    if args[:1] == ["--listen-tcp"] and len(args) == 3:  # in a pod: HOST:PORT, then who we are
        tcp, identity_flag = args[1], args[2]
        kind, _, directory = identity_flag.partition("=")
        if kind not in ("--identity-dir", "--bind-dir") or not directory:
            tcp = None
        args = ["tcp"]
    if len(args) != 1 or (args == ["tcp"] and tcp is None):
        sys.stderr.write(
            "usage: agent.py [--workload-cgroup-on-stdin] SOCKET_PATH\n"
            "       agent.py --listen-tcp HOST:PORT (--identity-dir=DIR | --bind-dir=DIR)\n"
        )
        sys.exit(2)
    json.dumps({})  # warm the encoder before the first request
    sys.setswitchinterval(0.0005)  # many short-lived threads hand the GIL around; keep waits short
    if tcp is not None:
        identity = Identity(identity_dir=directory) if kind == "--identity-dir" else Identity(bind_dir=directory)
        serve_tcp(tcp, identity, cgroup)
    else:
        serve(args[0], cgroup)


if __name__ == "__main__":
    main()
