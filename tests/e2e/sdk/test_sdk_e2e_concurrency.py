"""One client shared by threads (sync) or tasks (async), against a live server."""

from __future__ import annotations

import asyncio
import threading

from workspace_sdk import AsyncWorkspaceClient, RunCommandOptions, StdoutEvent, WorkspaceClient


def test_five_threads_share_one_sync_client(client: WorkspaceClient, sandbox_id: str) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(5)

    def worker(worker_id: int) -> None:
        try:
            barrier.wait(timeout=30)  # start together to maximise overlap
            for round_number in range(5):
                path = f"/workspace/t{worker_id}-{round_number}.txt"
                text = f"worker {worker_id} round {round_number}\n"
                client.filesystem.write_string(sandbox_id, path, text)
                result = client.process.run(sandbox_id, "cat", RunCommandOptions(args=[path]))
                assert result.stdout == text
                assert client.filesystem.read_string(sandbox_id, path) == text
                streamed = [
                    e.data
                    for e in client.process.run_stream(sandbox_id, "echo", RunCommandOptions(args=[str(worker_id)]))
                    if isinstance(e, StdoutEvent)
                ]
                assert "".join(streamed) == f"{worker_id}\n"
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert len(client.filesystem.list(sandbox_id, "/workspace")) >= 25


async def test_gather_on_one_async_client(aclient: AsyncWorkspaceClient, sandbox_id: str) -> None:
    async def worker(worker_id: int) -> str:
        path = f"/workspace/g{worker_id}.txt"
        await aclient.filesystem.write_string(sandbox_id, path, f"{worker_id}")
        result = await aclient.process.run(sandbox_id, "cat", RunCommandOptions(args=[path]))
        streamed = ""
        async for event in aclient.process.run_stream(sandbox_id, "echo", RunCommandOptions(args=["s"])):
            if event.type == "stdout":
                streamed += event.data
        return result.stdout + streamed

    results = await asyncio.gather(*(worker(i) for i in range(20)))
    assert results == [f"{i}s\n" for i in range(20)]
