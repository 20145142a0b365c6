"""Concurrent use: one sync client shared by threads, one async client shared by tasks.

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
from concurrent.futures import ThreadPoolExecutor

from workspace_sdk import (
    AsyncWorkspaceClient,
    CreateSandboxParams,
    RunCommandOptions,
    WorkspaceClient,
)

TEMPLATE = CreateSandboxParams(template="workspace-test:latest")


def threads_sharing_one_client() -> None:
    """WorkspaceClient is thread-safe: threads share its connection pool."""
    with WorkspaceClient() as client:
        sandbox = client.sandbox.create(TEMPLATE)
        try:

            def worker(worker_id: int) -> str:
                path = f"/workspace/worker-{worker_id}.txt"
                client.filesystem.write_string(sandbox.id, path, f"written by {worker_id}\n")
                result = client.process.run(sandbox.id, "cat", RunCommandOptions(args=[path]))
                return result.stdout.strip()

            with ThreadPoolExecutor(max_workers=5) as pool:
                for line in pool.map(worker, range(5)):
                    print(f"thread: {line}")
        finally:
            client.sandbox.delete(sandbox.id, force=True)


async def tasks_sharing_one_client() -> None:
    """AsyncWorkspaceClient is safe under asyncio.gather: one sandbox per task here."""
    async with AsyncWorkspaceClient() as client:

        async def worker(worker_id: int) -> str:
            sandbox = await client.sandbox.create(TEMPLATE)
            try:
                result = await client.process.run(sandbox.id, "echo", RunCommandOptions(args=[f"Worker {worker_id}"]))
                return f"{result.stdout.strip()} in {sandbox.id}"
            finally:
                await client.sandbox.delete(sandbox.id, force=True)

        for line in await asyncio.gather(*(worker(i) for i in range(5))):
            print(f"task: {line}")


def main() -> None:
    threads_sharing_one_client()
    asyncio.run(tasks_sharing_one_client())


if __name__ == "__main__":
    main()
