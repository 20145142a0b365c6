"""``client.template``: the templates sandboxes can be created from."""

from __future__ import annotations

import builtins

from .._protocol import template as protocol
from ..types import Template
from ._api_client import AsyncAPIClient


class AsyncTemplateService:
    """Available templates."""

    def __init__(self, api: AsyncAPIClient) -> None:
        self._api = api

    async def list(self) -> builtins.list[Template]:
        """All templates the server offers (``workspace-test:latest`` is always there)."""
        data = await self._api.request_json(protocol.list_request())
        return protocol.parse_template_list(data)
