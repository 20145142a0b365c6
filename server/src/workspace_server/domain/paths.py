"""Validation of the paths API callers name inside a sandbox (pure)."""

from __future__ import annotations

import posixpath

from workspace_server.domain.errors import InvalidRequest

WORKSPACE = "/workspace"
MAX_PATH = 4096
MAX_NAME = 255


def sandbox_path(raw: str, *, field: str = "path") -> str:
    """An absolute, normalised path; relative paths are taken from /workspace.

    `..` components are refused outright rather than resolved: a caller who writes them
    almost always means something else, and a clear error beats a surprising file."""
    if not isinstance(raw, str) or raw == "":
        raise InvalidRequest(f"{field} must be a non-empty string", field=field)
    if "\x00" in raw:
        raise InvalidRequest(f"{field} contains a NUL byte", field=field)
    if len(raw.encode("utf-8", "surrogatepass")) > MAX_PATH:
        raise InvalidRequest(f"{field} is longer than {MAX_PATH} bytes", field=field)
    parts = raw.split("/")
    if ".." in parts:
        raise InvalidRequest(f"{field} must not contain '..' components", field=field, path=raw)
    if any(len(part.encode("utf-8", "surrogatepass")) > MAX_NAME for part in parts):
        raise InvalidRequest(f"{field} has a component longer than {MAX_NAME} bytes", field=field)
    absolute = raw if raw.startswith("/") else f"{WORKSPACE}/{raw}"
    normalised = posixpath.normpath(absolute)
    if normalised.startswith("//"):
        normalised = "/" + normalised.lstrip("/")
    return normalised
