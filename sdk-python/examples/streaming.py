"""Streaming command output, and stopping a long-running command through its pid.

Reads WORKSPACE_API_URL / WORKSPACE_API_KEY from the environment.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This folder holds concurrent.py, which would shadow the standard library's `concurrent`
# package (asyncio imports it) while the folder is on sys.path, as it is for
# `python examples/<name>.py`. Drop the folder from the path before importing anything else.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import signal

from workspace_sdk import CreateSandboxParams, RunCommandOptions, WorkspaceClient


def main() -> None:
    with WorkspaceClient() as client:
        sandbox = client.sandbox.create(CreateSandboxParams(template="workspace-test:latest"))
        try:
            # 1. A command that finishes: events arrive as output is produced, then `exit`.
            script = "for i in 1 2 3; do echo out $i; echo err $i >&2; sleep 0.1; done"
            for event in client.process.run_stream(sandbox.id, "sh", RunCommandOptions(args=["-c", script])):
                if event.type == "stdout":
                    print(f"stdout: {event.data}", end="")
                elif event.type == "stderr":
                    print(f"stderr: {event.data}", end="", file=sys.stderr)
                elif event.type == "exit":
                    print(f"exited with code {event.code}")

            # 2. A command that never ends on its own: follow a log, then stop it with the pid
            #    that the stream exposes once it has started.
            client.filesystem.write_string(sandbox.id, "/workspace/app.log", "booting\n")
            follow = RunCommandOptions(args=["-f", "/workspace/app.log"])
            with client.process.run_stream(sandbox.id, "tail", follow) as stream:
                print(f"tail started with pid {stream.pid}")
                client.process.run(
                    sandbox.id,
                    "sh",
                    RunCommandOptions(args=["-c", "echo ready >> /workspace/app.log"]),
                )
                for event in stream:
                    if event.type == "stdout":
                        print(f"log: {event.data}", end="")
                        if "ready" in event.data:
                            client.process.kill(sandbox.id, stream.pid, signal=signal.SIGTERM)
                    elif event.type == "exit":
                        print(f"tail stopped with code {event.code} (128 + SIGTERM)")
                    elif event.type == "error":
                        print(f"stream failed: [{event.code}] {event.message}")

            # 3. Leaving a stream early (break, or the end of its `with` block) disconnects,
            #    and the server kills the process.
            with client.process.run_stream(sandbox.id, "yes") as stream:
                for event in stream:
                    if event.type == "stdout":
                        print(f"yes printed {event.data.splitlines()[0]!r}...; leaving early")
                        break
            print(f"stream closed: {stream.closed}")
        finally:
            client.sandbox.delete(sandbox.id, force=True)


if __name__ == "__main__":
    main()
