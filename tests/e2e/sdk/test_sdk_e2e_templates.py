"""client.template (get, import_image from a path, a file object or an OCI layout dir,
delete) and client.sandbox.snapshot, sync and async, against a live server."""

from __future__ import annotations

import asyncio
import io
import tarfile
from pathlib import Path

import pytest

from tests.support import images
from tests.support.images import Entry, Image, layer_tar
from workspace_sdk import (
    AsyncWorkspaceClient,
    CreateSandboxParams,
    InvalidImageError,
    RunCommandOptions,
    TemplateExistsError,
    TemplateInUseError,
    TemplateNotFoundError,
    WorkspaceClient,
)


def test_sync_import_run_snapshot_delete(server_url: str, tmp_path: Path) -> None:
    archive = images.busybox_oci_archive(tmp_path / "busybox.tar")
    with WorkspaceClient(server_url) as client:
        template = client.template.import_image("sdk/busybox", archive, replace=True, description="no python")
        assert template.name == "sdk/busybox:latest" and template.source == "imported"
        assert template.layers and template.size > 0 and template.env["IMAGE_GREETING"] == "hello from the image"
        assert client.template.get("sdk/busybox") == template
        with pytest.raises(TemplateExistsError):
            client.template.import_image("sdk/busybox", archive)
        sandbox = client.sandbox.create(CreateSandboxParams(template="sdk/busybox"))
        try:
            client.filesystem.write(sandbox.id, "/workspace/made.txt", b"by the sdk")
            assert client.process.run(
                sandbox.id, "sh", RunCommandOptions(args=["-c", "echo $IMAGE_GREETING"])
            ).stdout == ("hello from the image\n")
            snap = client.sandbox.snapshot(sandbox.id, "sdk/busybox-snap", replace=True)
            assert snap.source == "snapshot" and len(snap.layers) == len(template.layers) + 1
            with pytest.raises(TemplateInUseError):
                client.template.delete("sdk/busybox")
        finally:
            client.sandbox.delete(sandbox.id, force=True)
        child = client.sandbox.create(CreateSandboxParams(template="sdk/busybox-snap"))
        try:
            assert client.filesystem.read(child.id, "/workspace/made.txt") == b"by the sdk"
        finally:
            client.sandbox.delete(child.id, force=True)
        client.template.delete("sdk/busybox-snap")
        client.template.delete("sdk/busybox")
        with pytest.raises(TemplateNotFoundError):
            client.template.get("sdk/busybox")


def test_async_import_from_a_file_object_and_a_layout_dir(server_url: str, tmp_path: Path) -> None:
    archive = images.oci_archive(Image([layer_tar([Entry("hello.txt", b"hi")])]), tmp_path / "small.tar")
    layout = tmp_path / "layout"
    layout.mkdir()
    with tarfile.open(archive) as packed:
        packed.extractall(layout, filter="data")

    async def scenario() -> None:
        async with AsyncWorkspaceClient(server_url) as client:
            from_object = await client.template.import_image(
                "sdk/from-object", io.BytesIO(archive.read_bytes()), replace=True
            )
            from_dir = await client.template.import_image("sdk/from-dir", layout, replace=True)
            assert from_object.layers == from_dir.layers
            assert "sdk/from-dir:latest" in [t.name for t in await client.template.list()]
            with pytest.raises(InvalidImageError) as refused:
                await client.template.import_image("sdk/bad", io.BytesIO(b"not an archive" * 10))
            assert refused.value.reason == "unknown_format"
            for name in ("sdk/from-object", "sdk/from-dir"):
                await client.template.delete(name)

    asyncio.run(scenario())
