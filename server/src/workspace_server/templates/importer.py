"""Import of an image archive (`docker save`, `podman save`, an OCI archive or a tarred OCI
layout) into the template store.

skopeo (Debian's) reads whichever format the archive is in and writes a plain OCI layout;
we then read that layout's manifest and config and unpack each layer once into the store
(templates/layers.py), checking every digest on the way."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from workspace_server.domain.errors import ImageTooLarge, InvalidImage, RuntimeFailure
from workspace_server.domain.models import ImageConfig
from workspace_server.templates import layers
from workspace_server.templates.room import Room
from workspace_server.templates.store import TemplateStore, digest_hex

SKOPEO = "skopeo"
SKOPEO_TIMEOUT = 900
MANIFEST_TYPES = {
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
}
INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
# Layer media types we unpack, and how they are compressed.
LAYER_TYPES: dict[str, str | None] = {
    "application/vnd.oci.image.layer.v1.tar": None,
    "application/vnd.oci.image.layer.v1.tar+gzip": "gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar": None,
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": "gzip",
    "application/vnd.docker.image.rootfs.diff.tar": None,
    "application/vnd.docker.image.rootfs.diff.tar.gzip": "gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip": "gzip",
}
HOST_ARCHITECTURE = {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)


@dataclass
class ImportedImage:
    digest: str
    layers: tuple[str, ...]  # diff ids, bottom to top
    size: int
    config: ImageConfig


def archive_format(path: Path) -> str:
    """skopeo's transport for the archive: docker-archive or oci-archive."""
    names: set[str] = set()
    try:
        with tarfile.open(path, mode="r:*") as archive:
            for member in archive:
                names.add(member.name.removeprefix("./"))
                if "oci-layout" in names:
                    return "oci-archive"
                if len(names) > 100_000:
                    break
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        if names:
            raise InvalidImage("corrupt", f"the archive is corrupt or truncated: {exc}") from None
        raise InvalidImage("unknown_format", f"the upload is not a tar archive: {exc}") from None
    if "manifest.json" in names:
        return "docker-archive"
    raise InvalidImage(
        "unknown_format",
        "the archive is neither a docker/podman save archive (manifest.json) nor an OCI archive (oci-layout)",
    )


def _skopeo_failure(output: str, work: Path) -> InvalidImage:
    text = output.replace(str(work), "").strip()[-1500:]  # the server's own paths are no one's business
    lowered = text.lower()
    if "digest" in lowered and ("match" in lowered or "verif" in lowered):
        return InvalidImage("digest_mismatch", f"a blob does not match its digest: {text}")
    if "mime" in lowered or "media type" in lowered or "mediatype" in lowered:
        return InvalidImage("unsupported_media_type", f"the image uses an unsupported media type: {text}")
    if "gzip" in lowered or "unexpected eof" in lowered or "invalid tar" in lowered or "archive/tar" in lowered:
        return InvalidImage("corrupt", f"the archive is corrupt or truncated: {text}")
    return InvalidImage("corrupt", f"the image archive cannot be read: {text}")


def to_oci_layout(archive: Path, layout: Path, work: Path) -> None:
    transport = archive_format(archive)
    try:
        result = subprocess.run(
            [
                SKOPEO,
                "--insecure-policy",
                "--tmpdir",
                str(work),
                "copy",
                "--quiet",
                # Layers as plain tars: skopeo would gzip them for us to gunzip at once.
                "--dest-oci-accept-uncompressed-layers",
                f"{transport}:{archive}",
                f"oci:{layout}:image",
            ],
            capture_output=True,
            text=True,
            timeout=SKOPEO_TIMEOUT,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TMPDIR": str(work), "HOME": str(work)},
            check=False,
        )
    except FileNotFoundError:
        raise RuntimeFailure("skopeo is not installed: run scripts/setup.sh") from None
    except subprocess.TimeoutExpired:
        raise InvalidImage("corrupt", f"reading the archive took over {SKOPEO_TIMEOUT} s") from None
    if result.returncode != 0:
        raise _skopeo_failure(result.stderr + result.stdout, work)


def _blob(layout: Path, digest: str) -> Path:
    try:
        return layout / "blobs" / "sha256" / digest_hex(digest)
    except ValueError:
        raise InvalidImage("unsupported_media_type", f"unsupported digest {digest!r}") from None


def _json_blob(layout: Path, descriptor: dict[str, Any], limit: int = 4 << 20) -> dict[str, Any]:
    path = _blob(layout, str(descriptor.get("digest", "")))
    try:
        if path.stat().st_size > limit:
            raise InvalidImage("corrupt", "an image manifest or config is implausibly large")
        loaded = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise InvalidImage("corrupt", f"an image manifest or config is unreadable: {exc}") from None
    if not isinstance(loaded, dict):
        raise InvalidImage("corrupt", "an image manifest or config is not a JSON object")
    return loaded


