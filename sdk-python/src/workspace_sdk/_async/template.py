"""``client.template``: the templates sandboxes can be created from."""

from __future__ import annotations

import builtins
import os
import tarfile
import tempfile
from typing import IO

import httpx

from .._primitives import async_upload_chunks
from .._protocol import template as protocol
from ..types import LocalPath, Template
from ._api_client import AsyncAPIClient

UPLOAD_CHUNK = 1 << 20
# Unpacking a large image takes the server a while after the upload: wait for its answer.
IMPORT_TIMEOUT = httpx.Timeout(60.0, read=900.0)


class AsyncTemplateService:
    """Available templates: list, get, import an image archive, delete."""

    def __init__(self, api: AsyncAPIClient) -> None:
        self._api = api

    async def list(self) -> builtins.list[Template]:
        """All templates the server offers (``workspace-test:latest`` is always there)."""
        data = await self._api.request_json(protocol.list_request())
        return protocol.parse_template_list(data)

    async def get(self, name: str) -> Template:
        """One template (a bare name means ``name:latest``); ``TemplateNotFoundError`` if none."""
        data = await self._api.request_json(protocol.get_request(name))
        return protocol.parse_template(data)

    async def import_image(
        self, name: str, source: LocalPath | IO[bytes], *, replace: bool = False, description: str = ""
    ) -> Template:
        """Import an image archive as template ``name`` (``name[:tag]``), streamed.

        ``source`` is a ``docker save`` / ``podman save`` archive or an OCI image archive, as
        a path or a binary file object, or the path of an OCI layout directory (sent as a
        tar). ``TemplateExistsError`` if the name is taken and ``replace`` is false;
        ``InvalidImageError`` (with ``reason``) for an archive the server refuses.
        """
        if isinstance(source, (str, os.PathLike)):
            if os.path.isdir(source):
                with tempfile.TemporaryFile() as packed:
                    with tarfile.open(fileobj=packed, mode="w") as archive:
                        archive.add(os.fspath(source), arcname=".")
                    packed.seek(0)
                    return await self._import(name, packed, replace, description)
            with open(source, "rb") as local_file:
                return await self._import(name, local_file, replace, description)
        return await self._import(name, source, replace, description)

    async def _import(self, name: str, archive: IO[bytes], replace: bool, description: str) -> Template:
        headers = {"Content-Type": "application/octet-stream"}
        try:
            size = os.fstat(archive.fileno()).st_size - archive.tell()
            headers["Content-Length"] = str(max(size, 0))
        except (AttributeError, OSError, ValueError):
            pass  # not a regular file: sent chunked
        data = await self._api.request_json(
            protocol.import_request(name, replace, description),
            content=async_upload_chunks(archive, UPLOAD_CHUNK),
            headers=headers,
            timeout=IMPORT_TIMEOUT,
        )
        return protocol.parse_template(data)

    async def delete(self, name: str) -> None:
        """Delete an image template; ``TemplateInUseError`` while sandboxes use it. Layers no
        other template uses are removed on the server."""
        await self._api.request(protocol.delete_request(name))
