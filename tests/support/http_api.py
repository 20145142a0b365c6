"""Helpers the end-to-end tests share: waiting for a condition, reading Server-Sent
Events, and running a command through the REST API."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any, TypeVar

import httpx

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float, interval: float = 0.05, what: str = "condition") -> T:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last value: {value!r})")
        time.sleep(interval)


async def async_wait_until(
    predicate: Callable[[], T], timeout: float, interval: float = 0.05, what: str = "condition"
) -> T:
    """wait_until for a test running in an event loop (the loop keeps running meanwhile)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what} (last value: {value!r})")
        await asyncio.sleep(interval)


def sse_events(lines: Iterable[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event, data) pairs from Server-Sent Events lines; comment lines are skipped."""
    name = "message"
    for line in lines:
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            yield name, json.loads(line[5:].strip())
            name = "message"


async def asse_events(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    name = "message"
    async for line in lines:
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            yield name, json.loads(line[5:].strip())
            name = "message"


def run(
    api: httpx.Client, sandbox_id: str, command: str, *args: str, expect_status: int | None = 200, **options: Any
) -> dict[str, Any]:
    """POST /processes/run; the decoded answer (a result, or an error envelope when
    `expect_status` says so or is None) with the response's status as `http_status`."""
    timeout = options.get("timeout")
    response = api.post(
        f"/sandboxes/{sandbox_id}/processes/run",
        json={"command": command, "args": list(args), **options},
        timeout=timeout + 30 if timeout else httpx.USE_CLIENT_DEFAULT,
    )
    if expect_status is not None:
        assert response.status_code == expect_status, response.text
    answer: dict[str, Any] = response.json()
    answer["http_status"] = response.status_code
    return answer
