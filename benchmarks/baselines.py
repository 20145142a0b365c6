"""Baselines measured in the same run: bare fork+exec, the isolation tool alone (runc with
a minimal bundle), and podman. Each fails soft: `BaselineUnavailable` carries the reason."""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import re
import resource
import secrets
import select
import shutil
import subprocess
import tarfile
import tempfile
import termios
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks.procfs import cgroup_of

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ROOTFS_LINKS = {"bin": "usr/bin", "lib": "usr/lib", "lib64": "usr/lib64", "sbin": "usr/sbin"}
# The host binaries the podman image carries: what the benchmark runs, plus a shell.
IMAGE_BINARIES = ("true", "echo", "sleep", "sh", "dash", "cat", "head", "yes")
IMAGE_NAME = "localhost/workspace-bench"
# Podman prefers crun when both are installed, and crun refuses this host's hybrid cgroup
# layout: name the runtime, as a user of this host would have to.
PODMAN = ("podman", "--runtime", "runc")


class BaselineUnavailable(Exception):
    """This baseline cannot be measured here; the message says why."""


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def run_checked(argv: Sequence[str], timeout: float = 120.0, detach: bool = False) -> str:
    """Run a tool, raising BaselineUnavailable with its last error line if it fails.

    `detach`: the tool leaves a process behind that inherits its stdio (runc run -d), so
    output goes to a file rather than a pipe nobody would ever see closed."""
    try:
        with tempfile.TemporaryFile() as errors:
            done = subprocess.run(
                list(argv),
                stdin=subprocess.DEVNULL,
                timeout=timeout,
                check=False,
                stdout=subprocess.DEVNULL if detach else subprocess.PIPE,
                stderr=errors if detach else subprocess.PIPE,
            )
            errors.seek(0)
            stderr = errors.read() if detach else done.stderr
    except FileNotFoundError:
        raise BaselineUnavailable(f"{argv[0]} is not installed (scripts/setup-bench.sh installs it)") from None
    except subprocess.TimeoutExpired:
        raise BaselineUnavailable(f"`{' '.join(argv[:4])}` timed out after {timeout:.0f} s") from None
    stdout = (done.stdout or b"").decode(errors="replace")
    if done.returncode != 0:
        message = (stderr or done.stdout or b"").decode(errors="replace").strip().splitlines()
        tail = message[-1] if message else f"exit status {done.returncode}"
        raise BaselineUnavailable(f"`{' '.join(argv[:4])}` failed: {tail[:300]}")
    return stdout


# --------------------------------------------------------------------------- fork+exec


def fork_exec(argv: Sequence[str], capture: bool) -> float:
    """One bare `subprocess.run`: what running a command costs with no isolation at all."""
    out = subprocess.PIPE if capture else subprocess.DEVNULL
    started = time.perf_counter()
    subprocess.run(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=out, check=True)
    return time.perf_counter() - started


def pipe_throughput(argv: Sequence[str]) -> tuple[int, float]:
    """Read a command's stdout from a local pipe as fast as possible: (bytes, seconds)."""
    started = time.perf_counter()
    proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    total = 0
    while chunk := os.read(fd, 1 << 20):
        total += len(chunk)
    proc.stdout.close()
    proc.wait()
    return total, time.perf_counter() - started


def local_file_copy(data: bytes, directory: Path) -> tuple[float, float]:
    """Write the bytes to a file on a local tmpfs (the sandbox disk is tmpfs too), read
    them back: (write seconds, read seconds)."""
    path = directory / f"wsbench-{secrets.token_hex(4)}.bin"
    try:
        started = time.perf_counter()
        with open(path, "wb") as out:
            out.write(data)
        written = time.perf_counter()
        buffer = bytearray(1 << 20)
        with open(path, "rb", buffering=0) as source:
            while source.readinto(buffer):
                pass
        read = time.perf_counter()
    finally:
        path.unlink(missing_ok=True)
    return written - started, read - written


