"""ProcessService against fake agents (tests/support/fake_sandboxes.py): output coalescing,
UTF-8 split across frames, exit codes, agent errors; no root."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.fake_sandboxes import FakeAgent, FakeRuntime, Script
from workspace_server.config import Settings
from workspace_server.domain.errors import WorkspaceError
from workspace_server.domain.templates import TemplateRegistry
from workspace_server.metrics import Metrics
from workspace_server.services.create_request import CreateRequest
from workspace_server.services.event_streams import ProcessEvent
from workspace_server.services.processes import ProcessService, RunCommand
from workspace_server.services.sandboxes import SandboxService
from workspace_server.store.sqlite import SandboxStore


class Sandbox:
    def __init__(self, processes: ProcessService, sandbox_id: str, agent: FakeAgent) -> None:
        self.processes = processes
        self.id = sandbox_id
        self.agent = agent

    def script(self, script: Script) -> None:
        self.agent.script = lambda request: script

    async def events(self, command: str = "cmd") -> list[ProcessEvent]:
        _, events = await self.processes.stream(self.id, RunCommand(command), keepalive=5.0)
        return [event async for event in events if event is not None]


@pytest.fixture
async def sandbox(tmp_path: Path) -> AsyncIterator[Sandbox]:
    runtime = FakeRuntime(tmp_path)
    store = SandboxStore(tmp_path / "state.db")
    service = SandboxService(Settings(data_dir=tmp_path, pool_size=0), store, runtime, TemplateRegistry(), Metrics())
    await service.start()
    record = await service.create(CreateRequest())
    yield Sandbox(ProcessService(service), record.id, runtime.agents[record.id])
    await service.shutdown()
    await runtime.destroy(record.id)
    store.close()


def outputs(events: list[ProcessEvent], name: str) -> list[str]:
    return [str(event.data["data"]) for event in events if event.type == name]


async def test_queued_output_goes_out_as_one_event_per_stream_run(sandbox: Sandbox) -> None:
    sandbox.script(Script([("stdout", b"a" * 100)] * 50 + [("stderr", b"e")] + [("stdout", b"b")] * 10, exit_code=3))

    events = await sandbox.events()

    assert [event.type for event in events] == ["start", "stdout", "stderr", "stdout", "exit"]
    assert outputs(events, "stdout") == ["a" * 5000, "b" * 10]
    assert events[-1].data == {"code": 3}


async def test_a_character_split_across_frames_is_never_split_across_events(sandbox: Sandbox) -> None:
    text = "héllo wörld ✓ 😀"
    data = text.encode()
    # Every split point, each byte its own frame: the decoder must hold partial characters.
    sandbox.script(Script([("stdout", data[i : i + 1]) for i in range(len(data))]))

    events = await sandbox.events()

    assert "".join(outputs(events, "stdout")) == text
    assert all("\ufffd" not in piece for piece in outputs(events, "stdout"))


async def test_a_character_cut_by_the_exit_is_replaced_not_lost(sandbox: Sandbox) -> None:
    sandbox.script(Script([("stdout", b"ok \xe2\x9c")]))  # the first two bytes of a three-byte character

    events = await sandbox.events()

    assert "".join(outputs(events, "stdout")) == "ok \ufffd"
    assert events[-1].type == "exit"


async def test_run_collects_output_up_to_the_limit(sandbox: Sandbox) -> None:
    sandbox.script(Script([("stdout", b"x" * 600), ("stdout", b"y" * 600), ("stderr", "é".encode())], exit_code=1))

    result = await sandbox.processes.run(sandbox.id, RunCommand("cmd"), max_output=1000)

    assert result.exit_code == 1
    body = json.loads(b"".join(result.body()))
    assert body["stdout"] == "x" * 600 + "y" * 400 and body["stdout_truncated"] is True
    assert body["stderr"] == "é" and body["stderr_truncated"] is False


async def test_the_run_output_limit_counts_json_escapes_and_never_cuts_one(sandbox: Sandbox) -> None:
    # A control byte is six bytes of JSON (\u0001), a quote two: 1000 bytes hold 166 of them.
    sandbox.script(Script([("stdout", b"\x01" * 600), ("stderr", b'"' * 400 + b"\n" * 400)]))

    result = await sandbox.processes.run(sandbox.id, RunCommand("cmd"), max_output=1000)

    assert len(result.stdout_json) - 2 == 996 and result.stdout_truncated
    assert json.loads(bytes(result.stdout_json)) == "\x01" * 166
    assert len(result.stderr_json) - 2 == 1000 and result.stderr_truncated
    assert json.loads(bytes(result.stderr_json)) == '"' * 400 + "\n" * 100


async def test_an_empty_command_is_refused_before_the_agent_is_asked(sandbox: Sandbox) -> None:
    with pytest.raises(WorkspaceError) as caught:
        await sandbox.processes.run(sandbox.id, RunCommand(""), max_output=10)
    assert caught.value.code == "INVALID_REQUEST"
    assert not [r for r in sandbox.agent.requests if r["op"] == "spawn"]


async def test_the_agents_refusal_raises_with_its_code_and_details(sandbox: Sandbox) -> None:
    sandbox.script(Script(error=("COMMAND_NOT_FOUND", "nope: command not found")))

    with pytest.raises(WorkspaceError) as caught:
        await sandbox.processes.run(sandbox.id, RunCommand("nope"), max_output=10)

    assert (caught.value.code, caught.value.message) == ("COMMAND_NOT_FOUND", "nope: command not found")
    assert caught.value.details == {"command": "nope"}


async def test_closing_the_event_stream_early_ends_the_command(sandbox: Sandbox) -> None:
    sandbox.script(Script([("stdout", b"tick")], hang=True))
    _, events = await sandbox.processes.stream(sandbox.id, RunCommand("cmd"), keepalive=5.0)

    assert (await anext(events)).type == "start"  # type: ignore[union-attr]
    assert (await anext(events)).type == "stdout"  # type: ignore[union-attr]
    await events.aclose()  # type: ignore[attr-defined]

    for _ in range(200):
        if sandbox.agent.killed:
            break
        await asyncio.sleep(0.01)
    assert sandbox.agent.killed == ["closed"]
