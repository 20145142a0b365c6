"""Commands: start (prepare / parent / child steps), supervise, stream their output, feed
their stdin, signal them.

Starting follows Supervisor's split: `prepare` checks the request and makes the stdio
pipes or pty; `start_in_parent` starts the child (through the user spawner, or the agent
itself as a fallback) and registers it with the reaper; the child step, before exec, is
child.py. Once started, `_supervise` serves the stream until the command exits.
"""

from __future__ import annotations

import errno
import fcntl
import os
import queue
import select
import shutil
import signal
import subprocess
import threading
import time

from . import ops, wire
from .child import COMMAND_OOM_SCORE_ADJ, SANDBOX_USER, WorkloadCgroup, choom_command, command_child_setup
from .errors import OpError
from .spawner import SpawnerDied, SpawnerNotAsked
from .terminal import open_pty, set_winsize
from .unanswered_spawn import StartUnknown, last_pid, started_command

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Tuple

    from .link import Stream
    from .reaper import Reaper
    from .spawner import UserSpawner
    from .workers import Workers

# After the process exits we read what is left; we stop once the pipe stays quiet this long
# (a background child may hold it open forever) or, with output still flowing, at the cap.
EXIT_DRAIN_GRACE = 0.1
EXIT_DRAIN_CAP = 5.0
PIPE_SIZE = 256 * 1024
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
RESOLVED_CACHE_MAX = 4096


class Launch:
    """A checked spawn request and the stdio made for it: our ends and the child's ends."""

    def __init__(
        self,
        argv: List[str],
        executable: str,
        env: Dict[str, str],
        cwd: str,
        as_root: bool,
        pty: bool,
        ours: "Tuple[int, Optional[int], Optional[int]]",
        theirs: "Tuple[int, int, int]",
    ) -> None:
        self.argv = argv
        self.executable = executable
        self.env = env
        self.cwd = cwd
        self.as_root = as_root
        self.pty = pty
        self.ours = ours  # (stdout, stderr, stdin); a pty's master is stdout and stdin
        self.theirs = theirs  # (stdin, stdout, stderr)

    def close_ours(self) -> None:
        for fd in set(self.ours):
            if fd is not None:
                os.close(fd)

    def close_theirs(self) -> None:
        for fd in set(self.theirs):
            os.close(fd)


class Process:
    """A command we started: its pid and our ends of its stdio (raw fds)."""

    def __init__(self, pid: int, launch: Launch, popen: "Optional[subprocess.Popen[bytes]]" = None) -> None:
        self.pid = pid
        self.argv = launch.argv
        self.out_fd, self.err_fd, self.in_fd = launch.ours
        self.pty = launch.pty
        self.popen = popen
        self.exit_code: Optional[int] = None
        self.signal: Optional[int] = None  # the signal that killed it
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


class CommandLookup:
    """Finds a command on PATH, remembering hits no writable directory can shadow later."""

    def __init__(self) -> None:
        self._resolved: Dict[Tuple[str, str], str] = {}

    def resolve(self, command: str, path_var: str) -> str:
        if "/" in command:
            if os.path.isfile(command) and os.access(command, os.X_OK):
                return command
            raise OpError("COMMAND_NOT_FOUND", "%s: no such executable" % command, command=command)
        cached = self._resolved.get((command, path_var))
        if cached is not None and os.access(cached, os.X_OK):
            return cached  # one access() instead of a walk over PATH
        found = shutil.which(command, path=path_var)
        if found is None:
            raise OpError("COMMAND_NOT_FOUND", "%s: command not found" % command, command=command)
        if _read_only_lookup(path_var, os.path.dirname(found)):
            if len(self._resolved) > RESOLVED_CACHE_MAX:
                self._resolved.clear()
            self._resolved[(command, path_var)] = found
        return found


def _read_only_lookup(path_var: str, found_dir: str) -> bool:
    """True if no writable PATH entry comes before the hit, so nothing can shadow it later."""
    for entry in path_var.split(":"):
        if not (entry in ("/bin", "/sbin") or entry.startswith("/usr/")):
            return False
        if entry == found_dir:
            return True
    return False


def make_stdio(
    pty: "Optional[Dict[str, Any]]", want_stdin: bool
) -> "Tuple[Tuple[int, Optional[int], Optional[int]], Tuple[int, int, int]]":
    """Our ends (stdout, stderr, stdin) and the child's ends (stdin, stdout, stderr)."""
    if pty:
        master_fd, slave_fd = open_pty(int(pty.get("cols", 80)), int(pty.get("rows", 24)))
        return (master_fd, None, master_fd), (slave_fd, slave_fd, slave_fd)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    for read_end in (out_r, err_r):
        try:
            fcntl.fcntl(read_end, F_SETPIPE_SZ, PIPE_SIZE)  # fewer, larger reads of busy output
        except OSError:
            pass  # the per-user pipe budget is spent: the default size works too
    stdin_ours: Optional[int] = None
    if want_stdin:
        in_r, stdin_ours = os.pipe()
    else:
        in_r = os.open(os.devnull, os.O_RDONLY)
    return (out_r, err_r, stdin_ours), (in_r, out_w, err_w)


