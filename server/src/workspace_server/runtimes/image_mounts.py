"""Mounting and unmounting an image sandbox's root (runtimes/image_root.py says what it is)."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import subprocess
from pathlib import Path

from workspace_server.domain.errors import RuntimeFailure
from workspace_server.domain.models import Template
from workspace_server.runtimes import idmap, image_root, uid_ranges
from workspace_server.templates import layers
from workspace_server.templates.store import digest_hex

MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


class ImageMounts:
    def __init__(self, shared_dir: Path, layers_dir: Path) -> None:
        self.shared_dir = shared_dir
        self.layers_dir = layers_dir
        self.user_namespaces = idmap.UserNamespaces(uid_ranges.RANGE_SIZE)

    def layer_path(self, digest: str) -> Path:
        return self.layers_dir / digest_hex(digest) / "fs"

    def mount(self, bundle: Path, rw: Path, template: Template, host_uid: int) -> Path:
        """The sandbox's root at bundle/rootfs: overlay of (our base layer, the template's
        layers top to bottom), upper and work dirs on its disk (mounted at `rw`)."""
        layers = template.layers
        (bundle / image_root.LAYERS_FILE).write_text(json.dumps(list(layers)))  # before anything is mounted
        sources = [image_root.base_layer(self.shared_dir, layers, self.layer_path, template.config.working_dir)]
        sources += [self.layer_path(digest) for digest in reversed(layers)]
        for source in sources:
            if not source.is_dir():
                raise RuntimeFailure(f"a layer of the template is missing from the store: {source}")
        self.unmount(bundle)  # left over from a stop cut short: never stack a second overlay
        if not (rw / "upper").is_dir():  # else a stopped sandbox starts again on its own disk
            os.chown(rw, host_uid, host_uid)
            for name, mode, owner in (("upper", 0o755, host_uid), ("work", 0o700, 0), ("run", 0o700, host_uid)):
                path = rw / name
                path.mkdir()
                os.chown(path, owner, owner)
                os.chmod(path, mode)
        lower_root = bundle / "lower"
        lower_root.mkdir(exist_ok=True)
        userns = self.user_namespaces.fd(host_uid)
        mounted: list[Path] = []
        try:
            for index, source in enumerate(sources):
                target = lower_root / str(index)
                target.mkdir(exist_ok=True)
                idmap.mount_idmapped(source, target, userns)
                mounted.append(target)
            rootfs = bundle / "rootfs"
            rootfs.mkdir(exist_ok=True)
            # Relative lower paths (from lower_root): many layers fit in the option page.
            lowers = ":".join(str(i) for i in range(len(sources)))
            # No redirects, metadata-only copy-ups or index: the upper dir must hold whole files
            # and plain whiteouts, as a layer does (a snapshot turns it into one).
            options = (
                f"lowerdir={lowers},upperdir={rw / 'upper'},workdir={rw / 'work'},"
                "redirect_dir=off,metacopy=off,index=off"
            )
            result = subprocess.run(
                ["mount", "-t", "overlay", "overlay", "-o", options, str(rootfs)],
                cwd=lower_root,
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                raise RuntimeFailure(f"could not mount the sandbox's root: {result.stderr.strip()}")
        finally:
            # The overlay holds private clones of its layers: these mounts can go at once.
            for target in mounted:
                _libc.umount2(str(target).encode(), MNT_DETACH)
        return rootfs

    def unmount(self, bundle: Path) -> None:
        rootfs = bundle / "rootfs"
        if os.path.ismount(rootfs) and _libc.umount2(str(rootfs).encode(), 0) != 0:
            _libc.umount2(str(rootfs).encode(), MNT_DETACH)
        lower_root = bundle / "lower"
        if lower_root.is_dir():  # a start that failed half-way
            for target in lower_root.iterdir():
                if os.path.ismount(target):
                    _libc.umount2(str(target).encode(), MNT_DETACH)

    @staticmethod
    def pack_changes(upper: Path, target: Path, uid_base: int) -> None:
        with open(target, "xb") as out:
            layers.pack_changes(upper, out, uid_base)

    def layers_in_use(self, sandboxes_dir: Path) -> list[str]:
        used: set[str] = set()
        for path in sandboxes_dir.glob(f"*/{image_root.LAYERS_FILE}"):
            with contextlib.suppress(OSError, ValueError, TypeError):
                used.update(str(d) for d in json.loads(path.read_text()))
        return sorted(used)
