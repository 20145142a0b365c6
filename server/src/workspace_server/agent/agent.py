"""The in-sandbox agent: PID 1 of every sandbox.

Standard library only, so it runs under any python3 >= 3.9 a template provides. It listens
on one Unix socket (bind-mounted from the host), serves one host connection at a time and
multiplexes many operations over it (see wire.py): spawning processes with pipes or a
pty, delivering signals, reaping every zombie in the sandbox, and file operations, all
from inside the sandbox's own root, so no path can ever name a host file.

Threads, not asyncio: every operation runs in its own thread and blocking calls stay
simple; the socket writer is serialised by a lock.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import queue
import select
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import termios
import threading
import time

# Start-up time is create latency: nothing is imported that only some operations need
# (tempfile, datetime) or only the type checker needs (typing).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Tuple

    from workspace_server.agent import wire
else:  # inside a sandbox there is no package: wire.py lives beside this file
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import wire

# After the process exits we read what is left; we stop once the pipe stays quiet this long
# (a background child may hold it open forever) or, with output still flowing, at the cap.
EXIT_DRAIN_GRACE = 0.1
EXIT_DRAIN_CAP = 5.0
LIST_BATCH = 500
PIPE_SIZE = 256 * 1024
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
SANDBOX_USER = (1000, 1000)
# Commands are the OOM killer's first choice, so a memory hog dies and the agent survives.
# (Raising a score needs no privilege; lowering one would.)
COMMAND_OOM_SCORE_ADJ = b"500"
CHOOM = "/usr/bin/choom"


# A write handle on the memory cgroup the sandbox's processes live in, below the agent's own
# (the host passes it as our stdin). Writing "0" moves the writer there; the kernel checks
# the opener's (host root's) credentials, so it works after a uid change too.
WORKLOAD_CGROUP_FD = -1


def join_workload_cgroup() -> None:
    if WORKLOAD_CGROUP_FD >= 0:
        try:
            os.write(WORKLOAD_CGROUP_FD, b"0")
        except OSError:
            pass  # then the process shares the agent's cgroup: still within the sandbox's limit


def prepare_command_child() -> None:
    """Runs in a command's child before exec, when the agent itself starts it."""
    join_workload_cgroup()
    raise_oom_score()


def raise_oom_score(pid: str = "self") -> None:
    try:
        with open("/proc/%s/oom_score_adj" % pid, "wb") as f:
            f.write(COMMAND_OOM_SCORE_ADJ)
    except OSError:
        pass


ERRNO_CODES = {
    errno.ENOENT: "FILE_NOT_FOUND",
    errno.EACCES: "PERMISSION_DENIED",
    errno.EPERM: "PERMISSION_DENIED",
    errno.EROFS: "PERMISSION_DENIED",
    errno.EEXIST: "FILE_EXISTS",
    errno.ENOTDIR: "NOT_A_DIRECTORY",
    errno.EISDIR: "IS_A_DIRECTORY",
    errno.ENOTEMPTY: "DIRECTORY_NOT_EMPTY",
    errno.ENAMETOOLONG: "INVALID_REQUEST",
    errno.ELOOP: "INVALID_REQUEST",
    errno.EINVAL: "INVALID_REQUEST",
    errno.ENXIO: "INVALID_REQUEST",  # a socket, or a device with nothing behind it
    errno.ENODEV: "INVALID_REQUEST",
    errno.EOPNOTSUPP: "INVALID_REQUEST",
    errno.ENOSPC: "DISK_QUOTA_EXCEEDED",
    errno.EDQUOT: "DISK_QUOTA_EXCEEDED",
    errno.EFBIG: "DISK_QUOTA_EXCEEDED",
}


