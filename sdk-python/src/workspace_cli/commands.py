"""``workspace exec``: run one command, streaming its output as it comes."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING

from workspace_cli.output import print_json

if TYPE_CHECKING:
    from workspace_sdk import RunCommandOptions, WorkspaceClient

# Exit statuses of `exec` when the command could not run (as docker exec and timeout(1) do);
# otherwise `exec` exits with the command's own status.
EXIT_TIMEOUT = 124
EXIT_WORKSPACE_ERROR = 125
EXIT_COMMAND_NOT_FOUND = 127
EXIT_INTERRUPTED = 130
# Ctrl-C raises KeyboardInterrupt wherever the interpreter is; inside a finalizer (an HTTP
# response's __del__, say) it is printed and dropped, and the command would stream on. So
# an interrupted exec also ends this long after, whatever became of the exception.
INTERRUPT_GRACE = 2.0


@contextmanager
def ctrl_c_always_ends() -> Iterator[None]:
    def interrupted(signum: int, frame: FrameType | None) -> None:
        timer = threading.Timer(INTERRUPT_GRACE, os._exit, (EXIT_INTERRUPTED,))
        timer.daemon = True  # a normal exit does not wait for it
        timer.start()
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_command(
    api: WorkspaceClient,
    sandbox_id: str,
    argv: list[str],
    *,
    env: dict[str, str] | None,
    cwd: str | None,
    user: str | None,
    timeout: float | None,
    stdin: str | None,
    json_output: bool,
) -> int:
    """Run ``argv`` and return the exit status the CLI should end with."""
    from workspace_sdk import CommandNotFoundError, ProcessTimeoutError, RunCommandOptions

    options = RunCommandOptions(args=argv[1:], env=env, cwd=cwd, user=user, timeout=timeout, stdin=stdin)
    try:
        if json_output:
            result = api.process.run(sandbox_id, argv[0], options)
            print_json(result)
            return result.exit_code
        return stream(api, sandbox_id, argv[0], options)
    except CommandNotFoundError as exc:
        sys.stderr.write(f"error: {exc.message}\n")
        return EXIT_COMMAND_NOT_FOUND
    except ProcessTimeoutError as exc:
        if json_output:
            print_json({"exit_code": EXIT_TIMEOUT, "stdout": exc.stdout, "stderr": exc.stderr, "timed_out": True})
        sys.stderr.write(f"error: {exc.message}\n")
        return EXIT_TIMEOUT


def stream(api: WorkspaceClient, sandbox_id: str, command: str, options: RunCommandOptions) -> int:
    from workspace_sdk import ErrorEvent, ExitEvent, StderrEvent, StdoutEvent

    # Flushed per event, so output is live even when stdout is a pipe.
    stdout, stderr = sys.stdout, sys.stderr
    with ctrl_c_always_ends(), api.process.run_stream(sandbox_id, command, options) as events:
        for event in events:
            if isinstance(event, StdoutEvent):
                stdout.write(event.data)
                stdout.flush()
            elif isinstance(event, StderrEvent):
                stderr.write(event.data)
                stderr.flush()
            elif isinstance(event, ExitEvent):
                return event.code
            elif isinstance(event, ErrorEvent):
                stderr.write(f"error: {event.message}" + (f" ({event.code})" if event.code else "") + "\n")
                return EXIT_TIMEOUT if event.code == "PROCESS_TIMEOUT" else EXIT_WORKSPACE_ERROR
    return EXIT_WORKSPACE_ERROR
