"""Downloading a file that is still being written (a log being appended to).

Guarantee under test: the body is exactly the announced Content-Length (the size when the
download started), a prefix of the file; the connection is never cut by an overrun.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.reliability.reliability_support import Harness, create, run

DOWNLOADS = 8
APPENDER = """
import os, time
with open('/workspace/growing.log', 'ab', buffering=0) as log:
    line = b'x' * 4095 + b'\\n'
    end = time.monotonic() + 60
    while time.monotonic() < end:
        log.write(line * 4)
        time.sleep(0.002)
"""


@pytest.fixture
def harness() -> Iterator[Harness]:
    with Harness("growing") as h:
        h.start()
        yield h


def test_download_of_a_growing_file_sends_exactly_the_announced_size(harness: Harness) -> None:
    with harness.client(timeout=60) as client:
        sandbox = create(client)
        sandbox_id = sandbox["id"]
        started = client.post(
            f"/sandboxes/{sandbox_id}/processes/run",
            json={"command": "sh", "args": ["-c", f'python3 -c "{APPENDER}" >/dev/null 2>&1 &']},
        )
        assert started.status_code == 200, started.text
        run(client, sandbox_id, "sh", "-c", "while [ ! -s /workspace/growing.log ]; do sleep 0.05; done", timeout=10)
        sizes = []
        for _ in range(DOWNLOADS):
            with client.stream("GET", f"/sandboxes/{sandbox_id}/files", params={"path": "/workspace/growing.log"}) as r:
                assert r.status_code == 200
                announced = int(r.headers["content-length"])
                body = r.read()  # raises if the body overruns or falls short of Content-Length
            assert len(body) == announced
            assert set(body) <= {ord("x"), ord("\n")}
            sizes.append(announced)
        assert len(set(sizes)) > 1, f"the file did not grow during the test: {sizes}"
        client.delete(f"/sandboxes/{sandbox_id}", params={"force": "true"})
