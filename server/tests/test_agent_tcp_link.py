"""The agent over TCP: the mutual proof of agent/handshake.py against a real agent process
(listening on loopback), as the Kubernetes runtime uses it. A pod at a reused IP, a wrong
token, something that is not an agent, or a peer that never proves anything must not get
or hijack a link."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from workspace_server import agent as agent_package
from workspace_server.agent_link.address import TcpAgentAddress
from workspace_server.agent_link.connection import AgentConnection, AgentDisconnected
from workspace_server.runtimes.kubernetes.labels import agent_token

KEY = b"s" * 32
AGENT = Path(agent_package.__file__).resolve().parent / "agent.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_agent(tmp_path: Path, identity: str, files: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    directory = tmp_path / "identity"
    directory.mkdir()
    for name, content in files.items():
        (directory / name).write_text(content)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-S", "-E", "-B", str(AGENT), "--listen-tcp", f"127.0.0.1:{port}", f"{identity}={directory}"],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # listening once a plain connect succeeds
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, port
        except OSError:
            time.sleep(0.01)
    process.kill()
    raise RuntimeError("the agent did not listen")


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[int]:
    process, port = start_agent(tmp_path, "--identity-dir", {"sandbox-id": "sbx-a", "token": agent_token(KEY, "sbx-a")})
    yield port
    process.kill()
    process.wait()


async def connect(port: int, sandbox_id: str, token: str, **kwargs: str) -> AgentConnection:
    return await AgentConnection.connect(TcpAgentAddress("127.0.0.1", port, sandbox_id, token, **kwargs), 5.0)


async def test_the_right_sandbox_gets_a_link(agent: int) -> None:
    connection = await connect(agent, "sbx-a", agent_token(KEY, "sbx-a"))
    assert (await connection.request({"op": "hello"}))["type"] == "ok"
    await connection.close()


@pytest.mark.parametrize(
    ("sandbox_id", "token"),
    [
        ("sbx-b", agent_token(KEY, "sbx-b")),  # another sandbox's pod answering at a reused IP
        ("sbx-a", agent_token(b"x" * 32, "sbx-a")),  # a token from another server's key
        ("sbx-a", "0" * 64),
    ],
)
async def test_a_wrong_identity_gets_no_link(agent: int, sandbox_id: str, token: str) -> None:
    with pytest.raises(AgentDisconnected, match=r"refused|prove"):
        await connect(agent, sandbox_id, token)


async def test_something_that_is_not_an_agent_is_refused() -> None:
    async def not_an_agent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n" + b"x" * 64)
        await writer.drain()

    server = await asyncio.start_server(not_an_agent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        with pytest.raises(AgentDisconnected, match="not a Workspace agent"):
            await connect(port, "sbx-a", agent_token(KEY, "sbx-a"))


async def test_an_unproven_peer_cannot_cut_the_link(agent: int) -> None:
    connection = await connect(agent, "sbx-a", agent_token(KEY, "sbx-a"))
    reader, writer = await asyncio.open_connection("127.0.0.1", agent)
    await reader.readexactly(40)
    writer.write(b"\x00\x00\x00\x02{}")  # a hello without any proof
    await writer.drain()
    assert b"false" in await reader.read(200)
    writer.close()
    assert (await connection.request({"op": "hello"}))["type"] == "ok"  # the server's link is intact
    await connection.close()


async def test_a_silent_peer_does_not_block_others(agent: int) -> None:
    silent = socket.create_connection(("127.0.0.1", agent))
    try:
        connection = await connect(agent, "sbx-a", agent_token(KEY, "sbx-a"))
        await connection.close()
    finally:
        silent.close()


@pytest.fixture
async def unbound_agent(tmp_path: Path) -> AsyncIterator[int]:
    process, port = start_agent(tmp_path, "--bind-dir", {"pod-uid": "uid-1234", "pod-name": "warm-pod"})
    yield port
    process.kill()
    process.wait()


async def test_a_warm_pool_agent_binds_once_to_the_pod_it_runs_in(unbound_agent: int) -> None:
    token = agent_token(KEY, "sbx-a")
    with pytest.raises(AgentDisconnected, match="another pod"):
        await connect(unbound_agent, "sbx-a", token, bind_pod_uid="uid-9999")
    with pytest.raises(AgentDisconnected, match="does not know its sandbox"):
        await connect(unbound_agent, "sbx-a", token)
    connection = await connect(unbound_agent, "sbx-a", token, bind_pod_uid="uid-1234")
    await connection.close()
    connection = await connect(unbound_agent, "sbx-a", token)  # bound: no bind needed any more
    await connection.close()
    with pytest.raises(AgentDisconnected, match="bound to another sandbox"):
        await connect(unbound_agent, "sbx-b", agent_token(KEY, "sbx-b"), bind_pod_uid="uid-1234")


def test_the_agent_refuses_a_bad_command_line() -> None:
    result = subprocess.run(
        [sys.executable, str(AGENT), "--listen-tcp", "127.0.0.1:1", "--no-identity"], capture_output=True, check=False
    )
    assert result.returncode == 2 and b"usage" in result.stderr
    assert os.path.exists(AGENT)
