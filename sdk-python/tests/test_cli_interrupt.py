"""`workspace exec` ends on Ctrl-C even when the KeyboardInterrupt lands in a finalizer,
where Python prints and drops it (the CLI alone, in a process of its own)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

SWALLOWED = textwrap.dedent("""
    import os, signal, time
    from workspace_cli.commands import ctrl_c_always_ends

    class Finalized:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)  # handled here: the exception is dropped

    with ctrl_c_always_ends():
        Finalized()
        time.sleep(20)
        print("streamed on")
""")


def test_an_interrupt_dropped_by_a_finalizer_still_ends_the_command() -> None:
    started = time.monotonic()
    ended = subprocess.run([sys.executable, "-c", SWALLOWED], capture_output=True, text=True, timeout=30)
    assert ended.returncode == 130, ended
    assert "streamed on" not in ended.stdout
    assert "KeyboardInterrupt" in ended.stderr  # Python's "Exception ignored in ..." report
    assert time.monotonic() - started < 15


def test_an_interrupt_that_propagates_ends_at_once_and_restores_the_handler() -> None:
    script = textwrap.dedent("""
        import os, signal
        from workspace_cli.commands import ctrl_c_always_ends
        try:
            with ctrl_c_always_ends():
                os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:
            print("raised", signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    """)
    ended = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    assert (ended.returncode, ended.stdout) == (0, "raised True\n"), ended
