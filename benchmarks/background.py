"""Background processes and file watching: start → pid, replaying kept output, a stdin
round trip, file-watch latency and background output throughput, each beside the
foreground call it should match, measured in the same loop."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from benchmarks.client import Api, _check
from benchmarks.config import Config
from benchmarks.measure import STREAM_LINE, expect, latency
from benchmarks.report import Metric
from benchmarks.server import Server
from benchmarks.sse import SseEvent, SseParser, SseTally
from benchmarks.stats import MIB, mb_per_s, percentile

BACKGROUND = "Background processes and file watching"
API = "/api/v1"
REPLAY_BYTES = 1 * MIB


def start(api: Api, sandbox_id: str, command: str, *args: str, **options: Any) -> dict[str, Any]:
    body = {"command": command, "args": list(args), **options}
    answer: dict[str, Any] = _check(api.http.post(f"{API}/sandboxes/{sandbox_id}/processes", json=body)).json()
    return answer


@contextmanager
def sse(api: Api, route: str, **params: Any) -> Iterator[Iterator[SseEvent]]:
    """The events of an SSE route, parsed as they come."""
    with api.http.stream("GET", f"{API}{route}", params=params) as response:
        if response.status_code >= 400:
            response.read()
            _check(response)

        def events() -> Iterator[SseEvent]:
            parser = SseParser()
            for chunk in response.iter_raw():
                yield from parser.feed(chunk)

        yield events()


def follow_to_exit(api: Api, sandbox_id: str, pid: int, offset: int = 0) -> SseTally:
    tally = SseTally()
    parser = SseParser()
    path = f"{API}/sandboxes/{sandbox_id}/processes/{pid}/output"
    with api.http.stream("GET", path, params={"offset": offset}) as response:
        if response.status_code >= 400:
            response.read()
            _check(response)
        for chunk in response.iter_raw():
            for block in parser.blocks(chunk):
                tally.add_block(block)
            if tally.exit_code is not None or tally.error is not None:
                break
    return tally


def background(server: Server, cfg: Config) -> list[Metric]:
    rounds = max(20, cfg.run_iterations // 3)
    samples: dict[str, list[float]] = {name: [] for name in ("start", "run", "replay", "echo", "watch")}
    rates: dict[str, list[float]] = {"background": [], "stream": []}
    with Api(server.url, timeout=600) as api:
        sandbox_id = str(api.create()["id"])
        server.created.add(sandbox_id)
        base = f"/sandboxes/{sandbox_id}"
        try:
            # start → pid, interleaved with process.run('true') (the foreground round trip).
            for i in range(5 + rounds):
                t0 = time.perf_counter()
                started = start(api, sandbox_id, "true")
                t1 = time.perf_counter()
                api.run(sandbox_id, "true")
                t2 = time.perf_counter()
                expect(int(started["pid"]) > 0, f"start answered {started}")
                if i >= 5:
                    samples["start"].append(t1 - t0)
                    samples["run"].append(t2 - t1)

            # connect with a replay of 1 MiB: from the request to the exit event after it.
            script = f"yes {STREAM_LINE} | head -c {REPLAY_BYTES}"
            kept = start(api, sandbox_id, "sh", "-c", script)
            _check(api.http.post(f"{API}{base}/processes/{kept['pid']}/wait", params={"timeout": 30}))
            for i in range(3 + rounds):
                t0 = time.perf_counter()
                tally = follow_to_exit(api, sandbox_id, int(kept["pid"]))
                elapsed = time.perf_counter() - t0
                expect(tally.stdout_chars == REPLAY_BYTES, f"replayed {tally.stdout_chars} of {REPLAY_BYTES} bytes")
                if i >= 3:
                    samples["replay"].append(elapsed)

            # send_stdin round trip: a line into `cat`, until its echo arrives on a follower.
            cat = start(api, sandbox_id, "cat", stdin=True)
            with sse(api, f"{base}/processes/{cat['pid']}/output") as events:
                expect(next(events).event == "start", "the follower did not start")
                for i in range(5 + rounds):
                    t0 = time.perf_counter()
                    _check(api.http.post(f"{API}{base}/processes/{cat['pid']}/stdin", content=b"ping\n"))
                    event = next(events)
                    elapsed = time.perf_counter() - t0
                    expect(event.event == "stdout" and event.data["data"] == "ping\n", f"cat echoed {event}")
                    if i >= 5:
                        samples["echo"].append(elapsed)
            _check(api.http.post(f"{API}{base}/processes/{cat['pid']}/kill", json={"signal": 9}))

            # File watch latency: a process in the sandbox names each file after the time it
            # creates it (same clock: same kernel); the event's arrival is compared with it.
            writer = (
                "import time\n"
                f"for i in range({5 + rounds}):\n"
                "    time.sleep(0.02)\n"
                "    open('/workspace/w/%d' % time.time_ns(), 'w').close()\n"
            )
            api.run(sandbox_id, "mkdir", "-p", "/workspace/w")
            with sse(api, f"{base}/files/watch", path="/workspace/w") as events:
                expect(next(events).event == "ready", "the watch did not start")
                start(api, sandbox_id, "python3", "-c", writer)
                for i in range(5 + rounds):
                    event = next(events)
                    now = time.time_ns()
                    expect(event.event == "create", f"watch sent {event}")
                    if i >= 5:
                        samples["watch"].append((now - int(event.data["path"].rsplit("/", 1)[1])) / 1e9)

            # Output throughput: the same command as a background process followed live, and
            # through POST /processes/stream, alternately.
            size = cfg.stream_bytes
            script = f"yes {STREAM_LINE} | head -c {size}"
            for _ in range(cfg.stream_reps):
                t0 = time.perf_counter()
                # The log holds it all: the writer never waits for a follower, so a smaller
                # log would lap this one (that is measured by the reliability tests).
                proc = start(api, sandbox_id, "sh", "-c", script, log_bytes=min(1 << 30, size + MIB))
                tally = follow_to_exit(api, sandbox_id, int(proc["pid"]))
                rates["background"].append(mb_per_s(size, time.perf_counter() - t0))
                expect(tally.exit_code == 0, f"the follower ended without exit 0: {tally}")
                t0 = time.perf_counter()
                streamed = api.stream(sandbox_id, "sh", "-c", script)
                rates["stream"].append(mb_per_s(size, time.perf_counter() - t0))
                expect(streamed.stdout_chars == size, f"the stream got {streamed.stdout_chars} of {size}")
                expect(tally.stdout_chars == size, f"the follower got {tally.stdout_chars} of {size} (fell behind)")
        finally:
            api.delete(sandbox_id)
            server.created.discard(sandbox_id)
    start_p50, run_p50 = percentile(samples["start"], 50), percentile(samples["run"], 50)
    return [
        latency(
            "bg.start",
            BACKGROUND,
            "process.start('true') → pid (POST /processes)",
            samples["start"],
            baselines=("bg.run_true",),
        ),
        latency(
            "bg.run_true",
            BACKGROUND,
            "process.run('true'), interleaved with the starts",
            samples["run"],
            short="run('true')",
        ),
        Metric(
            key="bg.start_over_run",
            section=BACKGROUND,
            label="start → pid p50 minus process.run('true') p50",
            unit="ms",
            value=(start_p50 - run_p50) * 1000,
            note="start returns once the process runs; run also waits for its exit and output",
        ),
        latency(
            "bg.replay_1mib",
            BACKGROUND,
            "connect and replay 1 MiB of kept output, to the exit event",
            samples["replay"],
        ),
        latency(
            "bg.stdin_echo",
            BACKGROUND,
            "send_stdin round trip: a line into `cat` until its echo is followed",
            samples["echo"],
        ),
        latency(
            "bg.watch",
            BACKGROUND,
            "file watch: file created in the sandbox → event at the client",
            samples["watch"],
            note="the file's name is its creation time (the sandbox shares the host clock)",
        ),
        Metric(
            key="bg.throughput",
            section=BACKGROUND,
            label=f"background output followed live, {cfg.stream_bytes // MIB} MiB (start → exit event)",
            unit="MB/s",
            value=percentile(rates["background"], 50),
            baselines=("bg.stream",),
            note=f"reps: {', '.join(f'{r:.0f}' for r in rates['background'])} MB/s; through the output log "
            "on the sandbox's disk",
        ),
        Metric(
            key="bg.stream",
            section=BACKGROUND,
            label="the same through POST /processes/stream, alternately",
            unit="MB/s",
            value=percentile(rates["stream"], 50),
            short="run_stream",
            note=f"reps: {', '.join(f'{r:.0f}' for r in rates['stream'])} MB/s",
        ),
    ]
