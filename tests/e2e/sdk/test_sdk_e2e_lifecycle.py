"""The SDK's lifecycle calls end to end, sync and async: pause, resume, stop, start, fork,
set_timeout, wait_for_state on the new states, and the new exceptions."""

from __future__ import annotations

import pytest

from workspace_sdk import (
    AsyncWorkspaceClient,
    CreateSandboxParams,
    ForkSandboxParams,
    InvalidStateTransitionError,
    RunCommandOptions,
    SandboxNotFoundError,
    SandboxPausedError,
    WorkspaceClient,
)

TEMPLATE = "workspace-test:latest"


def sync_sh(client: WorkspaceClient, sandbox_id: str, script: str) -> str:
    result = client.process.run(sandbox_id, "bash", RunCommandOptions(args=["-c", script]))
    assert result.exit_code == 0, result
    return result.stdout


async def async_sh(client: AsyncWorkspaceClient, sandbox_id: str, script: str) -> str:
    result = await client.process.run(sandbox_id, "bash", RunCommandOptions(args=["-c", script]))
    assert result.exit_code == 0, result
    return result.stdout


def test_sync_lifecycle(client: WorkspaceClient) -> None:
    sandbox = client.sandbox.create(
        CreateSandboxParams(template=TEMPLATE, metadata={"k": "v"}, on_timeout="stop", auto_resume=False)
    )
    fork_id = None
    try:
        assert (sandbox.on_timeout, sandbox.auto_resume, sandbox.idle_timeout) == ("stop", False, None)
        sync_sh(client, sandbox.id, "echo one > /workspace/f")
        assert client.sandbox.pause(sandbox.id).state == "paused"
        assert client.sandbox.pause(sandbox.id).state == "paused"  # harmless repeat
        assert client.sandbox.wait_for_state(sandbox.id, "paused", timeout=5).state == "paused"
        with pytest.raises(SandboxPausedError) as paused:
            client.process.run(sandbox.id, "true")
        assert paused.value.sandbox_id == sandbox.id and paused.value.status_code == 409
        assert client.filesystem.read(sandbox.id, "/workspace/f") == b"one\n"  # files work while paused
        with pytest.raises(InvalidStateTransitionError) as invalid:
            client.sandbox.start(sandbox.id)
        assert (invalid.value.state, invalid.value.operation) == ("paused", "start")
        assert client.sandbox.resume(sandbox.id).state == "running"

        stopped = client.sandbox.stop(sandbox.id)
        assert stopped.state == "stopped"
        assert sandbox.id in {s.id for s in client.sandbox.list(state="stopped")}
        assert client.sandbox.start(sandbox.id).state == "running"
        assert sync_sh(client, sandbox.id, "cat /workspace/f") == "one\n"

        fork = client.sandbox.fork(sandbox.id, ForkSandboxParams(metadata={"k": "fork"}, memory_mb=128))
        fork_id = fork.id
        assert (fork.state, fork.metadata, fork.memory_mb, fork.on_timeout) == ("running", {"k": "fork"}, 128, "stop")
        assert sync_sh(client, fork.id, "cat /workspace/f") == "one\n"

        updated = client.sandbox.set_timeout(sandbox.id, 1, on_timeout="pause")
        assert (updated.timeout, updated.on_timeout) == (1, "pause")
        assert client.sandbox.wait_for_state(sandbox.id, "paused", timeout=10, poll_interval=0.1).state == "paused"
    finally:
        for sandbox_id in (sandbox.id, fork_id):
            if sandbox_id is not None:
                client.sandbox.delete(sandbox_id, force=True)
    with pytest.raises(SandboxNotFoundError):
        client.sandbox.pause(sandbox.id)


async def test_async_lifecycle(aclient: AsyncWorkspaceClient) -> None:
    sandbox = await aclient.sandbox.create(CreateSandboxParams(template=TEMPLATE, idle_timeout=600))
    fork_id = None
    try:
        assert (sandbox.on_timeout, sandbox.auto_resume, sandbox.idle_timeout) == ("delete", True, 600)
        await async_sh(aclient, sandbox.id, "echo one > /workspace/f")
        assert (await aclient.sandbox.pause(sandbox.id)).state == "paused"
        # auto_resume (the default): a command resumes it.
        assert await async_sh(aclient, sandbox.id, "cat /workspace/f") == "one\n"
        assert (await aclient.sandbox.get(sandbox.id)).state == "running"
        assert (await aclient.sandbox.resume(sandbox.id)).state == "running"  # harmless repeat

        assert (await aclient.sandbox.stop(sandbox.id, force=True)).state == "stopped"
        assert (await aclient.sandbox.stop(sandbox.id)).state == "stopped"
        with pytest.raises(InvalidStateTransitionError):
            await aclient.sandbox.resume(sandbox.id)
        fork = await aclient.sandbox.fork(sandbox.id)  # of a stopped sandbox
        fork_id = fork.id
        assert await async_sh(aclient, fork.id, "cat /workspace/f") == "one\n"
        assert (await aclient.sandbox.start(sandbox.id)).state == "running"
        assert (await aclient.sandbox.wait_for_state(sandbox.id, "running", timeout=5)).state == "running"

        updated = await aclient.sandbox.set_timeout(sandbox.id, 1, on_timeout="stop", idle_timeout=0)
        assert (updated.on_timeout, updated.idle_timeout) == ("stop", None)
        stopped = await aclient.sandbox.wait_for_state(sandbox.id, "stopped", timeout=10, poll_interval=0.1)
        assert stopped.expires_at is None
    finally:
        for sandbox_id in (sandbox.id, fork_id):
            if sandbox_id is not None:
                await aclient.sandbox.delete(sandbox_id, force=True)
