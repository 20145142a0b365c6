"""Running the `workspace` command line as a separate process, as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

WORKSPACE = Path(sys.executable).with_name("workspace")


def cli_env(url: str, api_key: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WORKSPACE_API_URL", "WORKSPACE_API_KEY")}
    env["WORKSPACE_API_URL"] = url
    if api_key is not None:
        env["WORKSPACE_API_KEY"] = api_key
    env["COLUMNS"] = "200"
    return env


def run_cli(
    url: str, *args: str, api_key: str | None = None, input: bytes | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(WORKSPACE), *args],
        env=cli_env(url, api_key),
        input=input,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def run_json(url: str, *args: str, api_key: str | None = None) -> Any:
    """Run a verb with --json; it must succeed and print one JSON document."""
    split = args.index("--") if "--" in args else len(args)
    result = run_cli(url, *args[:split], "--json", *args[split:], api_key=api_key)
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)
