"""``workspace template bootstrap debian:bookworm``: a minimal Debian base image made with
mmdebstrap (Debian's) from this machine's configured Debian mirror, imported as a template.

Runs where the command runs (the server's host, for a local server): mmdebstrap picks its
unshare mode when unprivileged user namespaces work and root mode otherwise (``--mode=auto``).
The rootfs tar becomes the single layer of an OCI archive written next to it, which is then
imported like any archive (``client.template.import_image``)."""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

SOURCES = Path("/etc/apt/sources.list")
SOURCES_DIR = Path("/etc/apt/sources.list.d")
FALLBACK_MIRROR = "http://deb.debian.org/debian"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def host_mirror() -> str:
    """The first Debian archive URI this machine's apt uses (not the security archive)."""
    candidates: list[str] = []
    for path in sorted(SOURCES_DIR.glob("*.sources")):
        candidates += re.findall(r"^URIs:\s*(\S+)", path.read_text(errors="replace"), flags=re.M)
    if SOURCES.exists():
        candidates += re.findall(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)", SOURCES.read_text(errors="replace"), flags=re.M)
    for uri in candidates:
        if "security" not in uri and uri.startswith(("http://", "https://", "file:/")):
            return uri
    return FALLBACK_MIRROR


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    archive.addfile(info, io.BytesIO(data))


def oci_archive_of(rootfs_tar: Path, target: Path) -> None:
    """An OCI image archive with `rootfs_tar` as its one (uncompressed) layer."""
    layer_digest = _sha256_file(rootfs_tar)
    layer_size = rootfs_tar.stat().st_size
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": [f"PATH={PATH}", "LANG=C.UTF-8"], "Cmd": ["/bin/bash"]},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        }
    ).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}
            ],
        }
    ).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": len(manifest),
            }
        ],
    }
    with tarfile.open(target, "w") as archive:
        _add_bytes(archive, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        _add_bytes(archive, "index.json", json.dumps(index).encode())
        for digest, data in ((config_digest, config), (manifest_digest, manifest)):
            _add_bytes(archive, f"blobs/sha256/{digest.split(':')[1]}", data)
        archive.add(str(rootfs_tar), arcname=f"blobs/sha256/{layer_digest.split(':')[1]}")


def bootstrap_archive(suite: str, work: Path, mirror: str, variant: str = "minbase") -> Path:
    """mmdebstrap `suite` into a rootfs tar, then wrap it as an OCI archive; returns that."""
    if shutil.which("mmdebstrap") is None:
        raise RuntimeError("mmdebstrap is not installed: apt-get install mmdebstrap (scripts/setup.sh does)")
    rootfs = work / "rootfs.tar"
    result = subprocess.run(
        [
            "mmdebstrap",
            "--quiet",
            f"--variant={variant}",
            "--mode=auto",
            "--format=tar",
            # No device nodes in /dev: images may not hold any (each sandbox gets its own /dev).
            "--skip=output/dev",
            suite,
            str(rootfs),
            mirror,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"mmdebstrap failed: {(result.stderr or result.stdout).strip()[-2000:]}")
    archive = work / "image.tar"
    oci_archive_of(rootfs, archive)
    rootfs.unlink()
    return archive


def scratch_dir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="workspace-bootstrap-", dir="/var/tmp")
