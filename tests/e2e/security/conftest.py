"""Fixtures of the escape-attempt suite: sandboxes with chosen limits, host marker files."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.security.attack_support import HostMarker, create_sandbox, delete_sandbox, host_marker_file


@pytest.fixture
def make_sandbox(api: httpx.Client) -> Iterator[Callable[..., dict[str, Any]]]:
    """Create sandboxes with a chosen body (limits...); all are force-deleted afterwards."""
    created: list[str] = []

    def make(**body: Any) -> dict[str, Any]:
        sandbox = create_sandbox(api, **body)
        created.append(sandbox["id"])
        return sandbox

    yield make
    for sandbox_id in created:
        delete_sandbox(api, sandbox_id)


@pytest.fixture
def host_marker() -> Iterator[HostMarker]:
    with host_marker_file() as marker:
        yield marker
