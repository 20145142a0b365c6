"""The user spawner: a helper process, running as the sandbox user, that starts that user's
commands quickly (vfork instead of a fork of the multi-threaded agent)."""

from __future__ import annotations

import errno
import json
import os
import queue
import select
import signal
import socket
import subprocess
import sys
import threading
import time

from .child import SANDBOX_USER, WorkloadCgroup, raise_oom_score
from .errors import log
from .reaper import exit_code, exit_signal
from .terminal import set_controlling_tty

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Tuple

SPAWN_MESSAGE_MAX = 60 * 1024  # larger requests take the slow path


def agent_interpreter():
    # type: () -> List[str]
    """How to start our interpreter again: in an image sandbox, the host's python through the
    host's loader (runtimes/image_root.py says so in the agent's own environment)."""
    given = os.environ.get("WORKSPACE_AGENT_INTERPRETER")
    return list(json.loads(given)) if given else [sys.executable]


SPAWNER_REPLY_TIMEOUT = 3.0
RETIRE_GRACE = 1.0  # a retired spawner that has not exited by then is killed
SPAWNER_WATCH_INTERVAL = 0.25


class SpawnerNotAsked(OSError):
    """The request never reached the user spawner, so the command surely did not start."""


class SpawnerDied(OSError):
    """The user spawner died after it was asked and before it answered: the command may or
    may not have started (unanswered_spawn.py tells which)."""


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

    def __init__(self, cgroup: WorkloadCgroup, entry_script: str) -> None:
        self.cgroup = cgroup
        self.entry_script = entry_script  # agent.py, which runs a spawner with --spawner
        self.alive = False
        self.pid = 0
        self.sock: Optional[socket.socket] = None
        self._lock = threading.Lock()
        self._next_id = 0
        self._replies: Dict[int, "queue.Queue[Dict[str, Any]]"] = {}
        self._watchers: Dict[int, Callable[[int, int], None]] = {}
        self._early_exits: Dict[int, Tuple[int, int]] = {}
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
                run_spawner(child, self.cgroup)
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
            keep = [child.fileno()] + ([self.cgroup.fd] if self.cgroup.fd >= 0 else [])
            process = subprocess.Popen(
                [
                    *agent_interpreter(),
                    "-S",
                    "-E",
                    "-B",
                    self.entry_script,
                    "--spawner",
                    str(child.fileno()),
                    str(self.cgroup.fd),
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
                reply = replies.get(timeout=SPAWNER_REPLY_TIMEOUT)
            except queue.Empty:
                # Stopped or wedged (sandbox code can SIGSTOP it: same uid): retire it. It
                # then answers what it was asked, or is killed within a second and so dies.
                self.retire()
                try:
                    reply = replies.get(timeout=RETIRE_GRACE + 1.0)
                except queue.Empty:
                    raise OSError(errno.ETIMEDOUT, "the user spawner did not answer") from None
        finally:
            with self._lock:
                self._replies.pop(request_id, None)
        if reply.get("died"):
            raise SpawnerDied(errno.EIO, "the user spawner died before it answered")
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
        time.sleep(RETIRE_GRACE)
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass

    def watch(self, pid: int, on_exit: Callable[[int, int], None]) -> None:
        with self._lock:
            early = self._early_exits.pop(pid, None)
            if early is None:
                self._watchers[pid] = on_exit
        if early is not None:
            on_exit(early[0], early[1])

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
                child, code, killed_by = int(message["exit"]), int(message["code"]), int(message.get("signal", 0))
                with self._lock:
                    watcher = self._watchers.pop(child, None)
                    if watcher is None:
                        self._early_exits[child] = (code, killed_by)
                if watcher is not None:
                    watcher(code, killed_by)
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
            replies.put({"died": True})
        sock.close()
        self._respawn()


def run_spawner(sock: socket.socket, cgroup: WorkloadCgroup) -> None:
    """The spawner's main loop (a forked child, single-threaded)."""
    # Both are inherited by every command it starts. The handle is dropped at once: the
    # spawner runs as the sandbox user, whose code could take it from us and move the agent.
    cgroup.join()
    cgroup.drop()
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
                sock.send(json.dumps({"exit": pid, "code": exit_code(status), "signal": exit_signal(status)}).encode())
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
