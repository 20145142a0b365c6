"""Templates: list, get, import an image archive, delete (refused while sandboxes use it),
and garbage collection of layers nothing uses any more."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path

from workspace_server.domain.errors import (
    ImageTooLarge,
    InvalidRequest,
    SandboxNotRunning,
    TemplateExists,
    TemplateInUse,
    TemplateNotFound,
)
from workspace_server.domain.models import SandboxState, Template
from workspace_server.domain.templates import TemplateRegistry, canonical_name
from workspace_server.services.sandboxes import SandboxService
from workspace_server.templates import importer, layers
from workspace_server.templates.room import Room, RoomMeter
from workspace_server.templates.store import TemplateStore

log = logging.getLogger(__name__)

# Unpacking is disk- and CPU-bound: two at a time keep the API responsive.
CONCURRENT_IMPORTS = 2


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


class TemplateService:
    def __init__(
        self,
        registry: TemplateRegistry,
        store: TemplateStore,
        max_image_bytes: int,
        users_of: Callable[[str], list[str]],
        layers_in_use: Callable[[], Iterable[str]],
        on_changed: Callable[[str], None] = lambda name: None,
        admit_write: Callable[[int, str], None] | None = None,
    ) -> None:
        """`users_of(name)`: ids of live sandboxes made from a template; `layers_in_use()`:
        the layers live sandboxes have mounted (a replaced template's old ones included);
        `admit_write(size, what)`: the data dir's room for `size` more bytes of uploads and
        layers, or RESOURCE_EXHAUSTED (DataDirSpace.admit_write)."""
        self.registry = registry
        self.store = store
        self.max_image_bytes = max_image_bytes
        self._users_of = users_of
        self._layers_in_use = layers_in_use
        self._on_changed = on_changed  # the warm pool drops sandboxes of a replaced template
        self._imports = asyncio.Semaphore(CONCURRENT_IMPORTS)
        self._admit_write = admit_write

    def room(self, what: str) -> Room | None:
        """Admission of the writes of one upload, import, snapshot or build step."""
        admit = self._admit_write
        if admit is None:
            return None
        return lambda size: admit(size, what)

    def all(self) -> list[Template]:
        return self.registry.all()

    def get(self, name: str) -> Template:
        return self.registry.get(name)

    def new_name(self, reference: str, replace: bool) -> str:
        """The canonical name for a new template; TEMPLATE_EXISTS early (before an upload is
        read) if it is taken and replacing was not asked for. Built-in names are never free."""
        name = canonical_name(reference)
        if self.registry.builtin(name) is not None or self.registry.builtin(reference) is not None:
            raise TemplateExists(name)
        if not replace and self.store.get(name) is not None:
            raise TemplateExists(name)
        return name

    async def import_archive(
        self, reference: str, body: AsyncIterator[bytes], *, replace: bool = False, description: str = ""
    ) -> Template:
        name = self.new_name(reference, replace)
        async with self._imports:
            with self.store.scratch() as work, self.store.pins() as pin:
                archive = work / "upload.tar"
                await self.receive(body, archive)
                image = await asyncio.to_thread(
                    importer.import_archive,
                    archive,
                    self.store,
                    work,
                    self.max_image_bytes,
                    pin,
                    self.room(f"the import of {name}"),
                )
                template = Template(
                    name=name,
                    description=description,
                    digest=image.digest,
                    layers=image.layers,
                    size=image.size,
                    created_at=now_iso(),
                    source="imported",
                    config=image.config,
                )
                self.store.put(template, replace=replace)
        self._on_changed(name)
        if replace:
            await self.collect_garbage()
        log.info("imported template %s (%s, %d layers, %d bytes)", name, image.digest, len(image.layers), image.size)
        return template

    async def receive(self, body: AsyncIterator[bytes], target: Path, what: str = "an image archive") -> None:
        """The request body into `target`, at most the maximum image size."""
        received = 0
        meter = RoomMeter(self.room(f"the upload of {what}"))  # its length is not known ahead
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb", buffering=0) as out:
            async for chunk in body:
                received += len(chunk)
                if received > self.max_image_bytes:
                    raise ImageTooLarge(f"the upload exceeds the maximum image size of {self.max_image_bytes} bytes")
                meter.grow_to(received)
                out.write(chunk)  # into the page cache: microseconds per chunk
        if received == 0:
            raise InvalidRequest(f"the request body is empty: send {what}", field="body")

    async def snapshot(
        self,
        sandboxes: SandboxService,
        sandbox_id: str,
        reference: str,
        *,
        replace: bool = False,
        description: str = "",
    ) -> Template:
        """A new template: the sandbox's template with what the sandbox changed as one more
        layer on top. The sandbox's processes are frozen while its changes are read."""
        name = self.new_name(reference, replace)
        record = sandboxes.record(sandbox_id)
        if record.state not in (SandboxState.RUNNING, SandboxState.PAUSED):
            raise SandboxNotRunning(sandbox_id, record.state.value)
        parent = self.registry.get(record.template)
        if not parent.is_image:
            raise InvalidRequest(
                f"sandbox {sandbox_id} runs the built-in template {parent.name!r}: only sandboxes of image "
                "templates can be snapshotted (import or bootstrap a base image)",
                field="sandbox_id",
            )
        runtime = sandboxes.runtime
        async with self._imports:
            with self.store.scratch() as work, self.store.pins() as pin:
                changes = work / "changes.tar"
                was_frozen = runtime.frozen(sandbox_id)
                await runtime.freeze(sandbox_id)
                try:
                    await runtime.pack_changes(sandbox_id, changes)
                finally:
                    if not was_frozen:
                        await runtime.thaw(sandbox_id)
                layer = await asyncio.to_thread(self.store_layer, changes, work / "layer", pin)
                layers = (*parent.layers, layer.diff_id)
                template = Template(
                    name=name,
                    description=description,
                    digest="sha256:" + hashlib.sha256("\n".join(layers).encode()).hexdigest(),
                    layers=layers,
                    size=parent.size + layer.size,
                    created_at=now_iso(),
                    source="snapshot",
                    config=parent.config,
                )
                self.store.put(template, replace=replace)
        self._on_changed(name)
        log.info("snapshot of %s saved as template %s (%d bytes changed)", sandbox_id, name, layer.size)
        return template

    def store_layer(self, tar: Path, unpacked: Path, pin: Callable[[str], None]) -> layers.UnpackedLayer:
        """Unpack a layer tar into the store (checked like any archive: it came from a sandbox)."""
        unpacked.mkdir()
        with open(tar, "rb") as stream:
            layer = layers.unpack(
                stream,
                unpacked / "fs",
                compression=None,
                max_bytes=self.max_image_bytes,
                room=self.room("a sandbox's changes as a layer"),
            )
        pin(layer.diff_id)
        self.store.commit_layer(unpacked, layer.diff_id, layer.size)
        return layer

    def store_template(self, template: Template, *, replace: bool) -> None:
        """Record a template whose layers are in the store (a build's result)."""
        self.store.put(template, replace=replace)
        self._on_changed(template.name)
        log.info("built template %s (%s, %d layers)", template.name, template.digest, len(template.layers))

    async def delete(self, reference: str) -> None:
        template = self.registry.get(reference)
        if not template.is_image:
            raise InvalidRequest(f"the built-in template {template.name!r} cannot be deleted", field="name")
        users = self._users_of(template.name)
        if users:
            raise TemplateInUse(template.name, users)
        if not self.store.remove(template.name):
            raise TemplateNotFound(reference, [t.name for t in self.all()][:50])
        self._on_changed(template.name)
        await self.collect_garbage()

    async def collect_garbage(self) -> None:
        removed = await asyncio.to_thread(self.store.collect_garbage, list(self._layers_in_use()))
        if removed:
            log.info("removed %d unused layer(s)", len(removed))
