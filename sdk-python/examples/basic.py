"""Basic usage: create a sandbox, run commands, read and write files, clean up.

The client reads the server URL and API key from WORKSPACE_API_URL / WORKSPACE_API_KEY
(default http://localhost:8080, no key).
"""

from __future__ import annotations

import sys
from pathlib import Path

# This folder holds concurrent.py, which would shadow the standard library's `concurrent`
# package (asyncio imports it) while the folder is on sys.path, as it is for
# `python examples/<name>.py`. Drop the folder from the path before importing anything else.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from workspace_sdk import CreateSandboxParams, RunCommandOptions, WorkspaceClient


def main() -> None:
    with WorkspaceClient() as client:
        sandbox = client.sandbox.create(
            CreateSandboxParams(template="workspace-test:latest", metadata={"example": "basic"})
        )
        print(f"Created sandbox {sandbox.id} ({sandbox.state}, template {sandbox.template})")
        try:
            # Commands run directly, without a shell: arguments go in `args`.
            result = client.process.run(sandbox.id, "echo", RunCommandOptions(args=["Hello", "World"]))
            print(f"echo -> exit {result.exit_code}: {result.stdout.strip()}")

            # Use `sh -c` when you want shell syntax; env and cwd apply to the command.
            result = client.process.run(
                sandbox.id,
                "sh",
                RunCommandOptions(
                    args=["-c", 'echo "$GREETING from $(pwd)"; echo oops >&2; exit 3'],
                    env={"GREETING": "hi"},
                    cwd="/workspace",
                ),
            )
            print(f"sh -> exit {result.exit_code}, stdout {result.stdout.strip()!r}, stderr {result.stderr.strip()!r}")

            # Files: write, list, read back, and run what we wrote.
            client.filesystem.mkdir(sandbox.id, "/workspace/demo", recursive=True)
            client.filesystem.write_string(sandbox.id, "/workspace/demo/hello.py", "print('hello from', __file__)\n")
            for info in client.filesystem.list(sandbox.id, "/workspace/demo"):
                print(f"{info.type:10} {info.size:8} {info.mode} {info.name}")
            result = client.process.run(
                sandbox.id, "python3", RunCommandOptions(args=["demo/hello.py"], cwd="/workspace")
            )
            print(f"python3 -> {result.stdout.strip()}")

            # stdin is sent, then closed, so tools that read it never hang.
            result = client.process.run(sandbox.id, "wc", RunCommandOptions(args=["-l"], stdin="a\nb\n"))
            print(f"wc -l counted {result.stdout.strip()} lines")
        finally:
            client.sandbox.delete(sandbox.id, force=True)
            print(f"Deleted sandbox {sandbox.id}")


if __name__ == "__main__":
    main()
