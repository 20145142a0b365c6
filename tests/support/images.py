"""Real image archives for tests, written without a registry or a container engine.

`busybox_layer` is a rootfs with Debian's busybox-static only (no Python, no libc): the
image every test of "a template that is not the host's userland" uses. `oci_archive` and
`docker_archive` package layers the way `skopeo copy oci-archive:` and `docker save` do."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BUSYBOX = Path("/bin/busybox")
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


@dataclass
class Entry:
    """One tar member: a file (data), a dir, a symlink or hard link (link), or anything raw."""

    name: str
    data: bytes | None = None
    kind: bytes = tarfile.REGTYPE
    link: str = ""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


def layer_tar(entries: Sequence[Entry]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for entry in entries:
            info = tarfile.TarInfo(entry.name)
            info.type = entry.kind
            info.mode = entry.mode
            info.uid, info.gid = entry.uid, entry.gid
            info.mtime = 1_700_000_000
            info.linkname = entry.link
            if entry.kind == tarfile.REGTYPE:
                info.size = len(entry.data or b"")
                archive.addfile(info, io.BytesIO(entry.data or b""))
            else:
                archive.addfile(info)
    return out.getvalue()


def busybox_applets() -> list[str]:
    listed = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout.split()
    return [name for name in listed if name != "busybox" and "/" not in name]


def busybox_layer() -> bytes:
    """/bin/busybox, a symlink per applet in /bin, and the dirs a userland has."""
    entries = [Entry(d, kind=tarfile.DIRTYPE, mode=0o755) for d in ("bin", "etc", "tmp", "root", "usr", "var")]
    entries[2].mode = 0o1777
    entries.append(Entry("bin/busybox", BUSYBOX.read_bytes(), mode=0o755))
    entries += [Entry(f"bin/{name}", kind=tarfile.SYMTYPE, link="busybox", mode=0o777) for name in busybox_applets()]
    entries.append(Entry("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"))
    entries.append(Entry("etc/group", b"root:x:0:\nnogroup:x:65534:\n"))
    entries.append(Entry("etc/motd", b"busybox image\n"))
    return layer_tar(entries)


@dataclass
class Image:
    layers: list[bytes]  # uncompressed layer tars, bottom to top
    env: list[str] = field(default_factory=lambda: ["PATH=/bin:/usr/bin", "IMAGE_GREETING=hello from the image"])
    working_dir: str = ""
    user: str = ""
    compress: bool = True
    layer_media_type: str | None = None

    def config(self) -> dict[str, Any]:
        return {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": self.env, "WorkingDir": self.working_dir, "User": self.user},
            "rootfs": {"type": "layers", "diff_ids": [sha256(layer) for layer in self.layers]},
        }


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    archive.addfile(info, io.BytesIO(data))


def oci_archive(image: Image, path: Path, *, corrupt_blob: bool = False, broken_gzip: bool = False) -> Path:
    """An OCI image archive (a tarred OCI layout), as `skopeo copy ... oci-archive:` writes.
    `corrupt_blob`: the first layer's bytes no longer match its digest; `broken_gzip`: its
    gzip stream is cut short (and the digest is of the cut stream, so only unpacking sees it)."""
    blobs: dict[str, bytes] = {}
    descriptors = []
    for layer in image.layers:
        blob = gzip.compress(layer, mtime=0) if image.compress else layer
        if broken_gzip and not descriptors:
            blob = blob[: len(blob) // 2]
        media_type = image.layer_media_type or (OCI_LAYER_GZIP if image.compress else OCI_LAYER)
        descriptors.append({"mediaType": media_type, "digest": sha256(blob), "size": len(blob)})
        blobs[sha256(blob)] = blob
    config = json.dumps(image.config()).encode()
    blobs[sha256(config)] = config
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256(config),
                "size": len(config),
            },
            "layers": descriptors,
        }
    ).encode()
    blobs[sha256(manifest)] = manifest
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": sha256(manifest),
                "size": len(manifest),
            }
        ],
    }
    with tarfile.open(path, "w") as archive:
        _add(archive, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        _add(archive, "index.json", json.dumps(index).encode())
        for digest, blob in blobs.items():
            if corrupt_blob and digest == descriptors[0]["digest"]:
                blob = blob[:-8] + b"XXXXXXXX"
            _add(archive, f"blobs/sha256/{digest.split(':')[1]}", blob)
    return path


def docker_archive(image: Image, path: Path, tag: str = "localhost/test:latest") -> Path:
    """A `docker save` archive (the classic layout: <id>/layer.tar and manifest.json)."""
    config = json.dumps(image.config()).encode()
    with tarfile.open(path, "w") as archive:
        layer_paths = []
        for layer in image.layers:
            name = f"{hashlib.sha256(layer).hexdigest()}/layer.tar"
            _add(archive, name, layer)
            layer_paths.append(name)
        config_name = hashlib.sha256(config).hexdigest() + ".json"
        _add(archive, config_name, config)
        manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": layer_paths}]
        _add(archive, "manifest.json", json.dumps(manifest).encode())
    return path


def busybox_oci_archive(path: Path) -> Path:
    return oci_archive(Image([busybox_layer()]), path)


def have_podman() -> bool:
    return shutil.which("podman") is not None
