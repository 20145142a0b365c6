"""`workspace serve` under pyinstrument, recording only while the benchmark asks.

    python -m benchmarks.profiled_server OUT_DIR serve --host ... --port ...

SIGUSR1 starts a recording; SIGUSR2 stops it and writes OUT_DIR/session-N.json (the full
call tree, for benchmarks/profile_analysis.py) and session-N.txt (the call graph as
text, library frames folded), then OUT_DIR/session-N.done.

The signal handlers only schedule the work as event-loop callbacks: a profiler started
inside a signal handler, on top of an interrupted epoll wait, charges the waiting to
whatever frame was interrupted; started from a callback it sees `epoll.poll` as such.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from types import FrameType

from pyinstrument import Profiler
from pyinstrument.renderers import ConsoleRenderer, JSONRenderer

INTERVAL = 0.0005  # seconds between samples


class Recorder:
    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.profiler: Profiler | None = None
        self.count = 0

    def on_start_signal(self, signum: int, frame: FrameType | None) -> None:
        asyncio.get_running_loop().call_soon_threadsafe(self.start)

    def on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        asyncio.get_running_loop().call_soon_threadsafe(self.stop)

    def start(self) -> None:
        if self.profiler is None:
            self.profiler = Profiler(interval=INTERVAL, async_mode="disabled")
            self.profiler.start()

    def stop(self) -> None:
        if self.profiler is None:
            return
        session = self.profiler.stop()
        self.profiler = None
        self.count += 1
        base = self.out_dir / f"session-{self.count}"
        full = {"filter_threshold": 0}
        base.with_suffix(".json").write_text(JSONRenderer(processor_options=full).render(session))
        base.with_suffix(".txt").write_text(ConsoleRenderer(unicode=True, color=False).render(session))
        base.with_suffix(".done").touch()


def main() -> None:
    if len(sys.argv) < 3:
        sys.stderr.write("usage: python -m benchmarks.profiled_server OUT_DIR serve [ARGS...]\n")
        raise SystemExit(2)
    out_dir = Path(sys.argv[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    recorder = Recorder(out_dir)
    signal.signal(signal.SIGUSR1, recorder.on_start_signal)
    signal.signal(signal.SIGUSR2, recorder.on_stop_signal)
    from workspace_server.cli import app

    sys.argv = ["workspace", *sys.argv[2:]]
    app()


if __name__ == "__main__":
    main()