def concurrent_fork_exec(argv: Sequence[str], clients: int, seconds: float) -> tuple[list[float], float]:
    """`clients` threads running the command back to back: (latencies, wall seconds)."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    barrier = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def worker(index: int) -> None:
        barrier.wait()
        while time.perf_counter() < stop_at[0]:
            latencies[index].append(fork_exec(argv, capture=False))

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + seconds
    started = time.perf_counter()
    barrier.wait()
    for t in threads:
        t.join()
    return [x for per in latencies for x in per], time.perf_counter() - started


def local_pty_echo(keystrokes: int, warmup: int = 5) -> list[float]:
    """Keystroke → echo on a local pty running bash (no sandbox, no network hop)."""
    master, slave = os.openpty()

    def make_controlling_tty() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    env = {"PATH": PATH_ENV.split("=", 1)[1], "TERM": "xterm-256color", "PS1": "$ ", "HOME": "/tmp"}
    proc = subprocess.Popen(
        ["bash", "--noprofile", "--norc", "-i"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        preexec_fn=make_controlling_tty,
        env=env,
        close_fds=True,
    )
    os.close(slave)

    def read_until(needle: bytes | None, timeout: float) -> bytes:
        seen = b""
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            if not ready:
                if needle is None:
                    return seen
                raise OSError(f"the local pty did not echo within {timeout:.0f} s")
            seen += os.read(master, 65536)
            if needle is not None and needle in seen:
                return seen

    samples: list[float] = []
    try:
        read_until(None, 0.5)  # the prompt
        for i in range(warmup + keystrokes):
            if i and i % 40 == 0:
                os.write(master, b"\x15")
                read_until(None, 0.2)
            started = time.perf_counter()
            os.write(master, b"a")
            read_until(b"a", 10.0)
            if i >= warmup:
                samples.append(time.perf_counter() - started)
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
    return samples


# --------------------------------------------------------------------------- runc alone


def runc_config(spec: dict[str, object], args: list[str], cgroups_path: str) -> dict[str, object]:
    """`runc spec`'s default config, made to run `args` without a terminal, with the host's
    /usr bound read-only (as sandboxes have it) and cgroups below our own."""
    config = json.loads(json.dumps(spec))
    process = config["process"]
    process["terminal"] = False
    process["args"] = args
    process["env"] = [PATH_ENV]
    config["root"] = {"path": "rootfs", "readonly": True}
    config["mounts"].append(
        {"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "nosuid", "nodev", "ro"]}
    )
    config["linux"]["cgroupsPath"] = cgroups_path
    return dict(config)


class RuncBundle:
    """A minimal OCI bundle in a temp dir: empty rootfs skeleton + /usr bind."""

    def __init__(self, root: Path) -> None:
        if shutil.which("runc") is None:
            raise BaselineUnavailable("runc is not installed")
        self.root = root
        self.state = root / "runc-state"
        self.bundle = root / "runc-bundle"
        self.cgroup_parent = cgroup_of(os.getpid()).rstrip("/") + "/wsbench-runc"
        rootfs = self.bundle / "rootfs"
        for name in ("usr", "proc", "dev", "sys", "tmp"):
            (rootfs / name).mkdir(parents=True, exist_ok=True)
        for link, target in ROOTFS_LINKS.items():
            if not (rootfs / link).is_symlink():
                (rootfs / link).symlink_to(target)
        spec_dir = root / "runc-spec"
        spec_dir.mkdir(exist_ok=True)
        (spec_dir / "config.json").unlink(missing_ok=True)
        run_checked(["runc", "spec", "--bundle", str(spec_dir)])
        self.spec = json.loads((spec_dir / "config.json").read_text())
        self.live: set[str] = set()

    def _configure(self, args: list[str], container_id: str) -> None:
        config = runc_config(self.spec, args, f"{self.cgroup_parent}/{container_id}")
        (self.bundle / "config.json").write_text(json.dumps(config))

    def _runc(self, *args: str) -> list[str]:
        return ["runc", "--root", str(self.state), *args]

    def run_once(self, args: list[str]) -> float:
        """`runc run` in the foreground: create, start, wait, delete."""
        container_id = "wsbench-" + secrets.token_hex(4)
        self._configure(args, container_id)
        self.live.add(container_id)
        try:
            return timed(lambda: run_checked(self._runc("run", "--bundle", str(self.bundle), container_id)))
        finally:
            self.live.discard(container_id)

    def start_detached(self, args: list[str]) -> str:
        container_id = "wsbench-" + secrets.token_hex(4)
        self._configure(args, container_id)
        self.live.add(container_id)
        run_checked(self._runc("run", "--detach", "--bundle", str(self.bundle), container_id), detach=True)
        return container_id

    def exec_once(self, container_id: str, args: list[str]) -> float:
        return timed(lambda: run_checked(self._runc("exec", container_id, *args)))

    def remove(self, container_id: str) -> None:
        subprocess.run(self._runc("delete", "--force", container_id), capture_output=True, check=False)
        self.live.discard(container_id)

    def cleanup(self) -> None:
        for container_id in list(self.live):
            self.remove(container_id)
        for controller in Path("/sys/fs/cgroup").iterdir():
            parent = controller / self.cgroup_parent.lstrip("/")
            if parent.is_dir():
                for child in parent.iterdir():
                    if child.is_dir():
                        try:
                            child.rmdir()
                        except OSError:
                            pass
                try:
                    parent.rmdir()
                except OSError:
                    pass


# --------------------------------------------------------------------------- podman


def shared_libraries(binary: Path) -> list[Path]:
    """The binary's shared objects (and the dynamic loader), from ldd."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False).stdout
    found: list[Path] = []
    for match in re.finditer(r"(/\S+)\s+\(0x", out):
        found.append(Path(match.group(1)))
    return found


