"""Configuration defaults (arguments, environment, fallbacks) and the timeout policies."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from workspace_sdk import AsyncWorkspaceClient, WorkspaceClient
from workspace_sdk._config import ClientConfig


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORKSPACE_API_URL", raising=False)
    monkeypatch.delenv("WORKSPACE_API_KEY", raising=False)


def test_defaults_without_environment() -> None:
    config = ClientConfig.resolve(None, None, 60.0)
    assert (config.api_url, config.api_key, config.timeout) == ("http://localhost:8080", None, 60.0)
    assert "Authorization" not in config.headers


def test_environment_supplies_url_and_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKSPACE_API_URL", "http://env.test:9000/")
    monkeypatch.setenv("WORKSPACE_API_KEY", "env-key")
    config = ClientConfig.resolve(None, None, 60.0)
    assert config.api_url == "http://env.test:9000"
    assert config.headers["Authorization"] == "Bearer env-key"


def test_arguments_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKSPACE_API_URL", "http://env.test")
    monkeypatch.setenv("WORKSPACE_API_KEY", "env-key")
    config = ClientConfig.resolve("http://arg.test", "arg-key", 5)
    assert (config.api_url, config.api_key, config.timeout) == ("http://arg.test", "arg-key", 5.0)


def test_empty_key_means_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKSPACE_API_KEY", "")
    assert ClientConfig.resolve(None, None, 60.0).api_key is None
    assert ClientConfig.resolve(None, "", 60.0).api_key is None


@pytest.mark.parametrize("url", ["localhost:8080", "ftp://x", "http://", ""])
def test_invalid_urls_are_rejected(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKSPACE_API_URL", "ftp://also-bad")
    with pytest.raises(ValueError, match="api_url"):
        ClientConfig.resolve(url, None, 60.0)


@pytest.mark.parametrize("timeout", [0, -1, float("inf"), float("nan"), True])
def test_invalid_timeouts_are_rejected(timeout: float) -> None:
    with pytest.raises(ValueError, match="timeout"):
        ClientConfig.resolve(None, None, timeout)


def test_first_positional_argument_is_the_url() -> None:
    with WorkspaceClient("http://positional.test", None, 12.5) as client:
        assert (client.api_url, client.timeout) == ("http://positional.test", 12.5)
    assert repr(client) == "<WorkspaceClient api_url='http://positional.test'>"


def test_websocket_urls() -> None:
    config = ClientConfig.resolve("https://host.test/prefix", None, 60.0)
    assert config.websocket_url("/sandboxes/s/pty", {"cols": "80", "shell": "/bin/bash"}) == (
        "wss://host.test/prefix/api/v1/sandboxes/s/pty?cols=80&shell=%2Fbin%2Fbash"
    )
    assert ClientConfig.resolve("http://h:1", None, 1).websocket_url("/x", {}) == "ws://h:1/api/v1/x"


def test_timeout_policies() -> None:
    config = ClientConfig.resolve(None, None, 60.0)
    assert config.request_timeout() == httpx.Timeout(60.0)
    assert config.command_timeout(None) == httpx.Timeout(60.0)
    assert config.command_timeout(30) == httpx.Timeout(60.0)  # already long enough
    assert config.command_timeout(300) == httpx.Timeout(60.0, read=310.0)
    assert config.stream_timeout() == httpx.Timeout(60.0)
    short = ClientConfig.resolve(None, None, 2.0)
    assert short.stream_timeout() == httpx.Timeout(2.0, read=30.0)


async def test_cancellation_leaves_async_client_usable() -> None:
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(30)  # the first request hangs until cancelled
        return httpx.Response(200, json={"sandboxes": []})

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    async with AsyncWorkspaceClient("http://x.test", http_client=http) as client:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(client.sandbox.list(), 0.05)
        assert await client.sandbox.list() == []
    await http.aclose()