class OpError(Exception):
    """An operation failed in a way the caller should hear about."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


def os_error(exc: OSError, path: Optional[str] = None) -> OpError:
    code = ERRNO_CODES.get(exc.errno or 0, "INTERNAL")
    where = path or exc.filename or ""
    return OpError(code, "%s: %s" % (where, exc.strerror or exc), path=str(where))


# --------------------------------------------------------------------------- reaping


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
        self._watchers: Dict[int, Callable[[int], None]] = {}
        self._early_exits: Dict[int, Tuple[int, float]] = {}
        self._have_children = threading.Event()
        threading.Thread(target=self._run, name="reaper", daemon=True).start()

    def spawn(self, start: Callable[[], int], on_exit: Callable[[int], None]) -> int:
        pid = start()
        self._have_children.set()
        with self._lock:
            early = self._early_exits.pop(pid, None)
            if early is None:
                self._watchers[pid] = on_exit
        if early is not None:
            on_exit(early[0])
        return pid

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
            now = time.monotonic()
            with self._lock:
                watcher = self._watchers.pop(info.si_pid, None)
                if watcher is None:
                    self._early_exits[info.si_pid] = (code, now)
                    if len(self._early_exits) > 64:
                        self._early_exits = {
                            pid: entry
                            for pid, entry in self._early_exits.items()
                            if now - entry[1] < self.EARLY_EXIT_KEEP
                        }
            if watcher is not None:
                watcher(code)


def exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code  # killed by signal N -> 128+N


# --------------------------------------------------------------------------- user spawner

SPAWN_MESSAGE_MAX = 60 * 1024  # larger requests take the slow path
SPAWNER_REPLY_TIMEOUT = 3.0
SPAWNER_WATCH_INTERVAL = 0.25


class SpawnerNotAsked(OSError):
    """The request never reached the user spawner, so the command surely did not start."""


class UserSpawner:
    """A forked helper that runs as the sandbox user and starts that user's commands.

    Starting a command under another uid forces fork() instead of vfork() in CPython, and
    forking this multi-threaded agent is slow (every page it touches afterwards is copied).
    The helper already runs as the user, so it starts commands with vfork; it receives the
    stdio fds over a SOCK_SEQPACKET pair, answers with the pid, and reports exits. If it
    dies (code in the sandbox can kill it: same uid), its orphans are reparented to us and
    our reaper reports them, and we fall back to starting commands ourselves."""

    RESPAWN_LIMIT = 3  # per RESPAWN_WINDOW: sandbox code that keeps killing it gets the slow path
    RESPAWN_WINDOW = 60.0

    def __init__(self) -> None:
        self.alive = False
        self.pid = 0
        self.sock: Optional[socket.socket] = None
        self._lock = threading.Lock()
        self._next_id = 0
        self._replies: Dict[int, "queue.Queue[Dict[str, Any]]"] = {}
        self._watchers: Dict[int, Callable[[int], None]] = {}
        self._early_exits: Dict[int, int] = {}
        self._respawned_at: List[float] = []

    def fork(self) -> None:
        """Must run before the agent starts any thread."""
        if os.getuid() != 0:
            return
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            parent.close()
            try:
                run_spawner(child)
            finally:
                os._exit(0)
        child.close()
        self._attach(parent, pid, ready=True)  # requests simply queue until it reads them

    def _attach(self, sock: socket.socket, pid: int, ready: bool) -> None:
        self.sock = sock
        self.pid = pid
        self.alive = ready
        threading.Thread(target=self._read, args=(sock, pid), name="spawner", daemon=True).start()
        threading.Thread(target=self._watchdog, args=(pid,), name="spawner-watchdog", daemon=True).start()

    def _respawn(self) -> None:
        """A new spawner after the last one died (the OOM killer may pick it: it lives among
        the commands). The agent is multi-threaded now, so this one is a fresh interpreter,
        not a fork; until it is up, commands take the slow path. It starts as root and drops
        to the user itself, like the first one, so it is not dumpable: user code can neither
        trace it nor take its link to us."""
        now = time.monotonic()
        self._respawned_at = [t for t in self._respawned_at if now - t < self.RESPAWN_WINDOW]
        if len(self._respawned_at) >= self.RESPAWN_LIMIT or os.getuid() != 0:
            return
        self._respawned_at.append(now)
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            keep = [child.fileno()] + ([WORKLOAD_CGROUP_FD] if WORKLOAD_CGROUP_FD >= 0 else [])
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-S",
                    "-E",
                    "-B",
                    os.path.abspath(__file__),
                    "--spawner",
                    str(child.fileno()),
                    str(WORKLOAD_CGROUP_FD),
                ],
                pass_fds=keep,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, RuntimeError) as exc:
            log("could not restart the user spawner: %s" % exc)
            parent.close()
            return
        finally:
            child.close()
        process.returncode = 0  # our Reaper reaps it: Popen must never wait on (a reused) pid
        # Used once it says it is ready: a sandbox out of memory may never let it get there.
        self._attach(parent, process.pid, ready=False)

    def _watchdog(self, pid: int) -> None:
        """Sandbox code can SIGSTOP the spawner (same uid); a stopped spawner would neither
        start commands nor report exits. Retire it: its children then come to us."""
        while self.pid == pid:
            time.sleep(SPAWNER_WATCH_INTERVAL)
            try:
                with open("/proc/%d/stat" % pid, "rb") as f:
                    state = f.read().rsplit(b")", 1)[1].split()[0]
            except (OSError, IndexError):
                return
            if state in (b"T", b"t", b"Z", b"X") and self.pid == pid and self.alive:
                self.retire()

    def spawn(
        self, argv: List[str], executable: str, env: Dict[str, str], cwd: str, fds: Tuple[int, int, int], pty: bool
    ) -> int:
        with self._lock:
            self._next_id += 1
            request_id = self._next_id
            replies: "queue.Queue[Dict[str, Any]]" = queue.Queue(1)
            self._replies[request_id] = replies
        request = json.dumps(
            {"id": request_id, "argv": argv, "executable": executable, "env": env, "cwd": cwd, "pty": pty}
        ).encode()
        try:
            if len(request) > SPAWN_MESSAGE_MAX or self.sock is None:
                raise SpawnerNotAsked(errno.EMSGSIZE, "request too large for the spawner")
            try:
                socket.send_fds(self.sock, [request], list(fds))
            except OSError as exc:  # it died (e.g. OOM-killed) just now: it never got this one
                raise SpawnerNotAsked(exc.errno, exc.strerror) from None
            try:
                reply = replies.get(timeout=SPAWNER_REPLY_TIMEOUT + 1.5)  # retiring takes up to 1 s
            except queue.Empty:
                # Stopped or wedged (sandbox code can SIGSTOP it: same uid): retire it.
                self.retire()
                raise OSError(errno.ETIMEDOUT, "the user spawner did not answer") from None
        finally:
            with self._lock:
                self._replies.pop(request_id, None)
        if "pid" not in reply:
            raise OSError(int(reply.get("errno", errno.EIO)), str(reply.get("strerror", "spawner failed")))
        return int(reply["pid"])

    def retire(self) -> None:
        """Stop using the spawner; its children are reparented to us when it exits.

        It is woken (SIGCONT) and told we are done (EOF) rather than killed, so requests
        already sent still get their answer and no command is lost or started twice; if it
        will not finish within a second, it is killed."""
        if not self.alive:
            return
        self.alive = False
        log("retiring the user spawner; starting user commands directly")
        try:
            if self.sock is not None:
                self.sock.shutdown(socket.SHUT_WR)
            os.kill(self.pid, signal.SIGCONT)
        except OSError:
            pass
        threading.Thread(target=self._kill_later, args=(self.pid,), daemon=True).start()

    def _kill_later(self, pid: int) -> None:
        time.sleep(1.0)
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass

    def watch(self, pid: int, on_exit: Callable[[int], None]) -> None:
        with self._lock:
            code = self._early_exits.pop(pid, None)
            if code is None:
                self._watchers[pid] = on_exit
        if code is not None:
            on_exit(code)

    def _read(self, sock: socket.socket, pid: int) -> None:
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            message = json.loads(data)
            if "ready" in message:
                if self.pid == pid and not self.alive:
                    log("user spawner restarted")
                    self.alive = True
            elif "exit" in message:
                pid, code = int(message["exit"]), int(message["code"])
                with self._lock:
                    watcher = self._watchers.pop(pid, None)
                    if watcher is None:
                        self._early_exits[pid] = code
                if watcher is not None:
                    watcher(code)
            else:
                with self._lock:
                    replies = self._replies.get(int(message["id"]))
                if replies is not None:
                    replies.put(message)
        log("user spawner is gone; starting user commands directly")
        self.alive = False
        with self._lock:
            pending = list(self._replies.values())
        for replies in pending:
            replies.put({"errno": errno.EIO, "strerror": "the user spawner exited"})
        sock.close()
        self._respawn()


def run_spawner(sock: socket.socket) -> None:
    """The spawner's main loop (a forked child, single-threaded)."""
    # Both are inherited by every command it starts. The handle is dropped at once: the
    # spawner runs as the sandbox user, whose code could take it from us and move the agent.
    global WORKLOAD_CGROUP_FD
    join_workload_cgroup()
    if WORKLOAD_CGROUP_FD >= 0:
        os.close(WORKLOAD_CGROUP_FD)
        WORKLOAD_CGROUP_FD = -1
    raise_oom_score()
    if os.getuid() == 0:  # not in unit tests run as a normal user
        os.setgroups([])
        os.setgid(SANDBOX_USER[1])
        os.setuid(SANDBOX_USER[0])
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    children: Dict[int, "subprocess.Popen[bytes]"] = {}
    sock.send(b'{"ready": true}')
    while True:
        readable, _, _ = select.select([sock.fileno(), wake_r], [], [])
        if wake_r in readable:
            os.read(wake_r, 4096)
            while True:
                try:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid == 0:
                    break
                child = children.pop(pid, None)
                if child is not None:
                    child.returncode = exit_code(status)
                sock.send(json.dumps({"exit": pid, "code": exit_code(status)}).encode())
        if sock.fileno() in readable:
            data, fds, _, _ = socket.recv_fds(sock, 1 << 20, 3)
            if not data:
                return  # the agent is gone
            request = json.loads(data)
            try:
                popen = subprocess.Popen(
                    request["argv"],
                    executable=request["executable"],
                    env=request["env"],
                    cwd=request["cwd"],
                    stdin=fds[0],
                    stdout=fds[1],
                    stderr=fds[2],
                    start_new_session=True,
                    close_fds=True,
                    preexec_fn=set_controlling_tty if request["pty"] else None,
                )
                children[popen.pid] = popen
                reply: Dict[str, Any] = {"id": request["id"], "pid": popen.pid}
            except OSError as exc:
                reply = {"id": request["id"], "errno": exc.errno, "strerror": exc.strerror}
            finally:
                for fd in set(fds):
                    os.close(fd)
            sock.send(json.dumps(reply).encode())


