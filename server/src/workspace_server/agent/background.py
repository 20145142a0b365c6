"""Background processes: started detached from any stream, their output kept on disk.

A background process belongs to the agent, not to the host connection that started it: it
runs until it exits or is killed, whoever comes and goes. One pump thread reads the output
of every background process (epoll; no thread per process, so a thousand of them stay within
the pids limit) into each one's OutputLog, whatever its followers do; a follower is an
operation that reads a log from an offset at its own pace and so never slows the process
or the other followers. After the exit, the status and the log are kept `retention`
seconds (and for the RETAIN_EXITED newest exits at most).
"""

from __future__ import annotations

import errno
import heapq
import os
import select
import shutil
import signal
import threading
import time

from . import ops, wire
from .commands import EXIT_DRAIN_CAP, EXIT_DRAIN_GRACE
from .errors import OpError, log
from .files import iso_time
from .output_log import MAX_CAPACITY, MIN_CAPACITY, STDERR, STDOUT, Dropped, OutputLog

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Set, Tuple, Union

    from .commands import Commands, Process
    from .link import Stream

RETAIN_EXITED = 256
POLL_SLICE = 0.25  # how often a blocked operation checks whether its caller left
SWEEP_INTERVAL = 1.0
TAG_MAX = 64


class Job:
    """A background process, its output log and what is known about its end."""

    def __init__(
        self, process: Process, tag: Optional[str], cwd: str, user: str, output: OutputLog, retention: float
    ) -> None:
        self.process = process
        self.pid = process.pid
        self.tag = tag
        self.cwd = cwd
        self.user = user
        self.output = output
        self.retention = retention
        self.started_at = iso_time(time.time())
        self.finished_at: Optional[str] = None
        self.done = threading.Event()  # exited, and every byte of its output is in the log
        self.done_at = 0.0
        self.timed_out = False
        self.stdin = "open" if process.in_fd is not None else "not_enabled"
        self.stdin_lock = threading.Lock()
        self.open_fds = 0
        self.last_output = 0.0
        self.followers = 0

    def info(self) -> Dict[str, Any]:
        done = self.done.is_set()
        return {
            "pid": self.pid,
            "tag": self.tag,
            "command": self.process.argv[0],
            "args": self.process.argv[1:],
            "cwd": self.cwd,
            "user": self.user,
            "pty": False,
            "background": True,
            "started_at": self.started_at,
            "state": "exited" if done else "running",
            "exit_code": self.process.exit_code if done else None,
            "signal": self.process.signal if done else None,
            "finished_at": self.finished_at,
            "timed_out": self.timed_out,
            "stdin": self.stdin == "open",
            "output_start": self.output.start,
            "output_end": self.output.end,
        }

    def exit_message(self) -> Dict[str, Any]:
        process = self.process
        return ops.exit_info(process.exit_code, process.signal, self.finished_at, self.timed_out, self.output.end)


def acquire(lock: threading.Lock, stream: Stream) -> bool:
    """Take `lock`, unless the caller leaves first."""
    while not lock.acquire(timeout=POLL_SLICE):
        if stream.closed:
            return False
    return True


