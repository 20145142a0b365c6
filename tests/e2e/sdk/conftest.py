"""Fixtures for the SDK end-to-end tests: SDK clients and sandboxes on the live test server.

The server itself comes from the repository's tests/conftest.py (``workspace_server``,
``server_url``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from workspace_sdk import AsyncWorkspaceClient, CreateSandboxParams, SandboxNotFoundError, WorkspaceClient

TEMPLATE = "workspace-test:latest"
SDK_DIR = Path(__file__).resolve().parents[3] / "sdk-python"
README = SDK_DIR / "README.md"


@pytest.fixture
def client(server_url: str) -> Iterator[WorkspaceClient]:
    with WorkspaceClient(server_url) as sync_client:
        yield sync_client


@pytest.fixture
async def aclient(server_url: str) -> AsyncIterator[AsyncWorkspaceClient]:
    async with AsyncWorkspaceClient(server_url) as async_client:
        yield async_client


@pytest.fixture
def sandbox_id(server_url: str) -> Iterator[str]:
    """A fresh sandbox from the test template, force-deleted afterwards (by its own client,
    so tests may close theirs)."""
    with WorkspaceClient(server_url) as owner:
        sandbox = owner.sandbox.create(CreateSandboxParams(template=TEMPLATE))
        try:
            yield sandbox.id
        finally:
            try:
                owner.sandbox.delete(sandbox.id, force=True)
            except SandboxNotFoundError:
                pass  # the test deleted it itself


def readme_python_blocks(heading: str) -> list[str]:
    """The ```python blocks of sdk-python/README.md between ``heading`` and the next heading
    of the same or a higher level (``#`` lines inside code blocks are comments, not headings)."""
    level = len(heading.split(" ")[0])
    blocks: list[str] = []
    inside_section = in_fence = False
    current: list[str] | None = None
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
            if inside_section and line == "```python":
                current = []
            elif inside_section and current is not None and not in_fence:
                blocks.append("\n".join(current) + "\n")
                current = None
            continue
        if in_fence:
            if current is not None:
                current.append(line)
            continue
        match = re.match(r"^(#+) ", line)
        if match:
            if line == heading:
                inside_section = True
            elif inside_section and len(match.group(1)) <= level:
                break
    return blocks


@pytest.fixture
def readme_block() -> Callable[[str, int], str]:
    def get(heading: str, index: int = 0) -> str:
        return readme_python_blocks(heading)[index]

    return get


@pytest.fixture
def run_python(server_url: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run Python source or a script in a fresh interpreter pointed at the test server."""

    def run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "WORKSPACE_API_URL": server_url}
        env.pop("WORKSPACE_API_KEY", None)
        return subprocess.run(
            [sys.executable, *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
        )

    return run
