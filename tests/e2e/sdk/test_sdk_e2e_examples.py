"""Each example script runs to completion against a live server, configured only through
WORKSPACE_API_URL, and leaves no sandbox behind."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from workspace_sdk import WorkspaceClient

EXAMPLES_DIR = Path(__file__).resolve().parents[3] / "sdk-python" / "examples"

EXAMPLES = ["basic", "async_example", "streaming", "concurrent", "error_handling", "background"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs(name: str, run_python: Callable[..., CompletedProcess[str]], server_url: str) -> None:
    with WorkspaceClient(server_url) as client:
        before = {s.id for s in client.sandbox.list()}
        result = run_python(str(EXAMPLES_DIR / f"{name}.py"))
        assert result.returncode == 0, f"{name}.py failed:\n{result.stdout}\n{result.stderr}"
        assert result.stdout.strip(), f"{name}.py printed nothing"
        leftover = {s.id for s in client.sandbox.list()} - before
    assert leftover == set(), f"{name}.py left sandboxes behind: {leftover}"
