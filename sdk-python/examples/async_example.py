"""The async client: the same API with `await`, and concurrency with asyncio.gather.

Reads WORKSPACE_API_URL / WORKSPACE_API_KEY from the environment.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This folder holds concurrent.py, which would shadow the standard library's `concurrent`
# package (asyncio imports it) while the folder is on sys.path, as it is for
# `python examples/<name>.py`. Drop the folder from the path before importing anything else.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import asyncio

from workspace_sdk import AsyncWorkspaceClient, CreateSandboxParams, RunCommandOptions


async def main() -> None:
    async with AsyncWorkspaceClient() as client:
        sandbox = await client.sandbox.create(CreateSandboxParams(template="workspace-test:latest"))
        print(f"Created sandbox {sandbox.id}")
        try:
            # Independent calls run concurrently over the client's one connection pool.
            uname, listing, _ = await asyncio.gather(
                client.process.run(sandbox.id, "uname", RunCommandOptions(args=["-s"])),
                client.process.run(sandbox.id, "ls", RunCommandOptions(args=["-a", "/"])),
                client.filesystem.write_string(sandbox.id, "/workspace/notes.txt", "async notes\n"),
            )
            print(f"uname: {uname.stdout.strip()}")
            print(f"/ has {len(listing.stdout.split())} entries")
            notes = await client.filesystem.read_string(sandbox.id, "/workspace/notes.txt")
            print(f"notes.txt: {notes!r}")

            # Stream output as it is produced.
            command = RunCommandOptions(args=["-c", "for i in 1 2 3; do echo step $i; sleep 0.2; done"])
            async with client.process.run_stream(sandbox.id, "sh", command) as stream:
                print(f"streaming pid {stream.pid}")
                async for event in stream:
                    if event.type == "stdout":
                        print(f"  {event.data.strip()}")
                    elif event.type == "exit":
                        print(f"  exited with {event.code}")

            sandboxes = await client.sandbox.list(state="running")
            print(f"{len(sandboxes)} running sandbox(es) on the server")
        finally:
            await client.sandbox.delete(sandbox.id, force=True)
            print(f"Deleted sandbox {sandbox.id}")


if __name__ == "__main__":
    asyncio.run(main())
