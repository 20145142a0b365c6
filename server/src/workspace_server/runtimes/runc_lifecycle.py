"""The runc runtime's lifecycle operations beyond start and destroy: pause and resume
(runtimes/freezer.py), stop and a start on the kept disk, and the disk copy of a fork
(runtimes/disk_copy.py). Mixed into RuncRuntime, whose helpers it uses."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
from pathlib import Path

from workspace_server.domain.errors import RuntimeFailure
from workspace_server.runtimes import disk_copy, freezer, uid_ranges
from workspace_server.runtimes.base import WorkloadSample
from workspace_server.runtimes.cgroups import SandboxCgroups
from workspace_server.runtimes.host_commands import run_host_command
from workspace_server.runtimes.image_mounts import ImageMounts
from workspace_server.store.disk_space import DataDirSpace

log = logging.getLogger(__name__)

DISK_IMAGE = "disk.img"
UMOUNT_ATTEMPTS = 40
INIT_EXIT_WAIT = 2.0
MOUNT_ATTEMPTS = 40


_libc = ctypes.CDLL(None, use_errno=True)


def unmount(target: Path) -> str:
    """umount(2) itself, not the umount program (a process start): "" or the error. The
    loop device goes with it (mount sets it to clear itself on the last unmount)."""
    if _libc.umount2(os.fsencode(target), 0) == 0:
        return ""
    return os.strerror(ctypes.get_errno())


class RuncLifecycle:
    uid_ranges: uid_ranges.UidRanges
    space: DataDirSpace
    images: ImageMounts
    cgroups: SandboxCgroups

    # ---- provided by RuncRuntime
    def _bundle(self, sandbox_id: str) -> Path:
        raise NotImplementedError

    async def _runc(self, *args: str, check: bool = True) -> tuple[int, str]:
        raise NotImplementedError

    async def _stop_init(self, bundle: Path) -> None:
        raise NotImplementedError

    async def destroy(self, sandbox_id: str) -> None:
        raise NotImplementedError

    # ---- lifecycle
    @staticmethod
    async def _mount_image(image: Path, mountpoint: Path) -> None:
        if os.path.ismount(mountpoint):
            return  # still mounted from before (a stop cut short by a crash): never twice
        if not image.is_file():
            raise RuntimeFailure(f"the sandbox's disk {image.name} is missing")
        for _ in range(MOUNT_ATTEMPTS):
            code, out = await run_host_command("mount", "-o", "loop,nosuid,nodev", str(image), str(mountpoint))
            if code == 0:
                return
            # Right after an unmount the kernel may still be releasing the image's previous
            # loop device (that runs in the background): mount refuses the image meanwhile.
            await asyncio.sleep(0.05)
        raise RuntimeFailure(f"could not mount the sandbox's disk: {out}")

    async def _end_processes(self, sandbox_id: str) -> None:
        """The network helper, then init and every process of the sandbox (runc delete)."""
        bundle = self._bundle(sandbox_id)
        network_pid = bundle / "network.pid"
        if network_pid.exists():
            with contextlib.suppress(ValueError, OSError):
                os.kill(int(network_pid.read_text()), signal.SIGKILL)
        with contextlib.suppress(RuntimeFailure):
            await self.thaw(sandbox_id)  # frozen processes cannot die
        if not await self._kill_init(sandbox_id):
            await self._stop_init(bundle)
        code, out = await self._runc("delete", "--force", sandbox_id, check=False)
        if code != 0 and "does not exist" not in out and "not exist" not in out:
            log.warning("runc delete %s: %s", sandbox_id, out)

    async def _kill_init(self, sandbox_id: str) -> bool:
        """SIGKILL the sandbox's init (the pid namespace's other processes die with it) and
        wait until it has exited, without a `runc kill` (a Go program's start, ~15 ms).
        Through a pidfd taken before the check that the pid is in this sandbox's cgroup,
        so a reused pid is never signalled. False if this could not be done (then
        `runc kill` is used)."""
        pid = self._init_pid(sandbox_id)
        if pid <= 0:
            return False
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            return False
        try:
            try:
                cgroups = Path(f"/proc/{pid}/cgroup").read_text()
            except OSError:
                return False
            if f"/{sandbox_id}" not in cgroups:
                return False
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            loop = asyncio.get_running_loop()
            exited: asyncio.Future[None] = loop.create_future()

            def readable() -> None:  # a pidfd is readable once its process exited
                if not exited.done():
                    exited.set_result(None)

            loop.add_reader(pidfd, readable)
            try:
                await asyncio.wait_for(exited, INIT_EXIT_WAIT)
            except TimeoutError:
                return False
            finally:
                loop.remove_reader(pidfd)
            return True
        except OSError:
            return False
        finally:
            os.close(pidfd)

    def _freezer(self, sandbox_id: str) -> Path:
        return self.cgroups.directory(freezer.CONTROLLER, sandbox_id)

    def _init_pid(self, sandbox_id: str) -> int:
        try:
            return int((self._bundle(sandbox_id) / "init.pid").read_text().strip())
        except (OSError, ValueError):
            return 0

    async def freeze(self, sandbox_id: str) -> None:
        if not freezer.available():
            raise RuntimeFailure("pausing needs the cgroup v1 freezer, which this host does not have")
        cgroup = self._freezer(sandbox_id)
        if freezer.freeze(cgroup, self._init_pid(sandbox_id)):  # inline: microseconds of cgroupfs writes
            return
        # A process in uninterruptible sleep (disk or network I/O) freezes once it wakes.
        deadline = asyncio.get_running_loop().time() + freezer.SETTLE_SECONDS
        while not freezer.settled(cgroup) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.001)

    async def thaw(self, sandbox_id: str) -> None:
        await disk_copy.thaw_file_system(self._bundle(sandbox_id) / "rw")
        freezer.thaw(self._freezer(sandbox_id))

    def frozen(self, sandbox_id: str) -> bool:
        return freezer.is_frozen(self._freezer(sandbox_id))

    def workload_sample(self, sandbox_id: str) -> WorkloadSample | None:
        return freezer.workload_sample(self._freezer(sandbox_id), self._init_pid(sandbox_id))

    def has_disk(self, sandbox_id: str) -> bool:
        bundle = self._bundle(sandbox_id)
        return (bundle / DISK_IMAGE).is_file() and (bundle / "config.json").is_file()

    async def stop(self, sandbox_id: str) -> None:
        """Everything goes but the bundle's disk image and config.json (which holds the uid
        range: the files on the disk belong to it, so the range stays this sandbox's)."""
        bundle = self._bundle(sandbox_id)
        await self._end_processes(sandbox_id)
        await asyncio.to_thread(self.images.unmount, bundle)  # an image's overlay: its upper lives on rw
        rw = bundle / "rw"
        error = ""
        for _ in range(UMOUNT_ATTEMPTS):
            if not os.path.ismount(rw):
                break
            error = await asyncio.to_thread(unmount, rw)  # flushes the disk's dirty pages
            if error:
                await asyncio.sleep(0.05)
        if os.path.ismount(rw):
            # Never lazily: a later start would mount the image a second time, and two
            # mounts of one ext4 image corrupt it.
            raise RuntimeFailure(f"could not unmount the sandbox's disk: {error}")
        for name in ("init.pid", "network.pid"):
            (bundle / name).unlink(missing_ok=True)
        if not await self.cgroups.remove(sandbox_id):
            raise RuntimeFailure("some of the sandbox's processes would not die")

    async def copy_disk(self, source_id: str, target_id: str) -> None:
        source, target = self._bundle(source_id), self._bundle(target_id)
        fork_disk = "the fork's copy of the disk"
        self.space.check((source / DISK_IMAGE).stat().st_size, fork_disk)  # before any work
        old_base = self.uid_ranges.take(source_id)
        target.mkdir()
        (target / "rw").mkdir()
        try:
            new_base = self.uid_ranges.take(target_id)
            await disk_copy.copy_image(source / DISK_IMAGE, source / "rw", target / DISK_IMAGE)
            await asyncio.to_thread(self.space.allocate_image, target / DISK_IMAGE, None, fork_disk)
            await self._mount_image(target / DISK_IMAGE, target / "rw")
            try:
                await asyncio.to_thread(
                    disk_copy.shift_owners, target / "rw", old_base, new_base, uid_ranges.RANGE_SIZE
                )
            finally:
                code, out = await run_host_command("umount", str(target / "rw"))
                if code != 0:
                    raise RuntimeFailure(f"could not unmount the fork's disk: {out}")
        except BaseException:
            await asyncio.shield(self.destroy(target_id))
            raise
