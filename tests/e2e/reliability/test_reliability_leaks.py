"""Resource leaks over many sandbox lifecycles.

N_CYCLES cycles of create, run, stream, write a file, read it back, open and kill a PTY,
delete; afterwards nothing may be left: no process in any of those sandboxes' cgroups, no
runc container, no mount under the data dir, no loop device backed by a file under it, no
cgroup directory, no bundle directory,
and the server's fd and thread counts are back at their baseline. The server's RSS growth
is printed and only loosely bounded (Python keeps freed memory in its arenas).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor

from tests.e2e.reliability.reliability_support import (
    Harness,
    bundle_ids,
    create,
    fd_count,
    loop_devices_under,
    mounts_under,
    pty_round_trip,
    rss_bytes,
    run,
    runc_ids,
    sandbox_cgroup_dirs,
    sandbox_processes,
    settle,
    settle_fds,
    sh,
    sse_events,
    thread_count,
)

N_CYCLES = 50
WARMUP_CYCLES = 3
FD_SLACK = 2
THREAD_SLACK = 2
RSS_GROWTH_LIMIT = 100 * 1024 * 1024


def _cycle(h: Harness, index: int) -> str:
    payload = os.urandom(64 * 1024)
    with h.client() as c:
        sandbox_id = create(c)["id"]
        assert run(c, sandbox_id, "echo", str(index))["stdout"] == f"{index}\n"
        with c.stream(
            "POST",
            f"/sandboxes/{sandbox_id}/processes/stream",
            json={"command": "sh", "args": ["-c", "echo a; echo b >&2"]},
        ) as response:
            events = list(sse_events(response.iter_lines()))
        assert events[-1] == ("exit", {"code": 0}), events
        put = c.put(f"/sandboxes/{sandbox_id}/files", params={"path": "/workspace/cycle.bin"}, content=payload)
        assert put.status_code == 200, put.text
        got = c.get(f"/sandboxes/{sandbox_id}/files", params={"path": "/workspace/cycle.bin"})
        assert hashlib.sha256(got.content).digest() == hashlib.sha256(payload).digest()
        asyncio.run(pty_round_trip(h.ws_url(f"/sandboxes/{sandbox_id}/pty?shell=/bin/sh"), 10))
        assert c.delete(f"/sandboxes/{sandbox_id}").status_code == 204
    return sandbox_id


def test_create_use_delete_cycles_leak_nothing() -> None:
    with Harness("leaks") as h:
        h.start(pool_size=0)
        for i in range(WARMUP_CYCLES):
            _cycle(h, i)
        time.sleep(0.3)
        fds_before, threads_before, rss_before = fd_count(h.pid), thread_count(h.pid), rss_bytes(h.pid)

        started = time.monotonic()
        ids = [_cycle(h, i) for i in range(N_CYCLES)]
        elapsed = time.monotonic() - started
        assert len(set(ids)) == N_CYCLES

        fds_after = settle_fds(h.pid, fds_before + FD_SLACK, timeout=5)
        threads_after = settle(lambda: thread_count(h.pid), threads_before + THREAD_SLACK, timeout=5)
        rss_after = rss_bytes(h.pid)
        growth = rss_after - rss_before
        print(
            f"\n{N_CYCLES} cycles in {elapsed:.1f} s ({elapsed / N_CYCLES * 1000:.0f} ms each); "
            f"server fds {fds_before} -> {fds_after}; threads {threads_before} -> {threads_after}; "
            f"RSS {rss_before / 2**20:.1f} MiB -> {rss_after / 2**20:.1f} MiB "
            f"({growth / 2**20:+.1f} MiB, {growth / N_CYCLES / 1024:+.1f} KiB/cycle)"
        )

        assert sandbox_processes(ids) == [], "processes left in deleted sandboxes' cgroups"
        assert runc_ids(h.data_dir) == [], "runc still knows deleted sandboxes"
        assert mounts_under(h.data_dir) == [], "mounts left under the data dir"
        assert loop_devices_under(h.data_dir) == [], "loop devices left on the data dir's disk images"
        assert sandbox_cgroup_dirs(h.cgroup_parent, ids) == [], "cgroups left behind"
        assert bundle_ids(h.data_dir) == [], "bundle directories left behind"
        assert fds_after <= fds_before + FD_SLACK, f"server fds grew from {fds_before} to {fds_after}"
        assert threads_after <= threads_before + THREAD_SLACK, f"threads grew: {threads_before} -> {threads_after}"
        assert growth < RSS_GROWTH_LIMIT, f"server RSS grew by {growth / 2**20:.1f} MiB"
        with h.client() as c:
            assert c.get("/sandboxes").json()["sandboxes"] == []


BUSY_PARALLEL = 6  # busy sandboxes per round, created and deleted side by side
BUSY_ROUNDS = 3
BUSY_CPU = 0.1
BUSY_HOGS = 16


def test_delete_of_a_busy_sandbox_leaves_no_processes_or_cgroups() -> None:
    """Sandboxes whose own busy loops keep them at their CPU quota: their killed processes
    need a few CFS periods to exit. DELETE must not answer before they did, and must not
    leave their cgroups behind."""
    with Harness("delete-busy") as h:
        h.start()

        def busy_sandbox(_: int) -> str:
            with h.client() as c:
                sandbox_id = create(c, cpu=BUSY_CPU)["id"]
                sh(c, sandbox_id, f"for i in $(seq {BUSY_HOGS}); do (while :; do :; done) >/dev/null 2>&1 & done")
                return sandbox_id

        def delete(sandbox_id: str) -> list[tuple[int, str]]:
            with h.client() as c:
                assert c.delete(f"/sandboxes/{sandbox_id}", params={"force": "true"}).status_code == 204
            return sandbox_processes([sandbox_id])  # right when DELETE answered

        for _ in range(BUSY_ROUNDS):
            with ThreadPoolExecutor(BUSY_PARALLEL) as pool:
                ids = list(pool.map(busy_sandbox, range(BUSY_PARALLEL)))
                time.sleep(0.3)
                alive = dict(zip(ids, pool.map(delete, ids), strict=True))
            assert not any(alive.values()), f"DELETE answered while the sandbox's processes ran: {alive}"
            h.assert_no_leftovers(ids, timeout=5)


DISTINCT_SIZES = 10
BLANK_IMAGES_KEPT = 4  # runtimes/blank_disks.py KEEP


def test_distinct_disk_sizes_leave_a_bounded_number_of_blank_images() -> None:
    """Every new disk is a copy of a formatted blank image of its size. One image per
    distinct disk_mb used to stay in the data dir until a restart: a client could leave
    thousands. Now only the few sizes used last are kept."""
    with Harness("blank-images") as h:
        h.start()
        runtime_dir = h.data_dir / "runtime"
        with h.client() as c:
            for index in range(DISTINCT_SIZES):
                sandbox_id = create(c, disk_mb=16 + index)["id"]
                assert sh(c, sandbox_id, "df -m /workspace | tail -1 | awk '{print $2}'").strip()
                assert c.delete(f"/sandboxes/{sandbox_id}").status_code == 204
                blanks = sorted(p.name for p in runtime_dir.glob("blank-disk-*"))
                assert len(blanks) <= BLANK_IMAGES_KEPT, f"after {index + 1} sizes: {blanks}"
        last_used = range(DISTINCT_SIZES - BLANK_IMAGES_KEPT, DISTINCT_SIZES)
        assert blanks == [f"blank-disk-{16 + i}m.img" for i in last_used], blanks
        h.assert_data_dir_empty()
