"""Per-sandbox gates (services/gates.py): operations exclusive, command starts shared."""

from __future__ import annotations

import asyncio

from workspace_server.services.gates import Gates


async def test_operations_wait_for_command_starts_and_block_new_ones() -> None:
    gate = Gates()("sbx-1")
    order: list[str] = []
    start_entered = asyncio.Event()
    release_start = asyncio.Event()

    async def command_start() -> None:
        async with gate.command_start():
            order.append("start begins")
            start_entered.set()
            await release_start.wait()
            order.append("start ends")

    async def operation() -> None:
        async with gate.operation():
            order.append("operation")

    async def late_start() -> None:
        async with gate.command_start():
            order.append("late start")

    first = asyncio.create_task(command_start())
    await start_entered.wait()
    op = asyncio.create_task(operation())
    await asyncio.sleep(0.01)
    late = asyncio.create_task(late_start())
    await asyncio.sleep(0.01)
    assert order == ["start begins"]  # the operation waits for the start in flight
    release_start.set()
    await asyncio.gather(first, op, late)
    assert order == ["start begins", "start ends", "operation", "late start"]


async def test_command_starts_run_together() -> None:
    gate = Gates()("sbx-1")
    inside = 0
    most = 0

    async def start() -> None:
        nonlocal inside, most
        async with gate.command_start():
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    await asyncio.gather(*(start() for _ in range(5)))
    assert most == 5


def test_idle_gates_are_forgotten() -> None:
    gates = Gates()
    first = gates("sbx-1")
    gates.forget("sbx-1")
    assert gates("sbx-1") is not first
