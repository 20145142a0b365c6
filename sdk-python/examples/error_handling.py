"""Error handling: every server error is an exception class chosen by its error code.

Reads WORKSPACE_API_URL / WORKSPACE_API_KEY from the environment.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This folder holds concurrent.py, which would shadow the standard library's `concurrent`
# package (asyncio imports it) while the folder is on sys.path, as it is for
# `python examples/<name>.py`. Drop the folder from the path before importing anything else.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import builtins

from workspace_sdk import (
    CommandNotFoundError,
    CreateSandboxParams,
    FileNotFoundError,
    ProcessTimeoutError,
    RunCommandOptions,
    SandboxNotFoundError,
    TemplateNotFoundError,
    WorkspaceClient,
    WorkspaceConnectionError,
    WorkspaceError,
)


def main() -> None:
    with WorkspaceClient() as client:
        # A sandbox that does not exist.
        try:
            client.sandbox.get("sbx-does-not-exist")
        except SandboxNotFoundError as e:
            print(f"SandboxNotFoundError: sandbox_id={e.sandbox_id!r} ({e})")
        else:
            raise SystemExit("expected SandboxNotFoundError")

        # A template that does not exist.
        try:
            client.sandbox.create(CreateSandboxParams(template="no-such-template:1"))
        except TemplateNotFoundError as e:
            print(f"TemplateNotFoundError: template={e.template!r}")
        else:
            raise SystemExit("expected TemplateNotFoundError")

        sandbox = client.sandbox.create(CreateSandboxParams(template="workspace-test:latest"))
        try:
            # A missing file. The SDK's FileNotFoundError is also the builtin one, so code
            # written for local files handles sandbox files too.
            try:
                client.filesystem.read(sandbox.id, "/workspace/missing.txt")
            except FileNotFoundError as e:
                print(f"FileNotFoundError: path={e.path!r}, errno={e.errno}")
            try:
                client.filesystem.read_string(sandbox.id, "/workspace/missing.txt")
            except builtins.FileNotFoundError:
                print("...and `except builtins.FileNotFoundError` catches it as well")

            # The command's own timeout: the server kills it and reports what it printed.
            try:
                client.process.run(
                    sandbox.id,
                    "sh",
                    RunCommandOptions(args=["-c", "echo started; sleep 30"], timeout=1),
                )
            except ProcessTimeoutError as e:
                print(f"ProcessTimeoutError after {e.timeout}s; output so far: {e.stdout.strip()!r}")
            else:
                raise SystemExit("expected ProcessTimeoutError")

            # A command that is not installed.
            try:
                client.process.run(sandbox.id, "invalid-command")
            except CommandNotFoundError as e:
                print(f"CommandNotFoundError: command={e.command!r}")

            # A non-zero exit code is a result, not an exception.
            result = client.process.run(sandbox.id, "false")
            print(f"`false` exited with {result.exit_code} (no exception)")

            # Everything derives from WorkspaceError, with .code, .message and .details.
            try:
                client.filesystem.list(sandbox.id, "/workspace/nope")
            except WorkspaceError as e:
                print(f"WorkspaceError [{e.code}] {e.message} details={e.details}")
        finally:
            client.sandbox.delete(sandbox.id, force=True)

    # A server that is not there: the message names the URL that failed.
    with WorkspaceClient("http://127.0.0.1:9", timeout=5) as offline:
        try:
            offline.sandbox.list()
        except WorkspaceConnectionError as e:
            print(f"WorkspaceConnectionError: {e}")
        else:
            raise SystemExit("expected WorkspaceConnectionError")


if __name__ == "__main__":
    main()
