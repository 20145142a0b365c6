# Generated from _async/template.py by scripts/unasync.py. Do not edit: edit that file.
"""``client.template``: the templates sandboxes can be created from."""

from __future__ import annotations

import builtins
import os
import secrets
import tarfile
import tempfile
from collections.abc import Callable, Mapping
from typing import IO, Any

import httpx

from .._primitives import upload_chunks
from .._protocol import build as build_protocol
from .._protocol import template as protocol
from ..types import Build, LocalPath, Template
from . import build as builds
from ._api_client import APIClient

UPLOAD_CHUNK = 1 << 20
# Unpacking a large image takes the server a while after the upload: wait for its answer.
IMPORT_TIMEOUT = httpx.Timeout(60.0, read=900.0)


class TemplateService:
    """Available templates: list, get, import an image archive, build one from a
    Containerfile, delete."""

    def __init__(self, api: APIClient) -> None:
        self._api = api

    def list(self) -> builtins.list[Template]:
        """All templates the server offers (``workspace-test:latest`` is always there)."""
        data = self._api.request_json(protocol.list_request())
        return protocol.parse_template_list(data)

    def get(self, name: str) -> Template:
        """One template (a bare name means ``name:latest``); ``TemplateNotFoundError`` if none."""
        data = self._api.request_json(protocol.get_request(name))
        return protocol.parse_template(data)

    def import_image(
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
                    return self._import(name, packed, replace, description)
            with open(source, "rb") as local_file:
                return self._import(name, local_file, replace, description)
        return self._import(name, source, replace, description)

    def _import(self, name: str, archive: IO[bytes], replace: bool, description: str) -> Template:
        headers = {"Content-Type": "application/octet-stream"}
        try:
            size = os.fstat(archive.fileno()).st_size - archive.tell()
            headers["Content-Length"] = str(max(size, 0))
        except (AttributeError, OSError, ValueError):
            pass  # not a regular file: sent chunked
        data = self._api.request_json(
            protocol.import_request(name, replace, description),
            content=upload_chunks(archive, UPLOAD_CHUNK),
            headers=headers,
            timeout=IMPORT_TIMEOUT,
        )
        return protocol.parse_template(data)

    def delete(self, name: str) -> None:
        """Delete an image template; ``TemplateInUseError`` while sandboxes use it. Layers no
        other template uses are removed on the server."""
        self._api.request(protocol.delete_request(name))

    def build(
        self,
        name: str,
        *,
        containerfile: str | os.PathLike[str] | None = None,
        context: LocalPath = ".",
        build_args: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        on_log: Callable[[str], Any] | None = None,
        timeout: float = 3600,
        replace: bool = False,
        network: bool = False,
        description: str = "",
    ) -> Template:
        """Build template ``name`` from a Containerfile and return it once built.

        ``context`` is the directory whose files COPY and ADD see (sent as a tar, streamed;
        ``.containerignore`` or ``.dockerignore`` patterns leave files out).
        ``containerfile`` is the Containerfile's text or the path of one (default: the
        context's ``Containerfile``, else ``Dockerfile``). ``build_args`` fill ``ARG``s;
        ``env`` is given to ``RUN`` steps only (a package proxy) and never kept in the image.
        ``on_log`` receives the build's log as it is written. ``timeout`` is the build's time
        limit on the server; ``network`` gives its step sandboxes network (filtered like any
        sandbox's).

        Raises ``TemplateNotFoundError`` (unknown ``FROM``), ``InvalidRequestError`` (an
        unsupported instruction, a path outside the context, ... naming the line),
        ``TemplateExistsError``, and when the build fails ``BuildFailedError`` (``step``,
        ``line``, ``exit_code``), ``BuildTimeoutError`` or ``BuildCancelledError``.
        """
        root = os.fspath(context)
        if not os.path.isdir(root):
            raise NotADirectoryError(f"the build context {root!r} is not a directory")
        extra: dict[str, bytes] = {}
        file = None
        if containerfile is not None:
            path = os.fspath(containerfile)
            if isinstance(containerfile, os.PathLike) or ("\n" not in path and os.path.isfile(path)):
                inside = os.path.relpath(os.path.realpath(path), os.path.realpath(root))
                if not inside.startswith(os.pardir):
                    file = inside.replace(os.sep, "/")
                else:
                    with open(path, "rb") as text:
                        extra[build_protocol.SENT_CONTAINERFILE] = text.read()
            else:
                extra[build_protocol.SENT_CONTAINERFILE] = path.encode()
            if extra:
                file = f"{build_protocol.SENT_CONTAINERFILE}-{secrets.token_hex(4)}"
                extra = {file: extra[build_protocol.SENT_CONTAINERFILE]}
        request = build_protocol.build_request(
            name,
            replace=replace,
            file=file,
            build_args=dict(build_args or {}),
            env=dict(env or {}),
            timeout=timeout,
            network=network,
            description=description,
        )
        data = self._api.request_json(
            request,
            content=builds.context_chunks(root, extra),
            headers={"Content-Type": "application/x-tar"},
            timeout=IMPORT_TIMEOUT,
        )
        record = builds.follow(self._api, build_protocol.parse_build(data), on_log)
        builds.raise_if_failed(record)
        return self.get(record.template)

    def get_build(self, build_id: str) -> Build:
        """A build's record (``BuildNotFoundError`` if none)."""
        data = self._api.request_json(build_protocol.get_build_request(build_id))
        return build_protocol.parse_build(data)

    def cancel_build(self, build_id: str) -> None:
        """Cancel a running build (its record stays, in error ``BUILD_CANCELLED``); for a
        finished build, delete its record and log."""
        self._api.request(build_protocol.delete_build_request(build_id))
