"""The nfs-ganesha daemon and the private D-Bus it is managed over.

Ganesha adds and removes exports at run time only over D-Bus (org.ganesha.nfsd.exportmgr);
SIGHUP re-reads every export but answers nothing, so a caller could not know when its export
is there. The host may have no system bus (containers rarely do), and ganesha's requests
should not mix with the host's anyway: each server runs a dbus-daemon of its own whose socket
sits in a root-only directory, and ganesha finds it through DBUS_SYSTEM_BUS_ADDRESS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from pathlib import Path

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from workspace_server.domain.errors import RuntimeFailure

log = logging.getLogger(__name__)

GANESHA_NAME = "org.ganesha.nfsd"
EXPORT_MANAGER_PATH = "/org/ganesha/nfsd/ExportMgr"
EXPORT_MANAGER = "org.ganesha.nfsd.exportmgr"
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
LOG_KEEP_BYTES = 16 * 1024 * 1024

DBUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <deny own="*"/>
    <deny send_type="method_call"/>
  </policy>
  <policy user="root">
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""


class ExportRejected(RuntimeFailure):
    pass


class GaneshaProcess:
    """One run of dbus-daemon + ganesha.nfsd (the supervisor makes a new one per restart)."""

    def __init__(self, state_dir: Path, ganesha: str = "ganesha.nfsd", dbus_daemon: str = "dbus-daemon") -> None:
        self.state_dir = state_dir
        self.ganesha_binary = ganesha
        self.dbus_binary = dbus_daemon
        self.socket = state_dir / "dbus.sock"
        self.config_path = state_dir / "ganesha.conf"
        self.log_path = state_dir / "ganesha.log"
        self._dbus: asyncio.subprocess.Process | None = None
        self._ganesha: asyncio.subprocess.Process | None = None
        self._bus: MessageBus | None = None

    @property
    def ganesha_pid(self) -> int | None:
        return self._ganesha.pid if self._ganesha else None

    async def start(self, config: str, port: int) -> None:
        """Start both daemons with `config` and return once ganesha serves NFS and D-Bus."""
        kill_stale(self.state_dir)
        self.config_path.write_text(config)
        self.socket.unlink(missing_ok=True)
        (self.state_dir / "dbus.conf").write_text(DBUS_CONFIG.format(socket=self.socket))
        _trim(self.log_path)
        try:
            self._dbus = await _spawn(
                [self.dbus_binary, "--nofork", "--nopidfile", f"--config-file={self.state_dir / 'dbus.conf'}"],
                self.state_dir / "dbus.log",
            )
            (self.state_dir / "dbus.pid").write_text(str(self._dbus.pid))
            self._bus = await self._connect()
            self._ganesha = await _spawn(
                [
                    self.ganesha_binary,
                    "-F",
                    "-f",
                    str(self.config_path),
                    "-L",
                    str(self.log_path),
                    "-p",
                    str(self.state_dir / "ganesha.pid"),
                ],
                self.state_dir / "ganesha.out",
                env={
                    "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={self.socket}",
                    "BLKID_FILE": str(self.state_dir / "blkid.tab"),
                },
            )
            await self._wait_ready(port)
        except BaseException:
            await asyncio.shield(self.stop())
            raise

    async def _connect(self) -> MessageBus:
        deadline = asyncio.get_running_loop().time() + READY_TIMEOUT
        while True:
            try:
                return await MessageBus(bus_address=f"unix:path={self.socket}").connect()
            except OSError:
                if asyncio.get_running_loop().time() > deadline or self._exited(self._dbus):
                    raise RuntimeFailure(f"dbus-daemon did not start: {self._tail('dbus.log')}") from None
                await asyncio.sleep(0.01)

    async def _wait_ready(self, port: int) -> None:
        deadline = asyncio.get_running_loop().time() + READY_TIMEOUT
        while asyncio.get_running_loop().time() < deadline:
            if self._exited(self._ganesha):
                break
            if await self._name_owned() and await _accepts("127.0.0.1", port, self._config_bind()):
                return
            await asyncio.sleep(0.02)
        raise RuntimeFailure(f"nfs-ganesha did not start: {self._tail('ganesha.log')} {self._tail('ganesha.out')}")

    def _config_bind(self) -> str | None:
        for line in self.config_path.read_text().splitlines():
            key, _, value = line.strip().partition("=")
            if key.strip() == "Bind_Addr":
                return value.strip().rstrip(";").strip()
        return None

    async def _name_owned(self) -> bool:
        reply = await self._call(
            "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "NameHasOwner", "s", [GANESHA_NAME]
        )
        return reply.message_type == MessageType.METHOD_RETURN and bool(reply.body and reply.body[0])

    async def _call(
        self, destination: str, path: str, interface: str, member: str, signature: str, body: list[object]
    ) -> Message:
        if self._bus is None:
            raise RuntimeFailure("nfs-ganesha is not running")
        try:
            reply = await self._bus.call(
                Message(
                    destination=destination,
                    path=path,
                    interface=interface,
                    member=member,
                    signature=signature,
                    body=body,
                )
            )
        except Exception as exc:  # the bus went away (the daemons died): the supervisor restarts them
            raise RuntimeFailure(f"ganesha's D-Bus failed: {exc!r}") from exc
        if reply is None:
            raise RuntimeFailure("no answer on ganesha's D-Bus")
        return reply

    async def add_export(self, config_file: Path, export_id: int) -> None:
        reply = await self._call(
            GANESHA_NAME,
            EXPORT_MANAGER_PATH,
            EXPORT_MANAGER,
            "AddExport",
            "ss",
            [str(config_file), f"EXPORT(Export_Id={export_id})"],
        )
        if reply.message_type == MessageType.ERROR:
            raise ExportRejected(f"ganesha refused export {export_id}: {reply.error_name}: {reply.body}")

    async def remove_export(self, export_id: int) -> None:
        reply = await self._call(GANESHA_NAME, EXPORT_MANAGER_PATH, EXPORT_MANAGER, "RemoveExport", "q", [export_id])
        if reply.message_type == MessageType.ERROR and "not found" not in str(reply.body):
            raise ExportRejected(f"ganesha could not remove export {export_id}: {reply.error_name}: {reply.body}")

    async def wait(self) -> str:
        """Until either daemon exits; says which and how."""
        waits = {
            asyncio.ensure_future(p.wait()): name
            for p, name in ((self._ganesha, "ganesha.nfsd"), (self._dbus, "dbus-daemon"))
            if p
        }
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        first = next(iter(done))
        return f"{waits[first]} exited with status {first.result()}"

    async def stop(self) -> None:
        if self._bus is not None:
            self._bus.disconnect()
            self._bus = None
        for process in (self._ganesha, self._dbus):
            if process is not None and process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    await process.wait()
        self._ganesha = self._dbus = None
        for name in ("ganesha.pid", "dbus.pid"):
            (self.state_dir / name).unlink(missing_ok=True)

    @staticmethod
    def _exited(process: asyncio.subprocess.Process | None) -> bool:
        return process is None or process.returncode is not None

    def _tail(self, name: str) -> str:
        """The end of a log (read from its end: the log itself may be large)."""
        try:
            with open(self.state_dir / name, "rb") as log:
                log.seek(max(0, log.seek(0, 2) - 1500))
                return log.read(1500).decode(errors="replace").strip()
        except OSError:
            return ""


async def _spawn(argv: list[str], output: Path, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    with open(output, "ab") as sink:
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=sink,
            stderr=sink,
            env={"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), **(env or {})},
            start_new_session=True,  # our signals only: a terminal's Ctrl-C goes to the server
        )


async def _accepts(default_host: str, port: int, bind: str | None) -> bool:
    host = default_host if bind in (None, "0.0.0.0", "::") else bind
    try:
        _, writer = await asyncio.open_connection(host, port)
    except OSError:
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


def _trim(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.stat().st_size > LOG_KEEP_BYTES:
            path.replace(path.with_suffix(".log.1"))


def kill_stale(state_dir: Path) -> None:
    """Daemons left by a server that was killed (SIGKILL, a crash) still hold the port and the
    sandboxes' disks: end them, recognising them by their pid file and command line."""
    for name in ("ganesha.pid", "dbus.pid"):
        pid_file = state_dir / name
        try:
            pid = int(pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            pid_file.unlink(missing_ok=True)
            continue
        if str(state_dir).encode() in cmdline:
            log.warning("stopping a %s left by an earlier server (pid %d)", name.split(".")[0], pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            for _ in range(500):
                if _zombie(pid):
                    break
                time.sleep(0.01)
        pid_file.unlink(missing_ok=True)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except (OSError, IndexError):
        return True