# --------------------------------------------------------------------------- threads


class Workers:
    """Reusable threads for operations and output pumps.

    Starting a Python thread is a round trip between threads (start() waits until the new
    one runs), twice per command; waking an idle worker is half of that. Workers idle
    beyond IDLE_MAX exit, so a burst leaves no crowd behind."""

    IDLE_MAX = 4  # each counts against the sandbox's pids limit

    def __init__(self) -> None:
        self._tasks: "queue.SimpleQueue[Tuple[Callable[..., None], Tuple[Any, ...]]]" = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0

    def submit(self, function: "Callable[..., None]", *args: Any) -> None:
        """Run function(*args) on a worker; RuntimeError if no thread can be had (pids limit)."""
        with self._lock:
            if self._idle:
                self._idle -= 1  # exactly one idle worker is, or will be, waiting on get()
                self._tasks.put((function, args))
                return
        threading.Thread(target=self._work, args=(function, args), daemon=True).start()

    def _work(self, function: "Callable[..., None]", args: Tuple[Any, ...]) -> None:
        while True:
            try:
                function(*args)
            except Exception as exc:  # a worker outlives any one task
                log("worker task failed: %r" % (exc,))
            with self._lock:
                if self._idle >= self.IDLE_MAX:
                    return
                self._idle += 1
            function, args = self._tasks.get()


