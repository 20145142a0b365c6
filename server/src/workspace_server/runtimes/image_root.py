"""The root of a sandbox made from an image template: an overlayfs whose lower layers are the
template's (idmapped onto the sandbox's uid range, runtimes/idmap.py) under a small layer of
ours, and whose upper and work dirs sit on the sandbox's own disk image, so `disk_mb` bounds
what the sandbox changes and a template's files are never copied per sandbox.

Our layer (`runtime/base-<hash>`, one per template, shared) holds what every sandbox needs
whatever the image: the mount points, `/workspace`, `/home/user`, and an `/etc/passwd` and
`/etc/group` that are the image's plus `user` (uid 1000); `hosts`, `hostname`,
`resolv.conf`.

The agent needs no Python in the image: it runs on the host's interpreter, from a read-only
bind of the host's /usr below the agent's own dir, started through the host's dynamic
loader with an explicit library path (no LD_* variable that could reach user commands).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workspace_server.domain.errors import RuntimeFailure
from workspace_server.runtimes import oci_config

AGENT_HOST_USR = f"{oci_config.AGENT_DIR}/usr"  # where the host's /usr appears inside
BASE_LAYER_VERSION = "1"
LAYERS_FILE = "layers.json"
# Mounts of the built-in templates that an image's own root replaces.
REPLACED_MOUNTS = {"/usr", "/etc", "/workspace", "/home", "/root", "/tmp", "/var/tmp"}
HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
RESOLV_CONF = "nameserver 10.0.2.3\n"  # slirp4netns's DNS forwarder
USER_UID = oci_config.SANDBOX_UID
# (path, mode, uid): the dirs every image sandbox has; uid 0 or the sandbox user.
BASE_DIRS = [
    ("proc", 0o555, 0),
    ("dev", 0o755, 0),
    ("sys", 0o555, 0),
    ("tmp", 0o1777, 0),
    ("run", 0o755, 0),
    ("run/workspace", 0o700, 0),
    ("opt", 0o755, 0),
    ("opt/workspace-agent", 0o755, 0),
    ("etc", 0o755, 0),
    ("root", 0o700, 0),
    ("home", 0o755, 0),
    ("home/user", 0o755, USER_UID),
    ("workspace", 0o755, USER_UID),
]


def host_interpreter() -> tuple[str, str, str]:
    """(loader, library dir, python) on the host, all under /usr (Debian's merged /usr)."""
    python = os.path.realpath("/usr/bin/python3")
    candidates = [os.path.realpath(p) for p in ("/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1")]
    loader = next((c for c in candidates if os.path.exists(c)), "")
    if not loader.startswith("/usr/") or not python.startswith("/usr/"):
        raise RuntimeFailure("image templates need the host's python3 and dynamic loader under /usr")
    return loader, os.path.dirname(loader), python


def agent_command(agent_args: list[str]) -> list[str]:
    """The agent's argv inside an image: the host's loader runs the host's python."""
    loader, libdir, python = host_interpreter()

    def inside(path: str) -> str:
        return AGENT_HOST_USR + path.removeprefix("/usr")

    prefix = [inside(loader), "--library-path", inside(libdir), inside(python)]
    return prefix + agent_args[1:]


def image_config(config: dict[str, Any], rootfs: Path) -> dict[str, Any]:
    """A built-in template's OCI config (runtimes/oci_config.py) turned into an image one:
    the overlay is the (writable) root, the host's /usr only backs the agent."""
    config = json.loads(json.dumps(config))
    mounts = [m for m in config["mounts"] if m["destination"] not in REPLACED_MOUNTS]
    mounts.append(oci_config.bind("/usr", AGENT_HOST_USR, readonly=True))
    config["mounts"] = mounts
    config["root"] = {"path": str(rootfs), "readonly": False}
    process = config["process"]
    process["args"] = agent_command(process["args"])
    loader = process["args"][:3]
    process["env"] = [
        *process["env"],
        "WORKSPACE_AGENT_INTERPRETER=" + json.dumps(process["args"][:4]),
        "WORKSPACE_AGENT_CHOOM=" + json.dumps([*loader, AGENT_HOST_USR + "/bin/choom"]),
    ]
    return config


# ---------------------------------------------------------------------- the base layer
def _lookup(layers: list[Path], relative: str) -> Path | None:
    """The topmost layer's copy of a path (None if absent or whited out). Parent dirs that
    are links in some layer are not followed: an image hiding /etc behind one gets ours."""
    for layer in layers:  # top first
        path = layer / relative
        try:
            info = os.lstat(path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if stat.S_ISCHR(info.st_mode) and info.st_rdev == 0:
            return None
        return path
    return None


def _read_lines(layers: list[Path], relative: str) -> list[str]:
    path = _lookup(layers, relative)
    if path is None or not path.is_file() or path.is_symlink():
        return []
    if path.stat().st_size > 1 << 20:
        return []
    return path.read_text(errors="replace").splitlines()


def merged_passwd(lines: list[str], shell: str) -> str:
    kept = []
    for line in lines:
        fields = line.split(":")
        if len(fields) >= 7 and (fields[0] in ("user", "root") or fields[2] in ("0", str(USER_UID))):
            continue
        kept.append(line)
    head = ["root:x:0:0:root:/root:" + shell, f"user:x:{USER_UID}:{USER_UID}:Sandbox user:/home/user:{shell}"]
    return "\n".join(head + kept) + "\n"


def merged_group(lines: list[str]) -> str:
    kept = []
    for line in lines:
        fields = line.split(":")
        if len(fields) >= 3 and (fields[0] in ("user", "root") or fields[2] in ("0", str(USER_UID))):
            continue
        kept.append(line)
    return "\n".join(["root:x:0:", f"user:x:{USER_UID}:", *kept]) + "\n"


def build_base_layer(target: Path, layers: list[Path], working_dir: str | None = None) -> None:
    """Our layer above an image's (`layers` top first). The image's WorkingDir is made if
    the image lacks it, as container engines do."""
    dirs = list(BASE_DIRS)
    if working_dir and working_dir.strip("/"):
        parts = [p for p in working_dir.strip("/").split("/") if p not in ("", ".", "..")]
        dirs += [("/".join(parts[: i + 1]), 0o755, 0) for i in range(len(parts))]
    for relative, mode, uid in dirs:
        path = target / relative
        existing = _lookup(layers, relative)
        if existing is not None and not existing.is_dir() and (relative, mode, uid) not in BASE_DIRS:
            continue  # the image has a file or link there: leave it be
        path.mkdir(exist_ok=True)
        if existing is not None and existing.is_dir() and not existing.is_symlink() and uid == 0:
            info = os.lstat(existing)  # keep the image's own owner and mode where it has one
            mode, owner, group = stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid
        else:
            owner = group = uid
        os.chown(path, owner, group)
        os.chmod(path, mode)
    shell = "/bin/bash" if _lookup(layers, "bin/bash") or _lookup(layers, "usr/bin/bash") else "/bin/sh"
    files = {
        "etc/passwd": merged_passwd(_read_lines(layers, "etc/passwd"), shell),
        "etc/group": merged_group(_read_lines(layers, "etc/group")),
        "etc/hosts": HOSTS,
        "etc/hostname": "sandbox\n",
        "etc/resolv.conf": RESOLV_CONF,
    }
    for relative, content in files.items():
        path = target / relative
        path.write_text(content)
        os.chmod(path, 0o644)


def base_layer(
    shared_dir: Path, layer_digests: tuple[str, ...], layer_path: Callable[[str], Path], working_dir: str | None
) -> Path:
    """Our layer for a template, made once (content-addressed by the template's layers)."""
    recipe = (BASE_LAYER_VERSION, working_dir or "", *layer_digests)
    key = hashlib.sha256("\n".join(recipe).encode()).hexdigest()[:24]
    final = shared_dir / f"base-{key}"
    if final.is_dir():
        return final
    scratch = shared_dir / f".base-{key}-{os.getpid()}-{os.urandom(4).hex()}"
    scratch.mkdir()
    try:
        build_base_layer(scratch, [layer_path(d) for d in reversed(layer_digests)], working_dir)
        os.chmod(scratch, 0o755)
        os.rename(scratch, final)
    except FileExistsError:
        shutil.rmtree(scratch, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(scratch, ignore_errors=True)
        if not final.is_dir():
            raise RuntimeFailure(f"could not prepare the template's base layer: {exc}") from None
    return final
