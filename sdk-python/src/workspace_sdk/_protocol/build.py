"""Build routes: ``POST /templates/build``, ``/builds/{id}`` and its log; and the build
context as a tar stream (pure: yields bytes, reads only the local files it names)."""

from __future__ import annotations

import fnmatch
import os
import posixpath
import stat
import tarfile
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeAlias

from ..types import Build, BuildStep
from ._common import (
    ApiRequest,
    expect_object,
    invalid_response,
    optional_int,
    optional_str,
    path_segment,
    query_bool,
    require_str,
)

# A Containerfile sent beside the context (not one of its files) is named so; the server
# leaves it out of the context.
SENT_CONTAINERFILE = ".workspace-containerfile"
LogCallback: TypeAlias = Callable[[str], Any]  # receives the build log as it is written
IGNORE_FILES = (".containerignore", ".dockerignore")
BLOCK = tarfile.BLOCKSIZE
CHUNK = 1 << 20


def build_request(
    name: str,
    *,
    replace: bool,
    file: str | None,
    build_args: Mapping[str, str],
    env: Mapping[str, str],
    timeout: float,
    network: bool,
    description: str,
) -> ApiRequest:
    params: dict[str, Any] = {"name": name, "replace": query_bool(replace), "timeout": str(timeout)}
    if file:
        params["file"] = file
    if build_args:
        params["build_arg"] = [f"{k}={v}" for k, v in build_args.items()]
    if env:
        params["env"] = [f"{k}={v}" for k, v in env.items()]
    if network:
        params["network"] = "true"
    if description:
        params["description"] = description
    return ApiRequest("POST", "/templates/build", params=params, error_context={"template": name})


def get_build_request(build_id: str) -> ApiRequest:
    return ApiRequest("GET", f"/builds/{path_segment(build_id)}", error_context={"build_id": build_id})


def delete_build_request(build_id: str) -> ApiRequest:
    return ApiRequest("DELETE", f"/builds/{path_segment(build_id)}", error_context={"build_id": build_id})


def build_logs_request(build_id: str, offset: int) -> ApiRequest:
    return ApiRequest(
        "GET",
        f"/builds/{path_segment(build_id)}/logs",
        params={"offset": str(offset)},
        error_context={"build_id": build_id},
    )


def parse_build(data: Any) -> Build:
    obj = expect_object(data, "Build")
    steps = obj.get("steps")
    if not isinstance(steps, list):
        raise invalid_response("field 'steps' must be a list")
    error = obj.get("error")
    return Build(
        id=require_str(obj, "id"),
        template=require_str(obj, "template"),
        base=optional_str(obj, "base") or "",
        state=require_str(obj, "state"),
        created_at=optional_str(obj, "created_at"),
        steps=[_parse_step(step) for step in steps],
        error=dict(error) if isinstance(error, dict) else None,
        digest=optional_str(obj, "digest"),
        log_bytes=optional_int(obj, "log_bytes") or 0,
    )


def _parse_step(data: Any) -> BuildStep:
    obj = expect_object(data, "BuildStep")
    cached = obj.get("cached")
    return BuildStep(
        index=optional_int(obj, "index") or 0,
        line=optional_int(obj, "line") or 0,
        instruction=optional_str(obj, "instruction") or "",
        kind=optional_str(obj, "kind") or "",
        state=optional_str(obj, "state") or "",
        cached=cached if isinstance(cached, bool) else None,
        layer=optional_str(obj, "layer"),
        exit_code=optional_int(obj, "exit_code"),
    )


def failure_envelope(build: Build) -> dict[str, Any]:
    """A failed build's error as the server's error envelope (the SDK's exception table)."""
    error = build.error or {}
    details = {k: error.get(k) for k in ("step", "line", "exit_code") if error.get(k) is not None}
    return {
        "code": str(error.get("code") or "BUILD_FAILED"),
        "message": str(error.get("message") or f"build {build.id} failed"),
        "details": {"build_id": build.id, "template": build.template, **details},
    }


# ---------------------------------------------------------------------- the context as a tar
def _ignore_patterns(root: str) -> list[tuple[bool, str]]:
    for name in IGNORE_FILES:
        path = os.path.join(root, name)
        if os.path.isfile(path):
            with open(path, encoding="utf-8", errors="replace") as ignore:
                lines = [line.strip() for line in ignore]
            patterns = []
            for line in lines:
                if not line or line.startswith("#"):
                    continue
                negated = line.startswith("!")
                pattern = posixpath.normpath(line.lstrip("!").strip().lstrip("/"))
                patterns.append((negated, pattern))
            return patterns
    return []


def _ignored(relative: str, patterns: list[tuple[bool, str]]) -> bool:
    """`.containerignore` rules as the engines apply them: the last matching line wins; a
    pattern matching a directory excludes what is in it."""
    result = False
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for negated, pattern in patterns:
        if any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes) or fnmatch.fnmatchcase(
            relative, pattern.rstrip("/") + "/**"
        ):
            result = not negated
    return result


def _header(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape")


def context_tar(root: str, extra: Mapping[str, bytes] | None = None) -> Iterator[bytes]:
    """The directory `root` as a tar stream, a chunk at a time (never the whole context in
    memory): regular files, directories and symlinks, paths relative to `root`, owners
    zeroed; what `.containerignore` (or `.dockerignore`) excludes is left out. `extra`:
    more files (name -> content) at the top."""
    patterns = _ignore_patterns(root)
    reincluding = any(negated for negated, _ in patterns)
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        relative_dir = os.path.relpath(directory, root)
        for name in sorted(dirs) + sorted(files):
            path = os.path.join(directory, name)
            relative = posixpath.normpath(posixpath.join(relative_dir.replace(os.sep, "/"), name))
            if _ignored(relative, patterns):
                if name in dirs and not reincluding:  # a `!` line may bring back what is inside
                    dirs.remove(name)
                continue
            info_stat = os.lstat(path)
            info = tarfile.TarInfo(relative)
            info.mode, info.mtime = stat.S_IMODE(info_stat.st_mode), int(info_stat.st_mtime)
            if stat.S_ISLNK(info_stat.st_mode):
                info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
                yield _header(info)
            elif stat.S_ISDIR(info_stat.st_mode):
                info.type = tarfile.DIRTYPE
                yield _header(info)
            elif stat.S_ISREG(info_stat.st_mode):
                yield from _file_entry(info, path)
    for name, content in (extra or {}).items():
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(content), 0o644
        yield _header(info) + content + b"\0" * (-len(content) % BLOCK)
    yield b"\0" * (2 * BLOCK)


def _file_entry(info: tarfile.TarInfo, path: str) -> Iterator[bytes]:
    with open(path, "rb") as data:
        size = os.fstat(data.fileno()).st_size
        info.size = size
        yield _header(info)
        left = size
        while left > 0:
            chunk = data.read(min(CHUNK, left))
            if not chunk:  # the file shrank while we read it: pad to the size announced
                chunk = b"\0" * min(CHUNK, left)
            left -= len(chunk)
            yield chunk
        yield b"\0" * (-size % BLOCK)
