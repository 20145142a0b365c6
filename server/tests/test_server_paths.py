from __future__ import annotations

import pytest

from workspace_server.domain.errors import InvalidRequest
from workspace_server.domain.paths import sandbox_path


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/workspace/a.txt", "/workspace/a.txt"),
        ("a.txt", "/workspace/a.txt"),
        ("sub/dir/", "/workspace/sub/dir"),
        ("/tmp//x/./y", "/tmp/x/y"),
        ("/", "/"),
        ("//etc", "/etc"),
    ],
)
def test_paths_are_normalised_inside_the_sandbox(raw: str, expected: str) -> None:
    assert sandbox_path(raw) == expected


@pytest.mark.parametrize("raw", ["", "../etc/passwd", "/workspace/../../etc", "a\x00b", "/" + "a" * 256, "/x" * 3000])
def test_bad_paths_get_invalid_request(raw: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        sandbox_path(raw)
    assert info.value.code == "INVALID_REQUEST"