class Commands:
    """The command operations (spawn, processes, signal, shutdown) and the running commands."""

    def __init__(self, spawner: UserSpawner, reaper: Reaper, workers: Workers, cgroup: WorkloadCgroup) -> None:
        self.spawner = spawner
        self.reaper = reaper
        self.workers = workers
        self.cgroup = cgroup
        self.lookup = CommandLookup()
        self.processes: Dict[int, Process] = {}
        self.lock = threading.Lock()

    def op_processes(self, stream: Stream, request: Dict[str, Any]) -> None:
        with self.lock:
            listed = [{"pid": p.pid, "argv": p.argv, "pty": p.pty} for p in self.processes.values()]
        stream.finish(ops.ok(processes=listed))

    def op_signal(self, stream: Stream, request: Dict[str, Any]) -> None:
        pid = int(request["pid"])
        signum = int(request.get("signal", signal.SIGTERM))
        with self.lock:
            process = self.processes.get(pid)
        if process is None:
            raise OpError("PROCESS_NOT_FOUND", "no running process with pid %d" % pid, pid=pid)
        process.signal_group(signum)
        stream.finish(ops.ok())

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
        stream.finish(ops.ok())

    # ---------------------------------------------------------------- spawn
    def op_spawn(self, stream: Stream, request: Dict[str, Any]) -> None:
        launch = self.prepare(request)
        process = self.start_in_parent(launch, lambda process: stream.inbox.put(("exited", process.exit_code)))
        with self.lock:
            self.processes[process.pid] = process
        stream.send(ops.started(process.pid))
        self._supervise(stream, process, request.get("timeout"))

    def prepare(self, request: Dict[str, Any]) -> Launch:
        """Check the request, find the executable, and make the stdio."""
        argv = [str(a) for a in request["argv"]]
        env = {str(k): str(v) for k, v in request.get("env", {}).items()}
        cwd = request.get("cwd") or "/"
        pty = request.get("pty")
        executable = self.lookup.resolve(argv[0], env.get("PATH", os.defpath))
        if not os.path.isdir(cwd):
            raise OpError("FILE_NOT_FOUND", "working directory %s does not exist" % cwd, path=cwd)
        ours, theirs = make_stdio(pty, bool(request.get("stdin")))
        return Launch(argv, executable, env, cwd, request.get("user") == "root", bool(pty), ours, theirs)

    def start_in_parent(self, launch: Launch, exited: Callable[[Process], None]) -> Process:
        """Start the child and register it with the reaper; the child's ends are closed here.
        `exited(process)` runs once, when it has exited (exit_code and signal set)."""
        holder: Dict[str, Process] = {}

        def on_exit(code: int, killed_by: int) -> None:
            process = holder["p"]  # set under the reaper's lock, before this can run
            with self.lock:
                if process.exited.is_set():
                    return  # the spawner and our own reaper may both report it
                process.exit_code = code
                process.signal = killed_by or None
                process.exited_at = time.monotonic()
                process.exited.set()
            exited(process)

        def start() -> int:
            pid, popen = self._start_child(launch)
            holder["p"] = Process(pid, launch, popen)
            self.spawner.watch(pid, on_exit)
            return pid

        argv = launch.argv
        try:
            self.reaper.spawn(start, on_exit)
        except (OSError, OpError) as exc:
            launch.close_ours()
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
            launch.close_theirs()
        return holder["p"]

    def _start_child(self, launch: Launch) -> "Tuple[int, Optional[subprocess.Popen[bytes]]]":
        """The pid of the started child: through the user spawner when it runs as the user,
        else by the agent itself (as root, or the slower way when the spawner is gone)."""
        as_user = not launch.as_root and os.getuid() == 0
        if as_user and self.spawner.alive:
            asked_at, pid_before = time.monotonic(), last_pid()
            try:
                pid = self.spawner.spawn(
                    launch.argv, launch.executable, launch.env, launch.cwd, launch.theirs, launch.pty
                )
                return pid, None
            except SpawnerNotAsked:
                pass  # start it ourselves below
            except SpawnerDied:  # e.g. OOM-killed mid-start: it may have started it
                try:
                    started = started_command(launch.theirs, self.reaper, asked_at, pid_before)
                except StartUnknown as exc:
                    raise OpError(
                        "INTERNAL",
                        "the user spawner died while starting the command, which may have run (%s)" % exc,
                    ) from None
                if started is not None:
                    return started, None
                # it never started: start it ourselves below
            except OSError as exc:  # it may have started: never start it twice
                raise OpError("INTERNAL", "the user spawner failed (%s); retry the command" % exc) from None
        credentials: Dict[str, Any] = {}
        command, program = launch.argv, launch.executable
        if as_user:  # the spawner is gone: the slower way
            credentials = {"user": SANDBOX_USER[0], "group": SANDBOX_USER[1], "extra_groups": []}
            # After the uid change and before exec, /proc/self is not ours to write:
            # choom raises the OOM score once exec has made it so.
            choom = choom_command()
            command = [*choom, "-n", COMMAND_OOM_SCORE_ADJ.decode(), "--", launch.executable, *launch.argv[1:]]
            program = choom[0]
        popen = subprocess.Popen(
            command,
            executable=program,
            env=launch.env,
            cwd=launch.cwd,
            start_new_session=True,
            close_fds=True,
            stdin=launch.theirs[0],
            stdout=launch.theirs[1],
            stderr=launch.theirs[2],
            preexec_fn=command_child_setup(self.cgroup, launch.pty),
            **credentials,
        )
        return popen.pid, popen

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
                if kind == ops.KILL:
                    process.signal_group(int(value.get("signal", signal.SIGTERM)))
                elif kind == ops.RESIZE and process.pty:
                    set_winsize(process.out_fd, int(value["cols"]), int(value["rows"]))
                elif kind == ops.EOF and writer is not None:
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
            stream.finish(ops.exited(process.exit_code, timed_out))
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
