"""The console's files: its own pages and scripts (static/) and the front-end packages npm
installed next to them (node_modules/, from package.json and package-lock.json by
scripts/setup.sh). Only an allow-list of the packages' files is served, gzip-compressed
once, with an ETag."""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
VENDOR_DIR = HERE / "node_modules"

# Served name (under /ui/vendor/) -> file in node_modules. The licenses are served with the code.
VENDOR_FILES = {
    "xterm.mjs": "@xterm/xterm/lib/xterm.mjs",
    "xterm.css": "@xterm/xterm/css/xterm.css",
    "addon-fit.mjs": "@xterm/addon-fit/lib/addon-fit.mjs",
    "LICENSE-xterm.txt": "@xterm/xterm/LICENSE",
    "LICENSE-addon-fit.txt": "@xterm/addon-fit/LICENSE",
}
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Below this, gzip saves less than its header costs.
MIN_COMPRESSED_SIZE = 512


@dataclass(frozen=True)
class Asset:
    body: bytes
    gzipped: bytes | None
    etag: str
    content_type: str


class Assets:
    def __init__(self, static_dir: Path = STATIC_DIR, vendor_dir: Path = VENDOR_DIR) -> None:
        self.static_dir = static_dir
        self.vendor_dir = vendor_dir
        self._cache: dict[str, Asset] = {}

    def path_of(self, name: str) -> Path | None:
        """The file behind a served name, or None if it is not one the console serves."""
        if name.startswith("vendor/"):
            relative = VENDOR_FILES.get(name.removeprefix("vendor/"))
            return self.vendor_dir / relative if relative else None
        if "/" in name or name.startswith(".") or Path(name).suffix not in CONTENT_TYPES:
            return None
        return self.static_dir / name

    def get(self, name: str) -> Asset | None:
        cached = self._cache.get(name)
        if cached is not None:
            return cached
        path = self.path_of(name)
        if path is None:
            return None
        try:
            body = path.read_bytes()
        except OSError:
            return None
        asset = Asset(
            body=body,
            gzipped=gzip.compress(body, compresslevel=9, mtime=0) if len(body) >= MIN_COMPRESSED_SIZE else None,
            etag='"' + hashlib.sha256(body).hexdigest()[:32] + '"',
            content_type=CONTENT_TYPES[path.suffix],
        )
        self._cache[name] = asset
        return asset

    def vendor_installed(self) -> bool:
        return all((self.vendor_dir / relative).is_file() for relative in VENDOR_FILES.values())