def _manifest(layout: Path) -> tuple[str, dict[str, Any]]:
    index = _json_blob_path(layout / "index.json")
    descriptor = _pick(index.get("manifests"))
    for _ in range(2):  # an index may point at an index of platforms
        media_type = descriptor.get("mediaType")
        if media_type in INDEX_TYPES:
            descriptor = _pick(_json_blob(layout, descriptor).get("manifests"))
            continue
        break
    if descriptor.get("mediaType") not in MANIFEST_TYPES:
        raise InvalidImage(
            "unsupported_media_type",
            f"unsupported manifest media type {descriptor.get('mediaType')!r}",
            media_type=str(descriptor.get("mediaType"))[:200],
        )
    return str(descriptor["digest"]), _json_blob(layout, descriptor)


def _json_blob_path(path: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise InvalidImage("corrupt", f"the OCI layout's index is unreadable: {exc}") from None
    if not isinstance(loaded, dict):
        raise InvalidImage("corrupt", "the OCI layout's index is not a JSON object")
    return loaded


def _pick(manifests: Any) -> dict[str, Any]:
    """The manifest for this host's platform (or the only one)."""
    if not isinstance(manifests, list) or not manifests or not all(isinstance(m, dict) for m in manifests):
        raise InvalidImage("corrupt", "the image index lists no manifest")
    for manifest in manifests:
        platform = manifest.get("platform") or {}
        if platform.get("architecture") in (None, HOST_ARCHITECTURE) and platform.get("os") in (None, "linux"):
            return dict(manifest)
    raise InvalidImage("unsupported_media_type", f"the image has no manifest for linux/{HOST_ARCHITECTURE}")


def image_config(config: dict[str, Any]) -> ImageConfig:
    settings = config.get("config") or {}
    env: dict[str, str] = {}
    for item in settings.get("Env") or []:
        if isinstance(item, str) and "=" in item:
            key, _, value = item.partition("=")
            if key and "\x00" not in item:
                env[key] = value
    working_dir = settings.get("WorkingDir")
    user = settings.get("User")
    return ImageConfig(
        env=env,
        working_dir=working_dir if isinstance(working_dir, str) and working_dir.startswith("/") else None,
        user=user if isinstance(user, str) and user else None,
    )


def _compression(blob: BinaryIO) -> str | None:
    """What the blob is, from its first bytes, as container engines decide: skopeo may write
    an uncompressed layer under a gzip media type."""
    magic = blob.read(4)
    blob.seek(0)
    if magic.startswith(b"\x1f\x8b"):
        return "gzip"
    if magic == b"\x28\xb5\x2f\xfd":
        raise InvalidImage("unsupported_media_type", "a layer is zstd-compressed, which is not supported")
    return None


def import_layout(
    layout: Path,
    store: TemplateStore,
    work: Path,
    max_bytes: int,
    pin: Callable[[str], None],
    room: Room | None = None,
) -> ImportedImage:
    digest, manifest = _manifest(layout)
    config = _json_blob(layout, manifest.get("config") or {})
    descriptors = manifest.get("layers")
    diff_ids = (config.get("rootfs") or {}).get("diff_ids")
    if not isinstance(descriptors, list) or not isinstance(diff_ids, list) or len(descriptors) != len(diff_ids):
        raise InvalidImage("corrupt", "the image's manifest and config disagree on its layers")
    compressed_total = sum(int(d.get("size", 0)) for d in descriptors if isinstance(d, dict))
    if compressed_total > max_bytes:
        raise ImageTooLarge(f"the image's layers hold {compressed_total} bytes, over the maximum of {max_bytes}")
    for descriptor in descriptors:
        media_type = descriptor.get("mediaType") if isinstance(descriptor, dict) else None
        if media_type not in LAYER_TYPES:
            raise InvalidImage(
                "unsupported_media_type",
                f"unsupported layer media type {media_type!r}",
                media_type=str(media_type)[:200],
            )
    total = 0
    for descriptor, diff_id in zip(descriptors, diff_ids, strict=True):
        diff_id = str(diff_id)
        pin(diff_id)  # kept from garbage collection until the template is stored
        if store.has_layer(diff_id):
            total += store.layer_size(diff_id)
            continue
        unpacked = work / ("layer-" + digest_hex(diff_id))
        unpacked.mkdir()
        with open(_blob(layout, str(descriptor["digest"])), "rb") as blob:
            result = layers.unpack(
                blob,
                unpacked / "fs",
                compression=_compression(blob),
                max_bytes=max_bytes - total,
                expect_digest=str(descriptor["digest"]),
                expect_diff_id=diff_id,
                room=room,
            )
        total += result.size
        store.commit_layer(unpacked, diff_id, result.size)
    return ImportedImage(digest, tuple(str(d) for d in diff_ids), total, image_config(config))


def import_archive(
    archive: Path,
    store: TemplateStore,
    work: Path,
    max_bytes: int,
    pin: Callable[[str], None],
    room: Room | None = None,
) -> ImportedImage:
    layout = work / "layout"
    if room is not None:
        room(archive.stat().st_size)  # the layout is a copy of the archive's blobs
    to_oci_layout(archive, layout, work)
    archive.unlink(missing_ok=True)  # its content is in the layout now: halve the disk used
    return import_layout(layout, store, work, max_bytes, pin, room)
