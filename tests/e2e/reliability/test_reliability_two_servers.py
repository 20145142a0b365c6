"""Two servers on one host (two data dirs).

Guarantee under test: they never hand out the same host uid range, so their sandboxes are
strangers to each other on the host (`runtimes/uid_ranges.py`: a host-wide registry under /run).
"""

from __future__ import annotations

from pathlib import Path

from tests.e2e.reliability.reliability_support import Harness, create


def host_uid_map(harness: Harness, sandbox_id: str) -> str:
    return Path(f"/proc/{harness.init_pid(sandbox_id)}/uid_map").read_text().split()[1]


def test_two_servers_on_one_host_never_share_a_uid_range() -> None:
    with Harness("uids-a") as first, Harness("uids-b") as second:
        first.start()
        second.start()
        with first.client() as one, second.client() as two:
            ids = [(first, create(one)["id"]), (second, create(two)["id"]), (first, create(one)["id"])]
            ids.append((second, create(two)["id"]))
            starts = [host_uid_map(h, sandbox_id) for h, sandbox_id in ids]
            assert len(set(starts)) == len(starts), f"shared host uid ranges: {starts}"
