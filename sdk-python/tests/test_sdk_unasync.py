"""scripts/unasync.py: the rewrite rules, and that _sync/ is up to date with _async/."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "unasync.py"


def load_unasync() -> ModuleType:
    spec = importlib.util.spec_from_file_location("workspace_sdk_unasync_rules", SCRIPT)
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


unasync = load_unasync()


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("async def run(self) -> X:", "def run(self) -> X:"),
        ("    async with self._lock:", "    with self._lock:"),
        ("    async for event in stream:", "    for event in stream:"),
        ("x = await self._api.request(r)", "x = self._api.request(r)"),
        ("class AsyncWorkspaceClient:", "class WorkspaceClient:"),
        ("http: httpx.AsyncClient | None", "http: httpx.Client | None"),
        ("-> AsyncIterator[bytes]:", "-> Iterator[bytes]:"),
        ("AsyncIterable[bytes] | AsyncFileContent", "Iterable[bytes] | FileContent"),
        ("await response.aclose()", "response.close()"),
        ("await response.aread()", "response.read()"),
        ("response.aiter_bytes(n)", "response.iter_bytes(n)"),
        ("await anext(self._body, None)", "next(self._body, None)"),
        ("async def __aenter__(self)", "def __enter__(self)"),
        ("async def __aexit__(self, *a)", "def __exit__(self, *a)"),
        ("def __aiter__(self)", "def __iter__(self)"),
        (
            "from .._primitives import AsyncBackgroundTask, async_sleep",
            "from .._primitives import BackgroundTask, sleep",
        ),
        (
            "from websockets.asyncio.client import connect",
            "from websockets.sync.client import connect",
        ),
        ("@asynccontextmanager", "@contextmanager"),
        ("except StopAsyncIteration:", "except StopIteration:"),
        # Words that merely contain the tokens are left alone.
        ("import asyncio", "import asyncio"),
        ("self.awaiting = Asynchronous", "self.awaiting = Asynchronous"),
        ("aclosed = reaclose", "aclosed = reaclose"),
    ],
)
def test_rewrite_rules(source: str, expected: str) -> None:
    assert unasync.unasync_line(source) == expected


def test_generated_files_carry_a_do_not_edit_header() -> None:
    for name, text in unasync.expected_sync_files().items():
        assert text.startswith(f"# Generated from _async/{name} by scripts/unasync.py")


def test_sync_package_is_up_to_date() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_mode_detects_drift(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sync_copy = tmp_path / "_sync"
    sync_copy.mkdir()
    for name, text in unasync.expected_sync_files().items():
        (sync_copy / name).write_text(text)
    monkeypatch.setattr(unasync, "SYNC_DIR", sync_copy)
    assert unasync.check() == 0

    edited = sync_copy / "client.py"
    edited.write_text(edited.read_text() + "\n# hand edit\n")
    (sync_copy / "orphan.py").write_text("")
    (sync_copy / "process.py").unlink()
    assert unasync.check() == 3
    assert unasync.main(["--check"]) == 1