def usr_path(path: str) -> str:
    """Where a host path lives in a merged-/usr root, relative: /lib/x -> usr/lib/x."""
    relative = path.lstrip("/")
    return relative if relative.startswith("usr/") else "usr/" + relative


def image_members() -> dict[str, Path]:
    """The image's files: {path in the image: host file}. The same binaries sandboxes
    see through their read-only /usr, each at the path it is called by (so /usr/bin/sh
    and the loader named by binaries, /lib64/ld-linux-x86-64.so.2, exist as such)."""
    members: dict[str, Path] = {}
    for name in IMAGE_BINARIES:
        located = shutil.which(name, path="/usr/bin:/bin")
        if located is None:
            continue
        members[usr_path(located)] = Path(located).resolve()
        for library in shared_libraries(Path(located).resolve()):
            members[usr_path(str(library))] = library.resolve()
    return dict(sorted(members.items()))


def rootfs_tar(members: dict[str, Path]) -> bytes:
    """A tar of a tiny root filesystem: the members, the usual merged-/usr symlinks
    (bin -> usr/bin...), an /etc with passwd and group, and empty mount points."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        directories: set[str] = set()

        def add_dirs(relative: str) -> None:
            parts = relative.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in directories:
                    directories.add(d)
                    info = tarfile.TarInfo(d)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    tar.addfile(info)

        for relative, source in members.items():
            add_dirs(relative)
            tar.add(str(source), arcname=relative, recursive=False)
        for link, target in ROOTFS_LINKS.items():
            info = tarfile.TarInfo(link)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
        for name, content in (("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"), ("etc/group", "root:x:0:\n")):
            add_dirs(name)
            data = content.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
        for name in ("tmp", "root", "proc", "sys", "dev"):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if name == "tmp" else 0o755
            tar.addfile(info)
    return buffer.getvalue()


def image_tag(members: dict[str, Path]) -> str:
    digest = hashlib.sha256()
    for relative, source in members.items():
        st = source.stat()
        digest.update(f"{relative}:{source}:{st.st_size}:{int(st.st_mtime)}\n".encode())
    return digest.hexdigest()[:12]


class Podman:
    """podman as Debian ships it (rootful here), on an image imported from the host's own
    binaries; every container runs with --network none like a sandbox."""

    def __init__(self, scratch: Path) -> None:
        # podman's default RLIMIT_NOFILE and RLIMIT_NPROC (1048576) can exceed what this host
        # lets a container's init set, and then no container starts ("error setting rlimit
        # type 7"): give it the limits of the benchmark's runc bundle instead.
        nofile = min(4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        self.run_flags = (
            "--network",
            "none",
            "--log-driver",
            "none",
            "--ulimit",
            f"nofile={nofile}:{nofile}",
            "--ulimit",
            "nproc=4096:4096",
        )
        members = image_members()
        if not members:
            raise BaselineUnavailable("could not find the host binaries to build the image from")
        self.image = f"{IMAGE_NAME}:{image_tag(members)}"
        self.live: set[str] = set()
        exists = subprocess.run([*PODMAN, "image", "exists", self.image], capture_output=True, check=False)
        if exists.returncode != 0:
            tar_path = scratch / "podman-rootfs.tar"
            tar_path.write_bytes(rootfs_tar(members))
            run_checked([*PODMAN, "import", "--quiet", str(tar_path), self.image], timeout=300)
            tar_path.unlink()
        # The first container on a fresh storage sets things up: keep that out of the numbers.
        self.run_rm(["true"])

    def _name(self) -> str:
        name = "wsbench-" + secrets.token_hex(4)
        self.live.add(name)
        return name

    def run_rm(self, args: list[str]) -> float:
        """`podman run --rm`: create, start, wait, remove."""
        name = self._name()
        try:
            return timed(
                lambda: run_checked([*PODMAN, "run", "--rm", "--name", name, *self.run_flags, self.image, *args])
            )
        finally:
            self.live.discard(name)

    def run_then_rm(self, args: list[str]) -> tuple[float, float]:
        """`podman run` (create→command finished) then `podman rm`, timed apart."""
        name = self._name()
        try:
            first = timed(lambda: run_checked([*PODMAN, "run", "--name", name, *self.run_flags, self.image, *args]))
            second = timed(lambda: run_checked([*PODMAN, "rm", name]))
        finally:
            self.remove(name)
        return first, second

    def start_detached(self, args: list[str]) -> str:
        name = self._name()
        run_checked([*PODMAN, "run", "-d", "--name", name, *self.run_flags, self.image, *args])
        return name

    def exec_once(self, name: str, args: list[str]) -> float:
        return timed(lambda: run_checked([*PODMAN, "exec", name, *args]))

    def remove(self, name: str) -> None:
        subprocess.run([*PODMAN, "rm", "--force", "--time", "0", name], capture_output=True, check=False)
        self.live.discard(name)

    def cleanup(self) -> None:
        for name in list(self.live):
            self.remove(name)
