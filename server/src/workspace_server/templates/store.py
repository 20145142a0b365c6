"""The template store under `<data dir>/templates/`:

  layers/<hex>/fs/        one unpacked layer, keyed by the sha256 of its uncompressed tar,
                          in overlayfs's format (templates/layers.py); unpacked once however
                          many templates or sandboxes use it
  layers/<hex>/size       bytes of file content in it
  refs/<quoted name>.json one template: its layers (bottom to top), digest, size, creation
                          time, source and image config
  scratch/                work in progress (uploads, half-unpacked layers): emptied at start

A layer is unpacked into scratch/ and renamed into layers/ only once complete and its
digests checked, and a ref is written with a rename: a crash or a bad archive never leaves
a half-written layer or template that anything would use.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import quote

from workspace_server.domain.errors import TemplateExists
from workspace_server.domain.models import ImageConfig, Template


def digest_hex(digest: str) -> str:
    algorithm, _, hexpart = digest.partition(":")
    if algorithm != "sha256" or len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return hexpart


class TemplateStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.layers_dir = root / "layers"
        self.refs_dir = root / "refs"
        self.scratch_root = root / "scratch"
        self._lock = threading.Lock()
        self._pinned: dict[str, int] = {}
        self._cache: dict[str, Template] = {}

    def open(self) -> None:
        for directory in (self.root, self.layers_dir, self.refs_dir):
            directory.mkdir(parents=True, exist_ok=True)
            # Sandbox roots (unprivileged host uids) walk down to their layers.
            os.chmod(directory, 0o711)
        shutil.rmtree(self.scratch_root, ignore_errors=True)
        self.scratch_root.mkdir(mode=0o700)
        self._cache = {}
        for path in self.refs_dir.glob("*.json"):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                template = _decode(json.loads(path.read_text()))
                self._cache[template.name] = template

    # ------------------------------------------------------------------ layers
    def layer_path(self, digest: str) -> Path:
        return self.layers_dir / digest_hex(digest) / "fs"

    def has_layer(self, digest: str) -> bool:
        return self.layer_path(digest).is_dir()

    def layer_size(self, digest: str) -> int:
        try:
            return int((self.layers_dir / digest_hex(digest) / "size").read_text())
        except (OSError, ValueError):
            return 0

    @contextlib.contextmanager
    def scratch(self) -> Iterator[Path]:
        """A private work dir, removed afterwards whatever happens."""
        path = self.scratch_root / secrets.token_hex(8)
        path.mkdir(mode=0o700)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def commit_layer(self, unpacked: Path, digest: str, size: int) -> None:
        """Move a complete, checked layer (`unpacked/fs`) into the store (no-op if present)."""
        (unpacked / "size").write_text(str(size))
        os.chmod(unpacked, 0o711)
        final = self.layers_dir / digest_hex(digest)
        with self._lock:
            if final.is_dir():
                return
            os.rename(unpacked, final)

    @contextlib.contextmanager
    def pins(self) -> Iterator[Callable[[str], None]]:
        """Layers that garbage collection must keep while an import or snapshot is writing:
        call the yielded function with each digest; all are released on exit."""
        held: list[str] = []

        def pin(digest: str) -> None:
            with self._lock:
                self._pinned[digest] = self._pinned.get(digest, 0) + 1
                held.append(digest)

        try:
            yield pin
        finally:
            with self._lock:
                for digest in held:
                    self._pinned[digest] -= 1
                    if not self._pinned[digest]:
                        del self._pinned[digest]

    # ------------------------------------------------------------------ templates
    def _ref_path(self, name: str) -> Path:
        return self.refs_dir / (quote(name, safe="") + ".json")

    def get(self, name: str) -> Template | None:
        return self._cache.get(name)

    def all(self) -> list[Template]:
        return sorted(self._cache.values(), key=lambda t: t.name)

    def put(self, template: Template, *, replace: bool) -> None:
        with self._lock:
            if template.name in self._cache and not replace:
                raise TemplateExists(template.name)
            path = self._ref_path(template.name)
            partial = path.with_suffix(".partial")
            partial.write_text(json.dumps(_encode(template)))
            os.rename(partial, path)
            self._cache[template.name] = template

    def remove(self, name: str) -> bool:
        with self._lock:
            if self._cache.pop(name, None) is None:
                return False
            self._ref_path(name).unlink(missing_ok=True)
            return True

    def collect_garbage(self, in_use: Iterable[str] = ()) -> list[str]:
        """Remove layers no template, no running sandbox (`in_use`) and no import in
        progress holds. Returns the removed digests."""
        removed = []
        with self._lock:
            keep = set(in_use) | set(self._pinned)
            for template in self._cache.values():
                keep.update(template.layers)
            keep_hex = {digest_hex(d) for d in keep}
            candidates = [p for p in self.layers_dir.iterdir() if p.name not in keep_hex]
            trash = self.scratch_root / ("gc-" + secrets.token_hex(8))
            trash.mkdir()
            for path in candidates:
                os.rename(path, trash / path.name)  # atomic: gone from the store at once
                removed.append("sha256:" + path.name)
        shutil.rmtree(trash, ignore_errors=True)
        return removed


def _encode(template: Template) -> dict[str, Any]:
    encoded = asdict(template)
    encoded["layers"] = list(template.layers)
    return encoded


def _decode(data: dict[str, Any]) -> Template:
    config = data.get("config") or {}
    return Template(
        name=str(data["name"]),
        description=str(data.get("description", "")),
        digest=data.get("digest"),
        layers=tuple(str(d) for d in data["layers"]),
        size=int(data.get("size", 0)),
        created_at=data.get("created_at"),
        source=str(data.get("source", "imported")),
        config=ImageConfig(
            env={str(k): str(v) for k, v in (config.get("env") or {}).items()},
            working_dir=config.get("working_dir"),
            user=config.get("user"),
        ),
        labels={str(k): str(v) for k, v in (data.get("labels") or {}).items()},
    )
