"""The agent's worker threads and reaper, one layer alone (no sandbox)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

from workspace_server.agent.workers import Workers


def test_workers_run_tasks_and_reuse_idle_threads() -> None:
    workers = Workers()
    seen: list[int] = []
    done = threading.Event()

    def task() -> None:
        seen.append(threading.get_ident())
        done.set()

    for _ in range(3):
        done.clear()
        workers.submit(task)
        assert done.wait(5)
        time.sleep(0.05)  # let the worker park itself as idle
    assert len(seen) == 3 and len(set(seen)) == 1, seen


def test_workers_keep_at_most_idle_max_threads_after_a_burst() -> None:
    workers = Workers()
    before = threading.active_count()
    release = threading.Event()
    started = threading.Semaphore(0)
    burst = Workers.IDLE_MAX + 6

    def task() -> None:
        started.release()
        release.wait(5)

    for _ in range(burst):
        workers.submit(task)
    for _ in range(burst):
        assert started.acquire(timeout=5)
    assert threading.active_count() - before == burst  # all ran at once
    release.set()
    deadline = time.monotonic() + 5
    while threading.active_count() - before > Workers.IDLE_MAX and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() - before == Workers.IDLE_MAX


def test_workers_survive_a_failing_task() -> None:
    workers = Workers()
    done = threading.Event()

    def boom() -> None:
        raise ValueError("boom")

    workers.submit(boom)
    time.sleep(0.05)
    workers.submit(done.set)
    assert done.wait(5)


# The reaper reaps every child of its process, so it runs in a process of its own.
REAPER_SCRIPT = textwrap.dedent("""
    import os, sys, threading, time
    from workspace_server.agent.reaper import Reaper

    reaper = Reaper()
    results = {}
    got = threading.Event()

    def start_slow_registration():
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        time.sleep(0.3)  # the child exits and is reaped before its pid is registered
        return pid

    def start_signalled():
        pid = os.fork()
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        os.kill(pid, 9)
        return pid

    def on_exit(name):
        def record(code, signal):
            results[name] = "%d/%d" % (code, signal)
            if len(results) == 2:
                got.set()
        return record

    reaper.spawn(start_slow_registration, on_exit("early"))
    reaper.spawn(start_signalled, on_exit("killed"))
    assert got.wait(5), results
    print(results["early"], results["killed"])
""")


def test_reaper_hands_over_an_exit_that_came_before_registration() -> None:
    answer = subprocess.run(
        [sys.executable, "-c", REAPER_SCRIPT], capture_output=True, text=True, timeout=30, check=False
    )
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.split() == ["7/0", "137/9"], answer.stdout
