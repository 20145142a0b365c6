#!/usr/bin/env python3
"""Generate ``workspace_sdk/_sync`` from ``workspace_sdk/_async`` by rewriting tokens.

The async client is the only hand-written I/O code; this script derives the sync client
from it line by line, the way httpcore's ``scripts/unasync.py`` does, so the two cannot drift.

    python scripts/unasync.py           # regenerate _sync/
    python scripts/unasync.py --check   # exit 1 (with a diff) if _sync/ is out of date

Where sync and async differ by more than these rewrites (threads vs tasks, sleeping, ...),
the async code calls a twin from ``workspace_sdk/_primitives.py`` named ``AsyncX``/``async_x``,
and the rewrite points the sync code at ``X``/``x``.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "workspace_sdk"
ASYNC_DIR = PACKAGE / "_async"
SYNC_DIR = PACKAGE / "_sync"

# Order matters: module paths before the generic Async prefix rule, and the multi-word
# keywords before the bare identifiers.
RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(pattern), replacement)
    for pattern, replacement in [
        (r"\bwebsockets\.asyncio\.client\b", "websockets.sync.client"),
        (r"\bAsync([A-Z]\w*)", r"\1"),  # AsyncWorkspaceClient, httpx.AsyncClient, AsyncIterator
        (r"\basync_(?=[a-z])", ""),  # _primitives twins: async_sleep -> sleep
        (r"\basync (def|with|for)\b", r"\1"),
        (r"\bawait ", ""),
        (r"\b__aenter__\b", "__enter__"),
        (r"\b__aexit__\b", "__exit__"),
        (r"\b__aiter__\b", "__iter__"),
        (r"\b__anext__\b", "__next__"),
        (r"\basynccontextmanager\b", "contextmanager"),
        (r"\benter_async_context\b", "enter_context"),
        (r"\bStopAsyncIteration\b", "StopIteration"),
        (r"\baiter_bytes\b", "iter_bytes"),
        (r"\baiter_raw\b", "iter_raw"),
        (r"\baread\b", "read"),
        (r"\baclose\b", "close"),
        (r"\banext\b", "next"),
    ]
]

HEADER = "# Generated from _async/{name} by scripts/unasync.py. Do not edit: edit that file.\n"


def unasync_line(line: str) -> str:
    for pattern, replacement in RULES:
        line = pattern.sub(replacement, line)
    return line


def unasync_source(source: str, name: str) -> str:
    lines = source.splitlines(keepends=True)
    return HEADER.format(name=name) + "".join(unasync_line(line) for line in lines)


def expected_sync_files() -> dict[str, str]:
    return {
        path.name: unasync_source(path.read_text(encoding="utf-8"), path.name)
        for path in sorted(ASYNC_DIR.glob("*.py"))
    }


def generate() -> None:
    SYNC_DIR.mkdir(exist_ok=True)
    expected = expected_sync_files()
    for stale in sorted({p.name for p in SYNC_DIR.glob("*.py")} - set(expected)):
        (SYNC_DIR / stale).unlink()
        print(f"removed _sync/{stale}")
    for name, text in expected.items():
        target = SYNC_DIR / name
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
            print(f"wrote _sync/{name}")


def check() -> int:
    """Return the number of files in _sync/ that differ from what would be generated."""
    expected = expected_sync_files()
    actual = {p.name: p.read_text(encoding="utf-8") for p in SYNC_DIR.glob("*.py")}
    problems = 0
    for name in sorted(set(expected) | set(actual)):
        want, have = expected.get(name), actual.get(name)
        if want == have:
            continue
        problems += 1
        if have is None:
            print(f"_sync/{name} is missing")
        elif want is None:
            print(f"_sync/{name} has no _async/{name} source")
        else:
            sys.stdout.writelines(
                difflib.unified_diff(
                    have.splitlines(keepends=True),
                    want.splitlines(keepends=True),
                    fromfile=f"_sync/{name} (on disk)",
                    tofile=f"_sync/{name} (generated)",
                )
            )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if _sync/ is out of date")
    args = parser.parse_args(argv)
    if args.check:
        problems = check()
        if problems:
            print(f"{problems} file(s) out of date; run: python scripts/unasync.py", file=sys.stderr)
            return 1
        print("_sync/ is up to date")
        return 0
    generate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
