"""Sandboxes in `error` are listable by state and do not stay forever.

Guarantee under test: a sandbox whose agent died is listed under `?state=error` with its
reason, and after `--error-retention` seconds it is deleted (404) with everything it held
on the host.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from tests.e2e.reliability.reliability_support import Harness, create, wait_until

RETENTION = 2.0


@pytest.fixture
def harness() -> Iterator[Harness]:
    with Harness("error-retention") as h:
        h.start(extra=["--error-retention", str(RETENTION)])
        yield h


def test_sandboxes_in_error_are_listed_by_state_then_purged(harness: Harness) -> None:
    with harness.client() as client:
        doomed, healthy = create(client)["id"], create(client)["id"]
        os.kill(harness.init_pid(doomed), signal.SIGKILL)
        wait_until(lambda: client.get(f"/sandboxes/{doomed}").json()["state"] == "error", 10, what="state error")
        listed = client.get("/sandboxes", params={"state": "error"}).json()["sandboxes"]
        assert [s["id"] for s in listed] == [doomed] and listed[0]["error_message"], listed
        wait_until(lambda: client.get(f"/sandboxes/{doomed}").status_code == 404, RETENTION + 10, what="the purge")
        assert client.get("/sandboxes", params={"state": "error"}).json()["sandboxes"] == []
        harness.assert_no_leftovers([doomed])
        assert client.get(f"/sandboxes/{healthy}").json()["state"] == "running"
        client.delete(f"/sandboxes/{healthy}", params={"force": "true"})
