"""The local runtime: every sandbox is an OCI bundle run by runc (Debian's package).

Layout under the data dir:
  runc/                 runc's own state (--root)
  runtime/etc/          the sandboxes' /etc: an allow-listed copy of the host's (no host
                        secrets such as pip or npm tokens), with our own passwd, group, hosts
  runtime/rootfs-*/     the sandboxes' root: an empty skeleton of mount points, shared
                        read-only (each sandbox's mounts live in its own mount namespace)
  sandboxes/<id>/       the bundle: config.json,
                        disk.img (an ext4 image of disk_mb, loop-mounted on rw/: /workspace,
                        /home, /tmp, /root and the agent's socket dir /run/workspace
                        inside, with the agent's stdout/stderr: agent.log)

runc applies namespaces, the user-namespace id maps, cgroup limits, capabilities,
no_new_privs, seccomp and the masked /proc paths; we only write the config.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from workspace_server import agent as agent_package
from workspace_server.domain.errors import InvalidRequest, RuntimeFailure
from workspace_server.domain.models import ResourceLimits
from workspace_server.runtimes import disk_copy, egress, image_root, oci_config, shared_dirs, uid_ranges
from workspace_server.runtimes.base import HostWorkspace, SandboxSpec, StartedSandbox
from workspace_server.runtimes.blank_disks import BlankDisks
from workspace_server.runtimes.cgroups import SandboxCgroups
from workspace_server.runtimes.host_commands import run_host_command
from workspace_server.runtimes.image_mounts import ImageMounts
from workspace_server.runtimes.runc_lifecycle import DISK_IMAGE, RuncLifecycle
from workspace_server.runtimes.user_namespace import owned_user_namespace
from workspace_server.store.disk_space import MIB, DataDirSpace, allocated_bytes

log = logging.getLogger(__name__)

ROOTFS_DIRS = [
    "usr",
    "etc",
    "proc",
    "dev",
    "sys",
    "tmp",
    "workspace",
    "home",
    "root",
    "run/workspace",
    "var/tmp",
    "opt/workspace-agent",
]
ROOTFS_LINKS = {"bin": "usr/bin", "lib": "usr/lib", "lib64": "usr/lib64", "sbin": "usr/sbin"}
AGENT_LOG = "agent.log"  # in the agent's socket dir, on the sandbox's disk image
NETWORK_READY_TIMEOUT = 10.0
RESOLV_CONF = "nameserver 10.0.2.3\n"  # slirp4netns's DNS forwarder
SANDBOX_PYTHON = "/usr/bin/python3"
PASSWD = (
    "root:x:0:0:root:/root:/bin/bash\n"
    "user:x:1000:1000:Sandbox user:/home/user:/bin/bash\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
)
GROUP = "root:x:0:\nuser:x:1000:\nnogroup:x:65534:\n"
HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"


# What a userland needs from /etc; everything else on the host (credentials, service
# configs, package-manager tokens) stays out of sandboxes.
ETC_ALLOWLIST = (
    "alternatives",
    "bash.bashrc",
    "bash_completion.d",
    "ca-certificates",
    "ca-certificates.conf",
    "debian_version",
    "fonts",
    "gai.conf",
    "host.conf",
    "inputrc",
    "issue",
    "java-17-openjdk",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "locale.alias",
    "localtime",
    "login.defs",
    "magic",
    "magic.mime",
    "manpath.config",
    "mime.types",
    "networks",
    "nsswitch.conf",
    "os-release",
    "perl",
    "profile",
    "profile.d",
    "protocols",
    "python3",
    "python3.11",
    "rpc",
    "services",
    "shells",
    "skel",
    "ssl",
    "terminfo",
    "timezone",
    "vim",
    "xdg",
)
ETC_PRIVATE = {"private"}  # e.g. /etc/ssl/private: key material


def build_rootfs(target: Path) -> None:
    for directory in ROOTFS_DIRS:
        (target / directory).mkdir(parents=True, exist_ok=True)
    for link, link_target in ROOTFS_LINKS.items():
        (target / link).symlink_to(link_target)


def build_etc(target: Path, source: Path = Path("/etc")) -> None:
    for name in ETC_ALLOWLIST:
        origin = source / name
        if origin.is_symlink() or origin.is_file():
            shutil.copy2(origin, target / name, follow_symlinks=False)
        elif origin.is_dir():
            shutil.copytree(origin, target / name, symlinks=True, ignore=lambda _d, names: ETC_PRIVATE & set(names))
    for name, content in (
        ("passwd", PASSWD),
        ("group", GROUP),
        ("hosts", HOSTS),
        ("resolv.conf", RESOLV_CONF),
        ("hostname", "sandbox\n"),
    ):
        (target / name).write_text(content)


INIT_EXIT_WAIT = 2.0


def _is_running(pid: int) -> bool:
    """False once the process has exited (a zombie counts as exited, as for runc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


def _fresh_agent_log(path: Path) -> int:
    """A new, empty agent log. On a kept disk, whatever sandbox root left under that name
    (a symlink, a fifo, a directory) goes first: the host never follows or opens it."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)


class RuncRuntime(RuncLifecycle):
    """The local runtime (the Runtime protocol): each sandbox an OCI bundle under the data
    dir, run by runc; cgroups through SandboxCgroups, pause/stop/fork in RuncLifecycle."""

    name = "runc"

    def __init__(
        self,
        data_dir: Path,
        runc: str = "runc",
        slirp4netns: str = "slirp4netns",
        network_allow: Sequence[egress.IPv4Network] = (),
        space: DataDirSpace | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.runc = runc
        self.slirp4netns = slirp4netns
        self.network_allow = tuple(network_allow)
        self.state_dir = data_dir / "runc"
        self.sandboxes_dir = data_dir / "sandboxes"
        self.shared_dir = data_dir / "runtime"
        self.agent_source = Path(agent_package.__file__).resolve().parent
        self.etc_dir = self.shared_dir / "etc-unpublished"
        self.agent_dir = self.shared_dir / "agent-unpublished"
        self.rootfs_dir = self.shared_dir / "rootfs-unpublished"
        self.cgroups = SandboxCgroups()
        self.blank_disks = BlankDisks(self.shared_dir)
        self.space = space or DataDirSpace(data_dir, 0, overcommit=True)
        self.space.track(lambda: self.sandboxes_dir.glob(f"*/{DISK_IMAGE}"))
        self.uid_ranges = uid_ranges.UidRanges(uid_ranges.HOST_REGISTRY, self.sandboxes_dir)
        self.images = ImageMounts(self.shared_dir, data_dir / "templates" / "layers")

    # ------------------------------------------------------------------ setup
    def check(self) -> None:
        if os.geteuid() != 0:
            raise RuntimeFailure("the local runtime needs root (it runs runc to create namespaces and cgroups)")
        if shutil.which(self.runc) is None:
            raise RuntimeFailure(f"{self.runc} not found: install Debian's runc package (scripts/setup.sh does)")
        if not Path(SANDBOX_PYTHON).exists():
            raise RuntimeFailure("/usr/bin/python3 not found: the in-sandbox agent needs Debian's python3")
        for directory in (self.state_dir, self.sandboxes_dir, self.shared_dir):
            directory.mkdir(parents=True, exist_ok=True)
        # Sandbox roots run as an unprivileged host uid, which must be able to walk down
        # to the bundle: the data dir and every directory above it need the x bit for others.
        for directory in (self.data_dir, self.sandboxes_dir, self.shared_dir):
            os.chmod(directory, os.stat(directory).st_mode | 0o011)
        for ancestor in self.data_dir.resolve().parents:
            if not os.stat(ancestor).st_mode & 0o001:
                raise RuntimeFailure(
                    f"{ancestor} is not searchable by other users (chmod o+x it), so sandboxes cannot "
                    f"reach their root under {self.data_dir}; or choose a --data-dir elsewhere"
                )
        self.blank_disks.sweep()  # remade on demand, for current sizes only
        self.space.sweep_trash()
        shared_dirs.sweep_scratch(self.shared_dir)
        self.etc_dir = shared_dirs.publish(self.shared_dir, "etc", build_etc)
        self.agent_dir = shared_dirs.publish(self.shared_dir, "agent", self._build_agent)
        self.rootfs_dir = shared_dirs.publish(self.shared_dir, "rootfs", build_rootfs)
        configs = self._bundle_configs()
        for sandbox_id, config in configs.items():
            self._adopt_uid_range(sandbox_id, config)
        in_use = self._shared_dirs_in_use(configs.values()) | {self.etc_dir, self.agent_dir, self.rootfs_dir}
        for prefix in ("etc", "agent", "rootfs"):
            shared_dirs.prune(self.shared_dir, prefix, in_use)

    def _build_agent(self, target: Path) -> None:
        """Copy the agent's directory (every module of it) beside the data and byte-compile it
        with the sandboxes' python3, so no sandbox pays for compiling it (the bind mount is
        read-only, so none could cache it)."""
        shutil.copytree(self.agent_source, target, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
        (target / "usr").mkdir()  # where image sandboxes see the host's /usr (runtimes/image_root.py)
        result = subprocess.run(
            [SANDBOX_PYTHON, "-m", "compileall", "-q", str(target)], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise RuntimeFailure(f"{SANDBOX_PYTHON} cannot compile the agent: {result.stdout}{result.stderr}")

    def _bundle_configs(self) -> dict[str, dict[str, Any]]:
        """The OCI configs of existing sandboxes (they outlive server restarts), by id."""
        configs = {}
        for path in self.sandboxes_dir.glob("*/config.json"):
            try:
                loaded = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(loaded, dict):
                configs[path.parent.name] = loaded
        return configs

    def _adopt_uid_range(self, sandbox_id: str, config: dict[str, Any]) -> None:
        try:
            self.uid_ranges.adopt(sandbox_id, int(config["linux"]["uidMappings"][0]["hostID"]))
        except (KeyError, IndexError, TypeError, ValueError):
            pass

    def _shared_dirs_in_use(self, configs: Iterable[dict[str, Any]]) -> set[Path]:
        """Shared directories that existing sandboxes bind."""
        used: set[Path] = set()
        for config in configs:
            try:
                sources = [str(m.get("source", "")) for m in config["mounts"]] + [str(config["root"]["path"])]
            except (KeyError, TypeError, AttributeError):
                continue
            used.update(Path(source) for source in sources if source.startswith(str(self.shared_dir)))
        return used

    # ------------------------------------------------------------------ helpers
    def _bundle(self, sandbox_id: str) -> Path:
        return self.sandboxes_dir / sandbox_id

    def agent_socket(self, sandbox_id: str) -> Path:
        return self._bundle(sandbox_id) / "rw" / "run" / oci_config.AGENT_SOCKET_NAME

    async def _runc(self, *args: str, check: bool = True) -> tuple[int, str]:
        code, text = await run_host_command(self.runc, "--root", str(self.state_dir), *args)
        if check and code != 0:
            raise RuntimeFailure(f"runc {args[0]} failed: {text}")
        return code, text

    def host_workspace(self, sandbox_id: str) -> HostWorkspace | None:
        """The sandbox's /workspace on the host (the disk image's workspace/ dir), for NFS.
        None unless the disk is mounted and workspace/ is a real directory there: the
        sandbox cannot reach the disk's root, but nothing under it is taken on trust."""
        root = self.uid_ranges.start_of(sandbox_id)
        rw = self._bundle(sandbox_id) / "rw"
        workspace = rw / "workspace"
        if root is None or not os.path.ismount(rw) or workspace.is_symlink() or not workspace.is_dir():
            return None
        user = root + oci_config.SANDBOX_UID
        return HostWorkspace(workspace, user, user)

    def _prepare_bundle(self, spec: SandboxSpec) -> Path:
        bundle = self._bundle(spec.sandbox_id)
        bundle.mkdir()
        (bundle / "rw").mkdir()
        return bundle

    @staticmethod
    def _populate_writable(rw: Path, root: int) -> None:
        """The writable dirs, owned by the sandbox's root (host uid `root`) or its user."""
        user = root + oci_config.SANDBOX_UID
        os.chown(rw, root, root)  # the disk's root dir
        layout = [
            ("workspace", 0o755, user),
            ("home", 0o755, root),
            ("home/user", 0o755, user),
            ("root", 0o700, root),
            ("tmp", 0o1777, root),
            ("var-tmp", 0o1777, root),
            # The agent's socket dir: on the quota'd tmpfs too, so not even sandbox root can
            # write to the host's own disk through it.
            ("run", 0o700, root),
        ]
        for name, mode, owner in layout:
            path = rw / name
            path.mkdir()
            os.chown(path, owner, owner)
            os.chmod(path, mode)

    # ------------------------------------------------------------------ Runtime
    async def start(self, spec: SandboxSpec) -> StartedSandbox:
        if spec.existing_disk:
            bundle = self._bundle(spec.sandbox_id)
            # A disk made sparse (by an older server) gets its blocks before it is used again.
            await asyncio.to_thread(self.space.allocate_image, bundle / DISK_IMAGE)
        else:
            self.space.check(spec.limits.disk_mb * MIB)  # before any work: a clear refusal
            bundle = await asyncio.to_thread(self._prepare_bundle, spec)
        rw = bundle / "rw"
        try:
            host_uid = self.uid_ranges.take(spec.sandbox_id)
            if spec.existing_disk:
                await self._mount_image(bundle / DISK_IMAGE, rw)
            else:
                await self._mount_disk(bundle / DISK_IMAGE, rw, spec.limits.disk_mb)
            if spec.template.is_image:
                rootfs = await asyncio.to_thread(self.images.mount, bundle, rw, spec.template, host_uid)
            elif not spec.existing_disk:
                await asyncio.to_thread(self._populate_writable, rw, host_uid)
            async with owned_user_namespace(host_uid) as user_namespace:
                config = oci_config.build_config(
                    spec,
                    writable_dir=rw,
                    run_dir=rw / "run",
                    agent_dir=self.agent_dir,
                    etc_dir=self.etc_dir,
                    rootfs=self.rootfs_dir,
                    cgroups_path=self.cgroups.path(spec.sandbox_id),
                    host_uid=host_uid,
                    user_namespace=user_namespace,
                )
                if spec.template.is_image:
                    config = image_root.image_config(config, rootfs)
                (bundle / "config.json").write_text(json.dumps(config))
                pid_file = bundle / "init.pid"
                # The agent's stdout and stderr (and runc's own errors): a file on the sandbox's
                # own disk image, so whatever sandbox root writes to them counts against disk_mb
                # and never lands on the host's disk.
                agent_log = await asyncio.to_thread(_fresh_agent_log, rw / "run" / AGENT_LOG)
                workload_procs = -1
                try:
                    workload_procs = await asyncio.to_thread(self.cgroups.make_workload, spec.sandbox_id, spec.limits)
                    code, _ = await run_host_command(
                        "prlimit",  # inherited by the sandbox's init (oci_config.process_rlimits)
                        *(f"--{name.lower()}={value}:{value}" for name, value in oci_config.process_rlimits()),
                        "--",
                        self.runc,
                        "--root",
                        str(self.state_dir),
                        "run",
                        "--detach",
                        "--bundle",
                        str(bundle),
                        "--pid-file",
                        str(pid_file),
                        spec.sandbox_id,
                        stdin=workload_procs,
                        output=agent_log,
                    )
                    tail = b"" if code == 0 else os.pread(agent_log, 2000, max(0, os.fstat(agent_log).st_size - 2000))
                finally:
                    if workload_procs >= 0:
                        os.close(workload_procs)
                    os.close(agent_log)
            if code != 0:
                raise RuntimeFailure(f"runc could not start the sandbox: {tail.decode(errors='replace').strip()}")
            host_pid = int(pid_file.read_text().strip())
            if spec.network or spec.egress_filter:
                await egress.restrict(bundle, host_pid, self.network_allow)  # before any packet can leave
            if spec.network:
                await self._start_network(bundle, host_pid)
        except BaseException:
            # A failed boot on a kept disk keeps the disk: its files are the user's.
            undo = self.stop if spec.existing_disk else self.destroy
            await asyncio.shield(undo(spec.sandbox_id))
            raise
        return StartedSandbox(spec.sandbox_id, self.agent_socket(spec.sandbox_id), host_pid)

    @property
    def adjustable_limits(self) -> bool:
        return self.cgroups.adjustable_limits

    async def apply_limits(self, sandbox_id: str, current: ResourceLimits, wanted: ResourceLimits) -> None:
        await self.cgroups.apply_limits(sandbox_id, current, wanted)

    @property
    def attachable_network(self) -> bool:
        return True

    async def attach_network(self, sandbox_id: str, host_pid: int) -> None:
        bundle = self._bundle(sandbox_id)
        await egress.restrict(bundle, host_pid, self.network_allow)  # before any packet can leave
        await self._start_network(bundle, host_pid)

    async def _mount_disk(self, image: Path, mountpoint: Path, size_mb: int) -> None:
        """The sandbox's writable dirs live on an ext4 image of exactly disk_mb, loop-mounted.

        A real filesystem, not a tmpfs: its page cache can be written back and reclaimed,
        so files never count against memory_mb. Its blocks are allocated in full before it
        is used (store/disk_space.py), so what disk_mb promises is there to be written."""
        async with self.blank_disks.use(size_mb) as blank:
            # A sparse copy of a formatted blank image of that size: ~3 ms against ~10 ms for mkfs.
            code, out = await run_host_command("cp", "--sparse=always", str(blank), str(image))
        if code != 0:
            raise RuntimeFailure(f"could not make the sandbox's disk: {out}")
        await asyncio.to_thread(self.space.allocate_image, image, size_mb * MIB)
        await disk_copy.give_own_uuid(image)
        await self._mount_image(image, mountpoint)
        mountpoint.chmod(0o755)
        shutil.rmtree(mountpoint / "lost+found", ignore_errors=True)

    async def _start_network(self, bundle: Path, host_pid: int) -> None:
        """Outbound access through slirp4netns: a user-mode TCP/IP stack on the host side of
        a tap device in the sandbox's network namespace. --disable-host-loopback keeps the
        host's 127.0.0.1 services out of reach; --enable-sandbox confines slirp4netns itself."""
        if shutil.which(self.slirp4netns) is None:
            raise RuntimeFailure("network=true needs slirp4netns: install Debian's slirp4netns package")
        read_fd, write_fd = os.pipe()
        try:
            with open(bundle / "network.log", "ab") as network_log:
                proc = await asyncio.create_subprocess_exec(
                    self.slirp4netns,
                    "--configure",
                    "--mtu=65520",
                    "--disable-host-loopback",
                    "--enable-sandbox",
                    f"--ready-fd={write_fd}",
                    str(host_pid),
                    "tap0",
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=network_log,
                    stderr=network_log,
                    pass_fds=(write_fd,),
                    start_new_session=True,
                )
            # Recorded before it is ready: a crash while it starts must not leave it running
            # for good (it holds the namespace's tap; teardown kills what network.pid names).
            (bundle / "network.pid").write_text(str(proc.pid))
            os.close(write_fd)
            write_fd = -1
            ready = await asyncio.wait_for(asyncio.to_thread(os.read, read_fd, 1), NETWORK_READY_TIMEOUT)
            if ready != b"1":
                raise RuntimeFailure(
                    f"slirp4netns did not configure the network: "
                    f"{(bundle / 'network.log').read_text(errors='replace')[-500:]}"
                )
        except asyncio.TimeoutError:
            raise RuntimeFailure("slirp4netns did not become ready") from None
        finally:
            os.close(read_fd)
            if write_fd >= 0:
                os.close(write_fd)

    async def destroy(self, sandbox_id: str) -> None:
        bundle = self._bundle(sandbox_id)
        await self._end_processes(sandbox_id)
        await asyncio.to_thread(self.images.unmount, bundle)  # the overlay's upper lives on rw
        rw = bundle / "rw"
        if os.path.ismount(rw):
            code, _ = await run_host_command("umount", str(rw))
            if code != 0:
                await run_host_command("umount", "--lazy", str(rw))
        await asyncio.to_thread(self._remove_bundle, bundle)
        if await self.cgroups.remove(sandbox_id):
            self.uid_ranges.give_back(sandbox_id)  # nothing of it is left: no process, no file

    def _remove_bundle(self, bundle: Path) -> None:
        image = bundle / DISK_IMAGE
        if image.is_file() and not image.is_symlink():
            self.space.discard_image(image)  # unlinked in the background
        shutil.rmtree(bundle, ignore_errors=True)

    async def _stop_init(self, bundle: Path) -> None:
        """Kill the sandbox's init and wait until it is gone, before `runc delete --force`:
        given a running container, runc kills it itself and then sleeps in 100 ms steps
        until it has died, which made every delete take over 100 ms. Killing the whole
        cgroup is left to runc; the pid is only read here, never trusted for a kill: it
        goes through `runc kill`, which checks the container's state first."""
        try:
            pid = int((bundle / "init.pid").read_text().strip())
        except (OSError, ValueError):
            return
        code, _ = await self._runc("kill", bundle.name, "KILL", check=False)
        if code != 0:
            return  # not running (or not there): runc delete copes without sleeping
        loop = asyncio.get_running_loop()
        deadline = loop.time() + INIT_EXIT_WAIT
        while loop.time() < deadline and _is_running(pid):
            await asyncio.sleep(0.002)

    def layers_in_use(self) -> list[str]:
        return self.images.layers_in_use(self.sandboxes_dir)

    async def pack_changes(self, sandbox_id: str, target: Path) -> None:
        upper = self._bundle(sandbox_id) / "rw" / "upper"
        if not os.path.ismount(self._bundle(sandbox_id) / "rootfs") or not upper.is_dir():
            raise InvalidRequest(f"sandbox {sandbox_id} has no image root to snapshot", field="sandbox_id")
        # The changes are at most what its disk holds: that much must fit beside the reserve.
        self.space.admit_write(allocated_bytes(self._bundle(sandbox_id) / DISK_IMAGE), f"the changes of {sandbox_id}")
        base = self.uid_ranges.take(sandbox_id)  # its own range (taken at start): the shift back
        await asyncio.to_thread(self.images.pack_changes, upper, target, base)

    def oom_kills(self, sandbox_id: str) -> int:
        return self.cgroups.oom_kills(sandbox_id)

    async def running(self, sandbox_id: str) -> StartedSandbox | None:
        code, out = await self._runc("state", sandbox_id, check=False)
        if code != 0:
            return None
        try:
            state = json.loads(out)
        except ValueError:
            return None
        if state.get("status") != "running":
            return None
        return StartedSandbox(sandbox_id, self.agent_socket(sandbox_id), int(state.get("pid", 0)))

    async def list_ids(self) -> list[str]:
        ids = {p.name for p in self.sandboxes_dir.iterdir()} if self.sandboxes_dir.is_dir() else set()
        code, out = await self._runc("list", "--format", "json", check=False)
        if code == 0 and out and out != "null":
            try:
                ids.update(entry["id"] for entry in json.loads(out))
            except (ValueError, KeyError, TypeError):
                pass
        return sorted(ids)