# --------------------------------------------------------------------------- link


class Stream:
    """One logical stream on the host link."""

    def __init__(self, link: "Link", stream_id: int) -> None:
        self.link = link
        self.id = stream_id
        self.inbox: "queue.Queue[Tuple[str, Any]]" = queue.Queue()
        self._credit = wire.WINDOW
        self._cond = threading.Condition()
        self.closed = False

    # sending ------------------------------------------------------------
    def send(self, message: Dict[str, Any]) -> None:
        self.link.send(wire.encode_json(self.id, wire.MSG, message))

    def send_data(self, kind: int, data: bytes) -> bool:
        """Send data within the flow-control window; False once the stream is gone."""
        view = memoryview(data)
        while view:
            with self._cond:
                while self._credit <= 0 and not self.closed:
                    self._cond.wait()
                if self.closed:
                    return False
                size = min(self._credit, len(view), wire.CHUNK)
                self._credit -= size
            self.link.send(wire.encode(self.id, kind, bytes(view[:size])))
            view = view[size:]
        return True

    def finish(self, message: Optional[Dict[str, Any]] = None) -> None:
        close = wire.encode(self.id, wire.CLOSE)
        if message is not None:  # one write for both frames
            close = wire.encode_json(self.id, wire.MSG, message) + close
        self.link.send(close)
        self.forget()

    def forget(self) -> None:
        """Drop the stream from the link's table (later frames for it are ignored)."""
        self.link.forget(self.id)

    # receiving ------------------------------------------------------------
    def add_credit(self, amount: int) -> None:
        with self._cond:
            self._credit += amount
            self._cond.notify_all()

    def grant(self, amount: int) -> None:
        self.link.send(wire.encode_credit(self.id, amount))

    def peer_closed(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()
        self.inbox.put(("closed", None))


class Link:
    """The host connection: a reader loop that dispatches frames to streams."""

    def __init__(self, agent: "Agent", sock: socket.socket) -> None:
        self.agent = agent
        self.sock = sock
        self._send_lock = threading.Lock()
        self._streams: Dict[int, Stream] = {}
        self._streams_lock = threading.Lock()
        self.alive = True

    def send(self, frame: bytes) -> None:
        try:
            with self._send_lock:
                self.sock.sendall(frame)
        except OSError:
            self.alive = False

    def forget(self, stream_id: int) -> None:
        with self._streams_lock:
            self._streams.pop(stream_id, None)

    def _recv_exact(self, size: int) -> bytes:
        chunks = []
        while size:
            chunk = self.sock.recv(min(size, 1 << 20))
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def serve(self) -> None:
        try:
            while True:
                length, stream_id, kind = wire.decode_header(self._recv_exact(wire.HEADER.size))
                payload = self._recv_exact(length) if length else b""
                self._dispatch(stream_id, kind, payload)
        except (EOFError, OSError, wire.ProtocolError) as exc:
            log("host link closed: %s" % (exc or type(exc).__name__))
        finally:
            self.alive = False
            with self._streams_lock:
                streams = list(self._streams.values())
                self._streams.clear()
            for stream in streams:
                stream.peer_closed()
            try:
                self.sock.close()
            except OSError:
                pass

    def _dispatch(self, stream_id: int, kind: int, payload: bytes) -> None:
        if kind == wire.OPEN:
            stream = Stream(self, stream_id)
            with self._streams_lock:
                self._streams[stream_id] = stream
            request = wire.decode_json(payload)
            try:
                self.agent.workers.submit(self.agent.handle, stream, request)
            except RuntimeError:
                # No thread to be had: the pids limit is full (a fork bomb). Refuse this one
                # operation; the link and the sandbox carry on.
                stream.finish(
                    wire.error_message(
                        "RESOURCE_EXHAUSTED", "the sandbox reached its pids limit; kill some processes and retry"
                    )
                )
            return
        with self._streams_lock:
            stream_or_none = self._streams.get(stream_id)
        if stream_or_none is None:
            return  # late frame for a finished stream
        if kind == wire.MSG:
            stream_or_none.inbox.put(("msg", wire.decode_json(payload)))
        elif kind == wire.IN:
            stream_or_none.inbox.put(("data", payload))
        elif kind == wire.CREDIT:
            stream_or_none.add_credit(wire.decode_credit(payload))
        elif kind == wire.CLOSE:
            stream_or_none.peer_closed()
        else:
            raise wire.ProtocolError("unexpected frame kind %d from host" % kind)


# --------------------------------------------------------------------------- processes


class Process:
    """A command we started: its pid and our ends of its stdio (raw fds)."""

    def __init__(
        self,
        pid: int,
        argv: List[str],
        out_fd: int,
        err_fd: Optional[int],
        in_fd: Optional[int],
        pty: bool,
        popen: "Optional[subprocess.Popen[bytes]]" = None,
    ) -> None:
        self.pid = pid
        self.argv = argv
        self.out_fd = out_fd
        self.err_fd = err_fd
        self.in_fd = in_fd
        self.pty = pty
        self.popen = popen
        self.exit_code: Optional[int] = None
        self.exited = threading.Event()
        self.exited_at = 0.0

    def signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def close_fds(self) -> None:
        for fd in {self.out_fd, self.err_fd, self.in_fd}:
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        if self.popen is not None:
            self.popen.returncode = self.exit_code  # keeps Popen from waiting on a reaped pid


_resolved: Dict[Tuple[str, str], str] = {}


def resolve_command(command: str, path_var: str) -> str:
    if "/" in command:
        if os.path.isfile(command) and os.access(command, os.X_OK):
            return command
        raise OpError("COMMAND_NOT_FOUND", "%s: no such executable" % command, command=command)
    cached = _resolved.get((command, path_var))
    if cached is not None and os.access(cached, os.X_OK):
        return cached  # one access() instead of a walk over PATH
    found = shutil.which(command, path=path_var)
    if found is None:
        raise OpError("COMMAND_NOT_FOUND", "%s: command not found" % command, command=command)
    if _read_only_lookup(path_var, os.path.dirname(found)):
        if len(_resolved) > 4096:
            _resolved.clear()
        _resolved[(command, path_var)] = found
    return found


def _read_only_lookup(path_var: str, found_dir: str) -> bool:
    """True if no writable PATH entry comes before the hit, so nothing can shadow it later."""
    for entry in path_var.split(":"):
        if not (entry in ("/bin", "/sbin") or entry.startswith("/usr/")):
            return False
        if entry == found_dir:
            return True
    return False


def set_controlling_tty() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def prepare_pty_child() -> None:
    prepare_command_child()
    set_controlling_tty()


def set_winsize(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


# --------------------------------------------------------------------------- files


def iso_time(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(timestamp)) + ".%06dZ" % (timestamp % 1 * 1e6)


def file_type(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISREG(mode):
        return "file"
    return "other"


def file_info(path: str, st: Optional[os.stat_result] = None) -> Dict[str, Any]:
    if st is None:
        st = os.lstat(path)
    name = os.path.basename(path.rstrip("/")) or "/"
    return {
        "name": name,
        "path": path,
        "type": file_type(st.st_mode),
        "size": st.st_size,
        "modified_at": iso_time(st.st_mtime),
        "mode": "%04o" % stat.S_IMODE(st.st_mode),
    }


def check_regular(st: os.stat_result, path: str) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise OpError("IS_A_DIRECTORY", "%s is a directory" % path, path=path)
    if not stat.S_ISREG(st.st_mode):
        raise OpError("INVALID_REQUEST", "%s is not a regular file (%s)" % (path, file_type(st.st_mode)), path=path)


def owner_of(path: str) -> Tuple[int, int]:
    st = os.stat(path)
    return st.st_uid, st.st_gid


def make_dirs(path: str) -> None:
    """mkdir -p, each new directory owned like the directory that holds it."""
    missing = []
    current = path
    while not os.path.isdir(current):
        if os.path.lexists(current):
            raise OpError("NOT_A_DIRECTORY", "%s is not a directory" % current, path=current)
        missing.append(current)
        current = os.path.dirname(current)
    uid, gid = owner_of(current)
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o755)
        except FileExistsError:
            continue
        os.lchown(directory, uid, gid)


def chown_tree(path: str, uid: int, gid: int) -> None:
    os.lchown(path, uid, gid)
    if os.path.isdir(path) and not os.path.islink(path):
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                os.lchown(os.path.join(root, name), uid, gid)


def target_for(source: str, destination: str) -> str:
    """Like cp and mv: an existing directory as destination receives the source inside it."""
    if os.path.isdir(destination) and not os.path.islink(destination):
        return os.path.join(destination, os.path.basename(source.rstrip("/")))
    return destination


# --------------------------------------------------------------------------- agent


def log(message: str) -> None:
    sys.stderr.write("agent: %s\n" % message)
    sys.stderr.flush()


class Agent:
    def __init__(self, spawner: UserSpawner) -> None:
        self.spawner = spawner
        self.reaper = Reaper()
        self.workers = Workers()
        self.processes: Dict[int, Process] = {}
        self.lock = threading.Lock()

    def handle(self, stream: Stream, request: Dict[str, Any]) -> None:
        op = request.get("op")
        handler = getattr(self, "op_%s" % op, None) if isinstance(op, str) else None
        try:
            if handler is None:
                raise OpError("INVALID_REQUEST", "unknown operation %r" % op)
            handler(stream, request)
        except OpError as exc:
            stream.finish(wire.error_message(exc.code, exc.message, exc.details))
        except OSError as exc:
            err = os_error(exc, request.get("path"))
            stream.finish(wire.error_message(err.code, err.message, err.details))
        except Exception as exc:  # the agent must outlive any one bad request
            log("operation %r failed: %r" % (op, exc))
            stream.finish(wire.error_message("INTERNAL", "agent error: %s" % exc))

    # ---------------------------------------------------------------- misc
    def op_hello(self, stream: Stream, request: Dict[str, Any]) -> None:
        stream.finish({"type": "ok", "version": wire.PROTOCOL_VERSION, "pid": os.getpid()})

    def op_processes(self, stream: Stream, request: Dict[str, Any]) -> None:
        with self.lock:
            listed = [{"pid": p.pid, "argv": p.argv, "pty": p.pty} for p in self.processes.values()]
        stream.finish({"type": "ok", "processes": listed})

    def op_signal(self, stream: Stream, request: Dict[str, Any]) -> None:
        pid = int(request["pid"])
        signum = int(request.get("signal", signal.SIGTERM))
        with self.lock:
            process = self.processes.get(pid)
        if process is None:
            raise OpError("PROCESS_NOT_FOUND", "no running process with pid %d" % pid, pid=pid)
        process.signal_group(signum)
        stream.finish({"type": "ok"})

    def op_shutdown(self, stream: Stream, request: Dict[str, Any]) -> None:
        """Terminate every process group; used by a graceful delete."""
        grace = float(request.get("grace", 2.0))
        with self.lock:
            processes = list(self.processes.values())
        for process in processes:
            process.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in processes:
            process.exited.wait(max(0.0, deadline - time.monotonic()))
        stream.finish({"type": "ok"})

    # ---------------------------------------------------------------- spawn
    def op_spawn(self, stream: Stream, request: Dict[str, Any]) -> None:
        argv = [str(a) for a in request["argv"]]
        env = {str(k): str(v) for k, v in request.get("env", {}).items()}
        cwd = request.get("cwd") or "/"
        as_root = request.get("user") == "root"
        pty = request.get("pty")
        want_stdin = bool(request.get("stdin"))

        executable = resolve_command(argv[0], env.get("PATH", os.defpath))
        if not os.path.isdir(cwd):
            raise OpError("FILE_NOT_FOUND", "working directory %s does not exist" % cwd, path=cwd)

        # Our ends and the child's ends of its stdio.
        if pty:
            master_fd, slave_fd = os.openpty()
            set_winsize(slave_fd, int(pty.get("cols", 80)), int(pty.get("rows", 24)))
            ours: Tuple[int, Optional[int], Optional[int]] = (master_fd, None, master_fd)
            theirs = (slave_fd, slave_fd, slave_fd)
        else:
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            for read_end in (out_r, err_r):
                try:
                    fcntl.fcntl(read_end, F_SETPIPE_SZ, PIPE_SIZE)  # fewer, larger reads of busy output
                except OSError:
                    pass  # the per-user pipe budget is spent: the default size works too
            if want_stdin:
                in_r, in_w = os.pipe()
                stdin_ours: Optional[int] = in_w
            else:
                in_r, stdin_ours = os.open(os.devnull, os.O_RDONLY), None
            ours = (out_r, err_r, stdin_ours)
            theirs = (in_r, out_w, err_w)
        holder: Dict[str, Process] = {}

        def on_exit(code: int) -> None:
            process = holder["p"]  # set under the reaper's lock, before this can run
            if process.exited.is_set():
                return  # the spawner and our own reaper may both report it
            process.exit_code = code
            process.exited_at = time.monotonic()
            process.exited.set()
            stream.inbox.put(("exited", code))

        def start() -> int:
            popen = None
            pid = 0
            if not as_root and os.getuid() == 0 and self.spawner.alive:
                try:
                    pid = self.spawner.spawn(argv, executable, env, cwd, theirs, bool(pty))
                except SpawnerNotAsked:
                    pass  # start it ourselves below
                except OSError as exc:  # it may have started: never start it twice
                    raise OpError("INTERNAL", "the user spawner failed (%s); retry the command" % exc) from None
            if not pid:
                credentials: Dict[str, Any] = {}
                command, program = argv, executable
                if not as_root and os.getuid() == 0:  # the spawner is gone: the slower way
                    credentials = {"user": SANDBOX_USER[0], "group": SANDBOX_USER[1], "extra_groups": []}
                    # After the uid change and before exec, /proc/self is not ours to write:
                    # choom raises the OOM score once exec has made it so.
                    command = [CHOOM, "-n", COMMAND_OOM_SCORE_ADJ.decode(), "--", executable, *argv[1:]]
                    program = CHOOM
                popen = subprocess.Popen(
                    command,
                    executable=program,
                    env=env,
                    cwd=cwd,
                    start_new_session=True,
                    close_fds=True,
                    stdin=theirs[0],
                    stdout=theirs[1],
                    stderr=theirs[2],
                    preexec_fn=prepare_pty_child if pty else prepare_command_child,
                    **credentials,
                )
                pid = popen.pid
            holder["p"] = Process(pid, argv, ours[0], ours[1], ours[2], bool(pty), popen)
            self.spawner.watch(pid, on_exit)
            return pid

        try:
            self.reaper.spawn(start, on_exit)
        except (OSError, OpError) as exc:
            for fd in set(ours):
                if fd is not None:
                    os.close(fd)
            if isinstance(exc, OpError):
                raise
            if exc.errno in (errno.EACCES, errno.EPERM):
                raise OpError("PERMISSION_DENIED", "%s: %s" % (argv[0], exc.strerror), command=argv[0]) from None
            raise OpError(
                "COMMAND_NOT_FOUND" if exc.errno == errno.ENOENT else "INTERNAL",
                "%s: %s" % (argv[0], exc.strerror),
                command=argv[0],
            ) from None
        finally:
            for fd in set(theirs):
                os.close(fd)
        process = holder["p"]
        with self.lock:
            self.processes[process.pid] = process
        stream.send({"type": "started", "pid": process.pid})
        self._supervise(stream, process, request.get("timeout"))

    def _supervise(self, stream: Stream, process: Process, timeout: Optional[float]) -> None:
        outputs = {process.out_fd: wire.OUT}
        if process.err_fd is not None:
            outputs[process.err_fd] = wire.ERR
        reader = self._start_reader(stream, process, outputs)
        writer = None
        if process.in_fd is not None:
            # A pipe is closed at "eof"; a pty's master stays open for its output.
            writer = StdinWriter(stream, process.in_fd, None if process.pty else process)

        timed_out = False
        timer: Optional[threading.Timer] = None
        if timeout:

            def expire() -> None:
                nonlocal timed_out
                timed_out = True
                process.signal_group(signal.SIGKILL)

            timer = threading.Timer(float(timeout), expire)
            timer.daemon = True
            timer.start()

        while not process.exited.is_set():
            what, value = stream.inbox.get()
            if what == "exited":
                break
            if what == "closed":  # the caller went away: the process goes with it
                process.signal_group(signal.SIGKILL)
            elif what == "data" and writer is not None:
                writer.put(value)
            elif what == "msg":
                kind = value.get("type")
                if kind == "kill":
                    process.signal_group(int(value.get("signal", signal.SIGTERM)))
                elif kind == "resize" and process.pty:
                    set_winsize(process.out_fd, int(value["cols"]), int(value["rows"]))
                elif kind == "eof" and writer is not None:
                    writer.put(None)
        if timer is not None:
            timer.cancel()
        reader.wait()
        if writer is not None:
            writer.put(None)
            writer.thread.join(1.0)
        process.close_fds()
        with self.lock:
            self.processes.pop(process.pid, None)
        if not stream.closed:
            stream.finish({"type": "exit", "code": process.exit_code, "timed_out": timed_out})
        else:
            stream.forget()

    def _start_reader(self, stream: Stream, process: Process, outputs: Dict[int, int]) -> threading.Event:
        """One worker pumps all of a command's output fds (fd -> frame kind) to the stream;
        the event is set when it is done."""
        done = threading.Event()

        def pump() -> None:
            try:
                pump_outputs()
            finally:
                done.set()

        def pump_outputs() -> None:
            poller = select.poll()
            for fd in outputs:
                poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
            open_fds = len(outputs)
            while open_fds:
                if process.exited.is_set():
                    since_exit = time.monotonic() - process.exited_at
                    # poll(0) still reports data already in the pipe: a late-scheduled reader loses nothing.
                    quiet_for = max(0.0, EXIT_DRAIN_GRACE - since_exit) * 1000
                    ready = poller.poll(quiet_for) if since_exit <= EXIT_DRAIN_CAP else []
                    if not ready:
                        break
                else:
                    ready = poller.poll(100)  # wakes now and then to check whether the process exited
                for fd, _ in ready:
                    try:
                        data = os.read(fd, wire.CHUNK)
                    except BlockingIOError:
                        continue
                    except OSError:  # EIO: the pty's other side is gone
                        data = b""
                    if not data:
                        poller.unregister(fd)
                        open_fds -= 1
                        continue
                    if not stream.send_data(outputs[fd], data):
                        return

        self.workers.submit(pump)
        return done

    # ---------------------------------------------------------------- files
    def op_stat(self, stream: Stream, request: Dict[str, Any]) -> None:
        stream.finish({"type": "ok", "info": file_info(request["path"])})

    def op_exists(self, stream: Stream, request: Dict[str, Any]) -> None:
        stream.finish({"type": "ok", "exists": os.path.lexists(request["path"])})

    def op_list(self, stream: Stream, request: Dict[str, Any]) -> None:
        path = request["path"]
        batch: List[Dict[str, Any]] = []
        with os.scandir(path) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                try:
                    batch.append(file_info(entry.path, entry.stat(follow_symlinks=False)))
                except FileNotFoundError:
                    continue  # removed while we listed
                if len(batch) >= LIST_BATCH:
                    stream.send({"type": "entries", "files": batch})
                    batch = []
        stream.finish({"type": "ok", "files": batch})

    def op_mkdir(self, stream: Stream, request: Dict[str, Any]) -> None:
        path = request["path"]
        if request.get("recursive"):
            make_dirs(path)
        else:
            os.mkdir(path, 0o755)
            uid, gid = owner_of(os.path.dirname(path) or "/")
            os.lchown(path, uid, gid)
        stream.finish({"type": "ok", "info": file_info(path)})

    def op_remove(self, stream: Stream, request: Dict[str, Any]) -> None:
        path = request["path"]
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode):
            if request.get("recursive"):
                shutil.rmtree(path)
            else:
                os.rmdir(path)
        else:
            os.unlink(path)
        stream.finish({"type": "ok"})

    def op_move(self, stream: Stream, request: Dict[str, Any]) -> None:
        source = request["source"]
        os.lstat(source)
        destination = target_for(source, request["destination"])
        try:
            os.rename(source, destination)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            shutil.move(source, destination)
        stream.finish({"type": "ok", "info": file_info(destination)})

    def op_copy(self, stream: Stream, request: Dict[str, Any]) -> None:
        source = request["source"]
        st = os.lstat(source)
        destination = target_for(source, request["destination"])
        uid, gid = owner_of(os.path.dirname(destination) or "/")
        if stat.S_ISDIR(st.st_mode):
            if not request.get("recursive", True):
                raise OpError("IS_A_DIRECTORY", "%s is a directory" % source, path=source)
            shutil.copytree(source, destination, symlinks=True)
        elif stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
            shutil.copy2(source, destination, follow_symlinks=False)
        else:
            raise OpError("INVALID_REQUEST", "%s is not a regular file" % source, path=source)
        chown_tree(destination, uid, gid)
        stream.finish({"type": "ok", "info": file_info(destination)})

    def op_read(self, stream: Stream, request: Dict[str, Any]) -> None:
        path = request["path"]
        check_regular(os.stat(path), path)  # sockets, devices and fifos: refused before open
        # O_NONBLOCK: should a fifo appear in the meantime, opening it must not hang.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            check_regular(st, path)
            stream.send({"type": "ok", "size": st.st_size})
            while True:
                data = os.read(fd, wire.CHUNK)
                if not data or not stream.send_data(wire.OUT, data):
                    break
        finally:
            os.close(fd)
        if not stream.closed:
            stream.finish({"type": "end"})
        else:
            stream.forget()

    def op_write(self, stream: Stream, request: Dict[str, Any]) -> None:
        path = request["path"]
        parent = os.path.dirname(path) or "/"
        make_dirs(parent)
        if os.path.isdir(path):
            raise OpError("IS_A_DIRECTORY", "%s is a directory" % path, path=path)
        if os.path.lexists(path) and not stat.S_ISREG(os.stat(path).st_mode if os.path.exists(path) else 0o100000):
            raise OpError("INVALID_REQUEST", "%s is not a regular file" % path, path=path)
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except OSError:
            mode = 0o644
        uid, gid = owner_of(parent)
        import tempfile

        fd, temp_path = tempfile.mkstemp(prefix=".ws-upload-", dir=parent)
        completed = False
        try:
            stream.send({"type": "ready"})
            while True:
                what, value = stream.inbox.get()
                if what == "data":
                    view = memoryview(value)
                    while view:
                        written = os.write(fd, view)
                        view = view[written:]
                    stream.grant(len(value))
                elif what == "msg" and value.get("type") == "eof":
                    break
                elif what == "closed":
                    return
            os.fchmod(fd, mode)
            os.fchown(fd, uid, gid)
            os.close(fd)
            fd = -1
            os.rename(temp_path, path)
            completed = True
        finally:
            if fd >= 0:
                os.close(fd)
            if not completed:
                try:
                    os.unlink(temp_path)
                except OSError:
                    pass
        stream.finish({"type": "ok", "info": file_info(path)})


class StdinWriter:
    """Feeds a process's stdin from its own thread, so a process that never reads its
    stdin cannot block the stream's control loop (kill, resize)."""

    def __init__(self, stream: Stream, fd: int, owner: Optional[Process]) -> None:
        self.stream = stream
        self.fd = fd
        self.owner = owner  # set for a pipe: "eof" closes it
        self.queue: "queue.Queue[Optional[bytes]]" = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def put(self, data: Optional[bytes]) -> None:
        self.queue.put(data)

    def _run(self) -> None:
        while True:
            data = self.queue.get()
            if data is None:
                break
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self.fd, view) :]
            except OSError:
                pass  # the process closed its stdin; later data is dropped
            self.stream.grant(len(data))
        if self.owner is not None and self.owner.in_fd is not None:
            try:
                os.close(self.owner.in_fd)
            except OSError:
                pass
            self.owner.in_fd = None


