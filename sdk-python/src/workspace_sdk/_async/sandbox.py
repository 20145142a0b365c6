"""``client.sandbox``: create, inspect, list and delete sandboxes."""

from __future__ import annotations

import builtins
import time

from .._exceptions import SandboxNotFoundError, WaitTimeoutError, WorkspaceError
from .._port_forward import AsyncPortForward
from .._primitives import async_sleep
from .._protocol import ports as ports_protocol
from .._protocol import sandbox as protocol
from .._protocol import template as template_protocol
from ..types import CreateSandboxParams, ForkSandboxParams, OnTimeout, Sandbox, SandboxState, Template
from ._api_client import AsyncAPIClient


class AsyncSandboxService:
    """Sandbox lifecycle."""

    def __init__(self, api: AsyncAPIClient) -> None:
        self._api = api

    async def create(self, params: CreateSandboxParams | None = None) -> Sandbox:
        """Create a sandbox and return it once it is ``running`` (its agent is connected).

        Without ``params`` the server's default template and limits are used. An unknown
        template raises ``TemplateNotFoundError``.
        """
        data = await self._api.request_json(protocol.create_request(params))
        return protocol.parse_sandbox(data)

    async def get(self, sandbox_id: str) -> Sandbox:
        """Fetch one sandbox; ``SandboxNotFoundError`` if it does not exist (any more)."""
        data = await self._api.request_json(protocol.get_request(sandbox_id))
        return protocol.parse_sandbox(data)

    async def list(self, state: SandboxState | None = None) -> builtins.list[Sandbox]:
        """All sandboxes, or only those in ``state``."""
        data = await self._api.request_json(protocol.list_request(state))
        return protocol.parse_sandbox_list(data)

    async def exists(self, sandbox_id: str) -> bool:
        """Whether the sandbox exists, in any state."""
        try:
            await self.get(sandbox_id)
        except SandboxNotFoundError:
            return False
        return True

    async def snapshot(self, sandbox_id: str, name: str, *, replace: bool = False, description: str = "") -> Template:
        """Save what the sandbox changed as a new template ``name`` (its processes are frozen
        meanwhile, then go on). The sandbox must run an image template."""
        data = await self._api.request_json(template_protocol.snapshot_request(sandbox_id, name, replace, description))
        return template_protocol.parse_template(data)

    async def delete(self, sandbox_id: str, force: bool = False) -> None:
        """Delete the sandbox. Without ``force`` its processes get SIGTERM and a short grace
        period; with it they are killed at once. Deleted sandboxes are gone for good."""
        await self._api.request(protocol.delete_request(sandbox_id, force))

    async def get_url(self, sandbox_id: str, port: int, public: bool = False, expires_in: int | None = None) -> str:
        """A ready URL for a server listening on ``port`` inside the sandbox (its own loopback
        is enough: the request goes through the sandbox's agent, with or without network).

        It is ``{port}-{sandbox_id}.{preview domain}``, a separate origin from the API. A
        private port's URL carries a signed token valid for ``expires_in`` seconds (the
        server's default is an hour); the browser keeps it in a cookie of that host alone.
        ``public=True`` makes the port public: its URL then needs no token."""
        data = await self._api.request_json(ports_protocol.preview_url_request(sandbox_id, port, public, expires_in))
        return ports_protocol.parse_url(data)

    async def list_public_ports(self, sandbox_id: str) -> builtins.list[int]:
        """The ports whose preview URLs need no token."""
        data = await self._api.request_json(ports_protocol.public_ports_request(sandbox_id))
        return ports_protocol.parse_ports(data)

    async def revoke_public_port(self, sandbox_id: str, port: int) -> builtins.list[int]:
        """Make the port private again (its URL needs a token); the public ports left."""
        data = await self._api.request_json(ports_protocol.set_public_request(sandbox_id, port, False))
        return ports_protocol.parse_ports(data)

    def port_forward(
        self, sandbox_id: str, remote_port: int, local_port: int = 0, host: str = "127.0.0.1"
    ) -> AsyncPortForward:
        """A context manager listening on ``host:local_port`` (0: any free port, see
        ``.local_port``) that relays each connection to ``remote_port`` on the sandbox's
        loopback, as raw TCP (databases, anything not HTTP)."""
        request = ports_protocol.port_forward_request(sandbox_id, remote_port)
        return AsyncPortForward(self._api, request, host, local_port)

    async def pause(self, sandbox_id: str) -> Sandbox:
        """Freeze the sandbox's processes: they use no CPU, keep their memory and resume
        where they were. Files and ``process.list`` keep working. Pausing a paused sandbox
        does nothing; a stopped one raises ``InvalidStateTransitionError``."""
        data = await self._api.request_json(protocol.lifecycle_request(sandbox_id, "pause"))
        return protocol.parse_sandbox(data)

    async def resume(self, sandbox_id: str) -> Sandbox:
        """Thaw a paused sandbox (its timeout counts again from now). Resuming a running
        sandbox does nothing."""
        data = await self._api.request_json(protocol.lifecycle_request(sandbox_id, "resume"))
        return protocol.parse_sandbox(data)

    async def stop(self, sandbox_id: str, force: bool = False) -> Sandbox:
        """End every process (SIGTERM and a 2 s grace, or at once with ``force``) and free
        the sandbox's memory; its files and settings are kept until ``delete``."""
        data = await self._api.request_json(protocol.lifecycle_request(sandbox_id, "stop", force))
        return protocol.parse_sandbox(data)

    async def start(self, sandbox_id: str) -> Sandbox:
        """Boot a stopped sandbox again on its files, with the same id and settings; returns
        it ``running``. Starting a running sandbox does nothing."""
        data = await self._api.request_json(protocol.lifecycle_request(sandbox_id, "start"))
        return protocol.parse_sandbox(data)

    async def fork(self, sandbox_id: str, params: ForkSandboxParams | None = None) -> Sandbox:
        """A new running sandbox with a copy of this one's files, taken while its processes
        are frozen, and its settings unless ``params`` changes them. Processes are not copied."""
        data = await self._api.request_json(protocol.fork_request(sandbox_id, params))
        return protocol.parse_sandbox(data)

    async def set_timeout(
        self,
        sandbox_id: str,
        timeout: int,
        on_timeout: OnTimeout | None = None,
        idle_timeout: int | None = None,
    ) -> Sandbox:
        """The sandbox times out ``timeout`` seconds from now (from its next start or resume
        if it is not running); optionally change what the timeout does and the idle timeout
        (``0`` turns it off)."""
        data = await self._api.request_json(protocol.set_timeout_request(sandbox_id, timeout, on_timeout, idle_timeout))
        return protocol.parse_sandbox(data)

    async def wait_for_state(
        self,
        sandbox_id: str,
        state: SandboxState,
        timeout: float = 60.0,
        poll_interval: float = 0.5,
    ) -> Sandbox:
        """Poll until the sandbox reaches ``state`` and return it.

        Raises ``WaitTimeoutError`` after ``timeout`` seconds, ``WorkspaceError`` (code
        ``SANDBOX_FAILED``) if the sandbox lands in ``"error"`` while another state was
        wanted, and ``SandboxNotFoundError`` if it disappears.
        """
        deadline = time.monotonic() + timeout
        while True:
            sandbox = await self.get(sandbox_id)
            if sandbox.state == state:
                return sandbox
            if sandbox.state == "error":
                raise WorkspaceError(
                    f"sandbox {sandbox_id} failed while waiting for state {state!r}: "
                    f"{sandbox.error_message or 'no error message'}",
                    code="SANDBOX_FAILED",
                    details={
                        "sandbox_id": sandbox_id,
                        "state": sandbox.state,
                        "error_message": sandbox.error_message,
                    },
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeoutError(
                    f"sandbox {sandbox_id} still {sandbox.state!r} after {timeout} s (waiting for {state!r})",
                    details={
                        "sandbox_id": sandbox_id,
                        "state": sandbox.state,
                        "expected_state": state,
                    },
                )
            await async_sleep(min(poll_interval, remaining))
