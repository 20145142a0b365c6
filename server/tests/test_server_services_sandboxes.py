"""SandboxService and the warm pool, one layer alone: a fake runtime and fake agents
(tests/support/fake_sandboxes.py), the real store, agent link and SandboxAgent; no root."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from tests.support.fake_sandboxes import FakeRuntime
from workspace_server.config import Settings
from workspace_server.domain.errors import AgentNotConnected, InvalidRequest, SandboxNotFound, SandboxNotRunning
from workspace_server.domain.models import ResourceLimits, SandboxState
from workspace_server.domain.templates import TemplateRegistry
from workspace_server.metrics import Metrics
from workspace_server.services.create_request import CreateRequest
from workspace_server.services.lifecycle import LifecycleService
from workspace_server.services.processes import ProcessService, RunCommand
from workspace_server.services.recovery import AGENT_LOST_ON_RESTART, STARTING_ON_RESTART
from workspace_server.services.sandboxes import SandboxService
from workspace_server.store.sqlite import SandboxStore

ServiceFactory = Callable[..., Awaitable[SandboxService]]


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


@pytest.fixture
def runtime(tmp_path: Path) -> FakeRuntime:
    return FakeRuntime(tmp_path)


@pytest.fixture
async def make_service(tmp_path: Path, runtime: FakeRuntime) -> AsyncIterator[ServiceFactory]:
    """Start a SandboxService on the shared fake runtime and store; all are shut down at the end."""
    store = SandboxStore(tmp_path / "state.db")
    started: list[SandboxService] = []

    async def make(pool_size: int = 0, **settings: object) -> SandboxService:
        config = Settings(data_dir=tmp_path, pool_size=pool_size, **settings)  # type: ignore[arg-type]
        service = SandboxService(config, store, runtime, TemplateRegistry(), Metrics())
        await service.start()
        LifecycleService(service).start_background()  # timeouts
        started.append(service)
        return service

    yield make
    for service in started:
        await service.shutdown()
    for sandbox_id in list(runtime.agents):
        await runtime.destroy(sandbox_id)
    store.close()


async def test_create_claims_a_warm_sandbox_and_the_pool_refills(
    make_service: ServiceFactory, runtime: FakeRuntime
) -> None:
    service = await make_service(pool_size=2)
    await eventually(lambda: service.warm_count() == 2 * len(TemplateRegistry().names()))
    warm_ids = set(runtime.started)

    sandbox = await service.create(CreateRequest())

    assert sandbox.id in warm_ids and sandbox.state == SandboxState.RUNNING
    assert runtime.agents[sandbox.id].requests[-1]["argv"] == ["/bin/true"]  # warmed up before the claim
    await eventually(lambda: service.warm_count() == 2 * len(TemplateRegistry().names()))
    assert len(runtime.started) == len(warm_ids) + 1  # one refill for the one claim


async def test_the_pool_stops_where_disks_run_out_and_gives_them_up_to_a_cold_create(
    make_service: ServiceFactory, runtime: FakeRuntime
) -> None:
    runtime.disk_room_mb = 3 * 1024  # three default disks
    service = await make_service(pool_size=4)
    await eventually(lambda: service.warm_count() == 3)
    await asyncio.sleep(0.2)
    assert service.warm_count() == 3, "the pool went on filling without room"

    sandbox = await service.create(CreateRequest(disk_mb=2048))  # cold: two warm disks must go

    assert sandbox.state == SandboxState.RUNNING and runtime.disk_sizes[sandbox.id] == 2048
    assert service.warm_count() == 1
    await service.delete(sandbox.id)
    await eventually(lambda: service.warm_count() == 3)  # a delete lets the pools fill again


async def test_pool_serves_other_limits_by_applying_them(make_service: ServiceFactory, runtime: FakeRuntime) -> None:
    service = await make_service(pool_size=1)
    await eventually(lambda: service.warm_count() > 0)
    warm_ids = set(runtime.started)

    sandbox = await service.create(CreateRequest(cpu=0.5, memory_mb=256))

    assert sandbox.id in warm_ids
    assert runtime.limits_applied == [(sandbox.id, ResourceLimits(cpu=0.5, memory_mb=256))]


async def test_pool_serves_network_sandboxes_by_attaching_it(
    make_service: ServiceFactory, runtime: FakeRuntime
) -> None:
    service = await make_service(pool_size=1)
    await eventually(lambda: service.warm_count() > 0)
    warm_ids = set(runtime.started)

    sandbox = await service.create(CreateRequest(network=True))

    assert sandbox.id in warm_ids and sandbox.network
    assert runtime.networks_attached == [sandbox.id]


async def test_a_network_that_cannot_be_attached_starts_the_sandbox_cold(
    make_service: ServiceFactory, runtime: FakeRuntime
) -> None:
    service = await make_service(pool_size=1)
    await eventually(lambda: service.warm_count() > 0)
    warm_ids = set(runtime.started)
    runtime.fail_network_attach = True

    sandbox = await service.create(CreateRequest(network=True))

    assert sandbox.id not in warm_ids and sandbox.network
    await eventually(lambda: any(w in runtime.destroyed for w in warm_ids))  # the claimed one is discarded


async def test_limits_out_of_range_are_invalid_requests(make_service: ServiceFactory) -> None:
    service = await make_service()
    with pytest.raises(InvalidRequest, match="memory_mb must be between 32 and"):
        await service.create(CreateRequest(memory_mb=16))


async def test_restart_re_adopts_live_sandboxes_and_stops_the_rest_keeping_files(
    make_service: ServiceFactory, runtime: FakeRuntime
) -> None:
    first = await make_service()
    alive = await first.create(CreateRequest())
    dead = await first.create(CreateRequest())
    await first.shutdown()  # sandboxes outlive the server, as runc's do
    await runtime.agents[dead.id].stop()  # ...except this one, whose agent died meanwhile

    second = await make_service()

    assert second.get(alive.id).state == SandboxState.RUNNING
    result = await ProcessService(second).run(alive.id, RunCommand("echo", ["back"]), max_output=1024)
    assert result.stdout == "back\n"
    reported = second.get(dead.id)
    assert reported.state == SandboxState.STOPPED
    assert (reported.error_message or "").startswith(AGENT_LOST_ON_RESTART)
    assert runtime.has_disk(dead.id) and dead.id not in runtime.destroyed


async def test_restart_reports_a_sandbox_that_was_starting(make_service: ServiceFactory, runtime: FakeRuntime) -> None:
    first = await make_service()
    sandbox = await first.create(CreateRequest())
    first.store.put(replace(sandbox, state=SandboxState.STARTING, started_at=None))  # a create cut short
    await first.shutdown()

    second = await make_service()

    record = second.get(sandbox.id)
    assert record.state == SandboxState.ERROR and record.error_message == STARTING_ON_RESTART
    assert sandbox.id in runtime.destroyed


async def test_a_sandbox_is_deleted_when_its_timeout_fires(make_service: ServiceFactory, runtime: FakeRuntime) -> None:
    service = await make_service()
    sandbox = await service.create(CreateRequest(timeout=1))

    def gone() -> bool:
        try:
            service.get(sandbox.id)
        except SandboxNotFound:
            return True
        return False

    await eventually(gone, timeout=5)
    assert sandbox.id in runtime.destroyed and not runtime.has_disk(sandbox.id)


async def test_a_timeout_with_on_timeout_stop_keeps_the_files(
    make_service: ServiceFactory, runtime: FakeRuntime
) -> None:
    service = await make_service()
    sandbox = await service.create(CreateRequest(timeout=1, on_timeout="stop"))

    await eventually(lambda: service.get(sandbox.id).state == SandboxState.STOPPED, timeout=5)

    assert runtime.has_disk(sandbox.id) and sandbox.id not in runtime.destroyed
    with pytest.raises(SandboxNotRunning):
        service.agent(sandbox.id)


async def test_concurrent_deletes_stop_the_sandbox_once(make_service: ServiceFactory, runtime: FakeRuntime) -> None:
    service = await make_service()
    sandbox = await service.create(CreateRequest())

    await asyncio.gather(*(service.delete(sandbox.id) for _ in range(3)))

    assert runtime.destroyed.count(sandbox.id) == 1
    with pytest.raises(SandboxNotFound):
        service.get(sandbox.id)


async def test_a_graceful_delete_asks_the_agent_to_shut_down(
    make_service: ServiceFactory, runtime: FakeRuntime
) -> None:
    service = await make_service()
    sandbox = await service.create(CreateRequest())
    agent = runtime.agents[sandbox.id]

    await service.delete(sandbox.id)

    assert [r["op"] for r in agent.requests][-1] == "shutdown"


async def test_losing_the_agent_puts_the_sandbox_in_error(make_service: ServiceFactory, runtime: FakeRuntime) -> None:
    service = await make_service()
    sandbox = await service.create(CreateRequest())

    await runtime.agents[sandbox.id].stop()  # the agent dies: nothing to connect to again

    await eventually(lambda: service.get(sandbox.id).state == SandboxState.ERROR)
    with pytest.raises(AgentNotConnected, match="agent disconnected"):
        await ProcessService(service).run(sandbox.id, RunCommand("echo", ["hi"]), max_output=1024)


async def test_a_dropped_link_to_a_live_agent_is_connected_again(
    make_service: ServiceFactory, runtime: FakeRuntime
) -> None:
    service = await make_service()
    sandbox = await service.create(CreateRequest())
    first = service.agent(sandbox.id)

    runtime.agents[sandbox.id].drop_links()

    await eventually(lambda: not first.alive)
    await eventually(lambda: service.agent(sandbox.id) is not first)
    assert service.get(sandbox.id).state == SandboxState.RUNNING
    result = await ProcessService(service).run(sandbox.id, RunCommand("echo", ["hi"]), max_output=1024)
    assert result.exit_code == 0