def serve(socket_path: str) -> None:
    spawner = UserSpawner()
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
    agent = Agent(spawner)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    log("listening on %s" % socket_path)
    current: Optional[Link] = None
    while True:
        conn, _ = listener.accept()
        if current is not None and current.alive:
            # A new host connection replaces the old one (the server restarted).
            try:
                current.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
        current = Link(agent, conn)
        threading.Thread(target=current.serve, daemon=True).start()


def take_workload_cgroup_from_stdin() -> None:
    global WORKLOAD_CGROUP_FD
    WORKLOAD_CGROUP_FD = os.dup(0)  # not inheritable: commands never see it
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["--spawner"]:  # a restarted user spawner (UserSpawner._respawn)
        global WORKLOAD_CGROUP_FD
        WORKLOAD_CGROUP_FD = int(args[2])
        run_spawner(socket.socket(fileno=int(args[1])))
        return
    if args[:1] == ["--workload-cgroup-on-stdin"]:
        take_workload_cgroup_from_stdin()
        args = args[1:]
    if len(args) != 1:
        sys.stderr.write("usage: agent.py [--workload-cgroup-on-stdin] SOCKET_PATH\n")
        sys.exit(2)
    json.dumps({})  # warm the encoder before the first request
    sys.setswitchinterval(0.0005)  # many short-lived threads hand the GIL around; keep waits short
    serve(args[0])


if __name__ == "__main__":
    main()
