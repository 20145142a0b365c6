"""Containerfile builds over the API: a context tar from a dict of files, a build started and
followed to its end."""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support import images
from tests.support.images import Image

BUSYBOX_NAME = "test/busybox-base:1"


def context_tar(files: dict[str, bytes | str], links: dict[str, str] | None = None) -> bytes:
    """A build context: `files` (name -> content; names ending in .sh are executable) and
    symbolic `links` (name -> target)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, content in files.items():
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755 if name.endswith(".sh") else 0o644
            archive.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            archive.addfile(info)
    return out.getvalue()


def import_busybox(api: httpx.Client, path: Path, name: str = BUSYBOX_NAME) -> str:
    """The no-Python busybox image (tests/support/images.py) as a template."""
    archive = images.oci_archive(Image([images.busybox_layer()], env=["PATH=/bin"]), path)
    with open(archive, "rb") as body:
        response = api.post("/templates/import", params={"name": name, "replace": "true"}, content=body, timeout=120)
    assert response.status_code == 201, response.text
    return name


def start_build(api: httpx.Client, context: bytes, name: str, **params: Any) -> httpx.Response:
    return api.post(
        "/templates/build",
        params={"name": name, "replace": "true", **params},
        content=context,
        headers={"content-type": "application/x-tar"},
        timeout=120,
    )


def wait_build(api: httpx.Client, build_id: str, timeout: float = 120) -> dict[str, Any]:
    """The build's record once it is over."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        build: dict[str, Any] = api.get(f"/builds/{build_id}").json()
        if build["state"] != "building":
            return build
        time.sleep(0.1)
    raise AssertionError(f"build {build_id} still building after {timeout} s")


def build(api: httpx.Client, context: bytes, name: str, **params: Any) -> dict[str, Any]:
    response = start_build(api, context, name, **params)
    assert response.status_code == 202, response.text
    assert response.json()["state"] == "building"
    return wait_build(api, response.json()["id"])


def sse_events(text: str) -> list[tuple[str, str | None, str]]:
    """(event, id, data) of each SSE event in `text`."""
    events = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line.startswith(":"):
                continue
            key, _, value = line.partition(": ")
            fields[key] = value
        if "event" in fields:
            events.append((fields["event"], fields.get("id"), fields.get("data", "")))
    return events
