"""The build log's SSE events end on character boundaries (api/routes/builds.py)."""

from __future__ import annotations

import pytest

from workspace_server.api.routes.builds import complete_utf8


@pytest.mark.parametrize(
    ("data", "usable"),
    [
        (b"", 0),
        (b"plain", 5),
        ("é".encode(), 2),
        ("é".encode()[:1], 0),
        (b"ab" + "€".encode()[:2], 2),
        (b"ab" + "😍".encode()[:3], 2),
        (b"ab" + "😍".encode(), 6),
        (b"\xff\xfe", 2),  # not UTF-8 at all: sent as is (replaced when decoded)
    ],
)
def test_complete_utf8(data: bytes, usable: int) -> None:
    assert complete_utf8(data) == usable
