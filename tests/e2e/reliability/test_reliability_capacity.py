"""`max_sandboxes` holds under concurrency.

Guarantee under test: concurrent creates served from the warm pool with other limits (a
claim whose cgroup limits are being rewritten has no record yet) never take the server
past `max_sandboxes`; the ones over it answer 429 `RESOURCE_EXHAUSTED`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.e2e.reliability.reliability_support import CREATED_IDS, Harness, wait_pool_full

CAP = 3
CREATES = 8


@pytest.fixture
def harness() -> Iterator[Harness]:
    with Harness("capacity") as h:
        h.start(pool_size=2, extra=["--max-sandboxes", str(CAP)])
        yield h


def test_concurrent_pool_claims_with_other_limits_never_exceed_max_sandboxes(harness: Harness) -> None:
    wait_pool_full(harness, 2)

    async def burst() -> list[tuple[int, str]]:
        async with harness.async_client(timeout=120) as client:
            answers = await asyncio.gather(
                *(client.post("/sandboxes", json={"cpu": 0.5, "memory_mb": 256}) for _ in range(CREATES))
            )
        results = []
        for answer in answers:
            body = answer.json()
            if answer.status_code == 201:
                CREATED_IDS.add(body["id"])
            results.append((answer.status_code, body.get("id") or body.get("code")))
        return results

    results = asyncio.run(burst())
    created = [value for status, value in results if status == 201]
    refused = [value for status, value in results if status != 201]
    assert len(created) <= CAP, f"{len(created)} sandboxes created with max_sandboxes={CAP}: {results}"
    assert created and all(code == "RESOURCE_EXHAUSTED" for code in refused), results
    with harness.client() as client:
        live = [s for s in client.get("/sandboxes").json()["sandboxes"] if s["state"] in ("starting", "running")]
        assert len(live) <= CAP, live
        for sandbox_id in created:
            client.delete(f"/sandboxes/{sandbox_id}", params={"force": "true"})