class Background:
    """The background process operations and the pump that reads their output."""

    def __init__(self, commands: Commands, log_dir: str) -> None:
        self.commands = commands
        self.log_dir = log_dir
        self.jobs: Dict[int, Job] = {}
        self.reserved_tags: Set[str] = set()
        self.lock = threading.Lock()
        self._serial = 0
        self._epoll: Optional[Any] = None
        self._fds: Dict[int, Tuple[Job, int]] = {}  # output fd -> (job, stream)
        self._draining: Set[Job] = set()
        self._deadlines: List[Tuple[float, int]] = []  # (monotonic, pid) of timeouts
        self._wake_w = -1
        shutil.rmtree(log_dir, ignore_errors=True)  # a new agent: old logs describe nothing

    # ---------------------------------------------------------------- lookups
    def find(self, target: Union[int, str]) -> Job:
        with self.lock:
            if isinstance(target, int) and not isinstance(target, bool):
                job = self.jobs.get(target)
                if job is not None:
                    return job
                raise OpError("PROCESS_NOT_FOUND", "no background process with pid %d" % target, pid=target)
            if not isinstance(target, str):
                raise OpError("INVALID_REQUEST", "target must be a pid or a tag")
            tagged = [job for job in self.jobs.values() if job.tag == target]
        running = [job for job in tagged if not job.done.is_set()]
        if running or tagged:
            return (running or sorted(tagged, key=lambda job: job.done_at))[-1]
        raise OpError("PROCESS_NOT_FOUND", "no process with tag %r" % target, tag=target)

    def listed(self) -> List[Dict[str, Any]]:
        with self.lock:
            jobs = list(self.jobs.values())
        return [job.info() for job in jobs]

    # ---------------------------------------------------------------- start
    def op_start(self, stream: Stream, request: Dict[str, Any]) -> None:
        tag = request.get("tag")
        if tag is not None and (not isinstance(tag, str) or not 0 < len(tag) <= TAG_MAX):
            raise OpError("INVALID_REQUEST", "invalid tag", field="tag")
        capacity = int(request.get("log_bytes") or 0)
        if not MIN_CAPACITY <= capacity <= MAX_CAPACITY:
            raise OpError("INVALID_REQUEST", "log_bytes out of range", field="log_bytes")
        with self.lock:
            if tag is not None:
                holder = next((j for j in self.jobs.values() if j.tag == tag and not j.done.is_set()), None)
                if holder is not None or tag in self.reserved_tags:
                    pid = holder.pid if holder is not None else None
                    raise OpError("TAG_IN_USE", "tag %r is taken by running process %s" % (tag, pid), tag=tag, pid=pid)
                self.reserved_tags.add(tag)
            self._serial += 1
            serial = self._serial
        output: Optional[OutputLog] = None
        try:
            os.makedirs(self.log_dir, 0o700, exist_ok=True)
            output = OutputLog(os.path.join(self.log_dir, "%d.log" % serial), capacity)
            launch = self.commands.prepare(dict(request, pty=None))
            process = self.commands.start_in_parent(launch, lambda process: self._exited(process.pid))
            for fd in (process.out_fd, process.err_fd, process.in_fd):
                if fd is not None:
                    os.set_blocking(fd, False)
            job = Job(
                process, tag, launch.cwd, "root" if launch.as_root else "user", output, float(request["retention"])
            )
            with self.lock:
                self.jobs[job.pid] = job
            self._watch_output(job, request.get("timeout"))
        except BaseException:
            if output is not None:
                output.close()
            raise
        finally:
            if tag is not None:
                with self.lock:
                    self.reserved_tags.discard(tag)
        if process.exited.is_set():  # it may have exited before we knew its job
            self._exited(job.pid)
        stream.finish(ops.ok(process=job.info()))

    # ---------------------------------------------------------------- the pump
    def _watch_output(self, job: Job, timeout: Optional[float]) -> None:
        if self._epoll is None:
            self._start_pump()
        process = job.process
        epoll = self._epoll
        assert epoll is not None
        with self.lock:
            for fd, kind in ((process.out_fd, STDOUT), (process.err_fd, STDERR)):
                if fd is not None:
                    self._fds[fd] = (job, kind)
                    job.open_fds += 1
                    epoll.register(fd, select.EPOLLIN)
            if timeout:
                heapq.heappush(self._deadlines, (time.monotonic() + float(timeout), job.pid))
        self._wake()

    def _start_pump(self) -> None:
        with self.lock:
            if self._epoll is not None:
                return
            wake_r, self._wake_w = os.pipe()
            os.set_blocking(wake_r, False)
            os.set_blocking(self._wake_w, False)
            self._epoll = select.epoll()
            self._epoll.register(wake_r, select.EPOLLIN)
        threading.Thread(target=self._pump, args=(wake_r,), name="output-pump", daemon=True).start()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"!")
        except OSError:
            pass  # already awake (the pipe is full)

    def _exited(self, pid: int) -> None:
        """The reaper saw it exit (any thread): drain what is left of its output, then finish."""
        with self.lock:
            job = self.jobs.get(pid)
            if job is None or job in self._draining or job.done.is_set():
                return
            self._draining.add(job)
        self._wake()

    def _pump(self, wake_r: int) -> None:
        last_sweep = time.monotonic()
        while True:
            try:
                self._pump_once(wake_r)
                now = time.monotonic()
                if now - last_sweep >= SWEEP_INTERVAL:
                    last_sweep = now
                    self._sweep(now)
            except Exception as exc:  # the pump must outlive any one process's trouble
                log("output pump: %r" % (exc,))
                time.sleep(0.01)

    def _pump_once(self, wake_r: int) -> None:
        timeout = SWEEP_INTERVAL
        with self.lock:
            if self._draining:
                timeout = EXIT_DRAIN_GRACE / 4
            if self._deadlines:
                timeout = max(0.0, min(timeout, self._deadlines[0][0] - time.monotonic()))
        assert self._epoll is not None
        for fd, _ in self._epoll.poll(timeout):
            if fd == wake_r:
                try:
                    os.read(wake_r, 4096)
                except BlockingIOError:
                    pass
                continue
            entry = self._fds.get(fd)
            if entry is None:
                continue
            job, kind = entry
            try:
                data = os.read(fd, wire.CHUNK)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if data:
                job.output.append(kind, data)
                job.last_output = time.monotonic()
            else:
                self._close_output(fd, job)
        now = time.monotonic()
        self._expire_timeouts(now)
        with self.lock:
            draining = list(self._draining)
        for job in draining:
            exited_at = job.process.exited_at
            quiet = now - max(exited_at, job.last_output) >= EXIT_DRAIN_GRACE
            if job.open_fds == 0 or quiet or now - exited_at >= EXIT_DRAIN_CAP:
                self._finish(job)

    def _close_output(self, fd: int, job: Job) -> None:
        with self.lock:
            if self._fds.pop(fd, None) is None:
                return
            job.open_fds -= 1
        assert self._epoll is not None
        try:
            self._epoll.unregister(fd)
        except OSError:
            pass
        os.close(fd)

    def _finish(self, job: Job) -> None:
        """Exited and drained: close its pipes, seal the log, tell the followers and waiters."""
        process = job.process
        for fd in (process.out_fd, process.err_fd):
            if fd is not None:
                self._close_output(fd, job)
        if job.stdin_lock.acquire(blocking=False):  # else the writer closes it (never block the pump)
            try:
                self._close_stdin_of_exited(job)
            finally:
                job.stdin_lock.release()
        if process.popen is not None:
            process.popen.returncode = process.exit_code  # keeps Popen from waiting on a reaped pid
        job.finished_at = iso_time(time.time())
        job.done_at = time.monotonic()
        with self.lock:
            self._draining.discard(job)
        job.output.finish()
        job.done.set()

    @staticmethod
    def _close_stdin_of_exited(job: Job) -> None:
        """Under the job's stdin lock."""
        if job.process.in_fd is not None:
            os.close(job.process.in_fd)
            job.process.in_fd = None
        if job.stdin == "open":
            job.stdin = "exited"

    def _expire_timeouts(self, now: float) -> None:
        while True:
            with self.lock:
                if not self._deadlines or self._deadlines[0][0] > now:
                    return
                _, pid = heapq.heappop(self._deadlines)
                job = self.jobs.get(pid)
            if job is not None and not job.process.exited.is_set():
                job.timed_out = True
                job.process.signal_group(signal.SIGKILL)

    def _sweep(self, now: float) -> None:
        """Forget exited processes past their retention (or beyond RETAIN_EXITED of them)."""
        with self.lock:
            exited = sorted((j for j in self.jobs.values() if j.done.is_set()), key=lambda j: j.done_at)
            excess = len(exited) - RETAIN_EXITED
            gone = [
                job
                for index, job in enumerate(exited)
                if job.followers == 0 and (index < excess or now - job.done_at >= job.retention)
            ]
            for job in gone:
                self.jobs.pop(job.pid, None)
        for job in gone:
            job.output.close()

    # ---------------------------------------------------------------- following
    def op_follow(self, stream: Stream, request: Dict[str, Any]) -> None:
        job = self.find(request["target"])
        output = job.output
        offset = int(request.get("offset", 0))
        if offset < 0:
            offset = max(output.start, output.end + offset)
        if offset > output.end:
            raise OpError(
                "INVALID_REQUEST",
                "offset %d is beyond the output's end (%d)" % (offset, output.end),
                field="offset",
                end=output.end,
            )
        dropped = max(0, output.start - offset)
        offset += dropped
        with self.lock:
            job.followers += 1
        try:
            stream.send(ops.follow_start(job.pid, job.tag, offset, dropped))
            self._follow(stream, job, offset)
        finally:
            with self.lock:
                job.followers -= 1

    def _follow(self, stream: Stream, job: Job, offset: int) -> None:
        output = job.output
        run = -1
        while not stream.closed:
            try:
                kind, data, run = output.read(offset, wire.CHUNK, run)
            except Dropped as gap:
                stream.send(ops.dropped(offset, gap.start))
                offset = gap.start
                continue
            if data:
                if not stream.send_data(wire.ERR if kind == STDERR else wire.OUT, data):
                    break
                offset += len(data)
                continue
            if job.done.is_set() and offset >= output.end:
                stream.finish(job.exit_message())
                return
            output.wait(offset, POLL_SLICE)
        stream.forget()

    def op_wait(self, stream: Stream, request: Dict[str, Any]) -> None:
        job = self.find(request["target"])
        deadline = time.monotonic() + max(0.0, float(request.get("timeout", 0)))
        while not stream.closed and not job.done.wait(min(POLL_SLICE, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                break
        stream.finish(ops.ok(process=job.info()))

    def op_process(self, stream: Stream, request: Dict[str, Any]) -> None:
        target = request["target"]
        try:
            info = self.find(target).info()
        except OpError:
            foreground = self._foreground(target)
            if foreground is None:
                raise
            info = {"pid": foreground.pid, "command": foreground.argv[0], "args": foreground.argv[1:]}
            info.update(pty=foreground.pty, background=False, state="running")
        stream.finish(ops.ok(process=info))

    def _foreground(self, target: Union[int, str]) -> Optional[Process]:
        if not isinstance(target, int):
            return None
        with self.commands.lock:
            return self.commands.processes.get(target)

    # ---------------------------------------------------------------- stdin
    def op_stdin(self, stream: Stream, request: Dict[str, Any]) -> None:
        job = self.find(request["target"])
        if not acquire(job.stdin_lock, stream):
            stream.forget()
            return
        try:
            self._check_stdin(job)
            stream.send(ops.ready())
            written = 0
            while True:
                what, value = stream.inbox.get()
                if what == "data":
                    self._write_stdin(stream, job, value)
                    written += len(value)
                    stream.grant(len(value))
                elif what == "msg" and value.get("type") == ops.EOF:
                    break
                elif what == "closed":
                    stream.forget()
                    return
        finally:
            if job.done.is_set():
                self._close_stdin_of_exited(job)
            job.stdin_lock.release()
        stream.finish(ops.ok(written=written))

    def _check_stdin(self, job: Job) -> None:
        if job.stdin == "open" and job.process.exited.is_set():
            job.stdin = "exited"
        if job.stdin != "open":
            reasons = {
                "not_enabled": "process %d was started without stdin=True: its stdin is /dev/null",
                "closed": "the stdin of process %d was closed",
                "exited": "process %d has exited",
            }
            raise OpError("STDIN_CLOSED", reasons[job.stdin] % job.pid, pid=job.pid, reason=job.stdin)

    def _write_stdin(self, stream: Stream, job: Job, data: bytes) -> None:
        view = memoryview(data)
        poller = select.poll()
        while view:
            fd = job.process.in_fd
            if fd is None:
                self._check_stdin(job)
                raise OpError("STDIN_CLOSED", "process %d has exited" % job.pid, pid=job.pid, reason="exited")
            try:
                view = view[os.write(fd, view) :]
                continue
            except BlockingIOError:
                pass
            except OSError as exc:
                if exc.errno != errno.EPIPE:
                    raise
                job.stdin = "exited"
                raise OpError("STDIN_CLOSED", "process %d has exited" % job.pid, pid=job.pid, reason="exited") from None
            # The pipe is full: the process reads slower than we write. Wait for room, and
            # let the caller go if it leaves meanwhile.
            poller.register(fd, select.POLLOUT)
            poller.poll(POLL_SLICE * 1000)
            poller.unregister(fd)
            if job.done.is_set():
                job.stdin = "exited"
                raise OpError("STDIN_CLOSED", "process %d has exited" % job.pid, pid=job.pid, reason="exited")
            if stream.closed:
                raise OpError("INVALID_REQUEST", "the caller left")

    def op_close_stdin(self, stream: Stream, request: Dict[str, Any]) -> None:
        job = self.find(request["target"])
        if not acquire(job.stdin_lock, stream):  # after a write in progress
            stream.forget()
            return
        try:
            if job.process.in_fd is not None:
                os.close(job.process.in_fd)
                job.process.in_fd = None
                job.stdin = "closed"
        finally:
            job.stdin_lock.release()
        stream.finish(ops.ok())

    # ---------------------------------------------------------------- signals
    def op_kill(self, stream: Stream, request: Dict[str, Any]) -> None:
        target = request["target"]
        signum = int(request.get("signal", signal.SIGTERM))
        foreground = self._foreground(target)
        if foreground is not None:
            foreground.signal_group(signum)
        else:
            job = self.find(target)
            if not job.process.exited.is_set():
                job.process.signal_group(signum)
        stream.finish(ops.ok())

    def op_processes(self, stream: Stream, request: Dict[str, Any]) -> None:
        with self.commands.lock:
            listed = [{"pid": p.pid, "argv": p.argv, "pty": p.pty} for p in self.commands.processes.values()]
        stream.finish(ops.ok(processes=listed + self.listed()))

    def op_shutdown(self, stream: Stream, request: Dict[str, Any]) -> None:
        """A graceful delete: background processes get SIGTERM too, and the same grace."""
        with self.lock:
            running = [job for job in self.jobs.values() if not job.process.exited.is_set()]
        for job in running:
            job.process.signal_group(signal.SIGTERM)
        self.commands.op_shutdown(stream, request)
