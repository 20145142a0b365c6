# Generated from _async/sandbox.py by scripts/unasync.py. Do not edit: edit that file.
"""``client.sandbox``: create, inspect, list and delete sandboxes."""

from __future__ import annotations

import builtins
import time

from .._exceptions import SandboxNotFoundError, WaitTimeoutError, WorkspaceError
from .._primitives import sleep
from .._protocol import sandbox as protocol
from ..types import CreateSandboxParams, Sandbox, SandboxState
from ._api_client import APIClient


class SandboxService:
    """Sandbox lifecycle."""

    def __init__(self, api: APIClient) -> None:
        self._api = api

    def create(self, params: CreateSandboxParams | None = None) -> Sandbox:
        """Create a sandbox and return it once it is ``running`` (its agent is connected).

        Without ``params`` the server's default template and limits are used. An unknown
        template raises ``TemplateNotFoundError``.
        """
        data = self._api.request_json(protocol.create_request(params))
        return protocol.parse_sandbox(data)

    def get(self, sandbox_id: str) -> Sandbox:
        """Fetch one sandbox; ``SandboxNotFoundError`` if it does not exist (any more)."""
        data = self._api.request_json(protocol.get_request(sandbox_id))
        return protocol.parse_sandbox(data)

    def list(self, state: SandboxState | None = None) -> builtins.list[Sandbox]:
        """All sandboxes, or only those in ``state``."""
        data = self._api.request_json(protocol.list_request(state))
        return protocol.parse_sandbox_list(data)

    def exists(self, sandbox_id: str) -> bool:
        """Whether the sandbox exists, in any state."""
        try:
            self.get(sandbox_id)
        except SandboxNotFoundError:
            return False
        return True

    def delete(self, sandbox_id: str, force: bool = False) -> None:
        """Delete the sandbox. Without ``force`` its processes get SIGTERM and a short grace
        period; with it they are killed at once. Deleted sandboxes are gone for good."""
        self._api.request(protocol.delete_request(sandbox_id, force))

    def wait_for_state(
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
            sandbox = self.get(sandbox_id)
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
            sleep(min(poll_interval, remaining))
