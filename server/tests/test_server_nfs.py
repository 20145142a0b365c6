"""nfs/: flag parsing, ganesha's configuration, and keeping exports in step with ganesha
(over a stand-in for the ganesha process; the real one is in tests/e2e/server/test_nfs.py)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from workspace_server.domain.errors import RuntimeFailure
from workspace_server.nfs import exports as exports_module
from workspace_server.nfs.exports import NfsExports
from workspace_server.nfs.ganesha import ExportRejected
from workspace_server.nfs.ganesha_config import Export, export_block, quoted, server_config
from workspace_server.nfs.settings import (
    LOOPBACK_CLIENTS,
    NfsSettings,
    check_exposure,
    parse_clients,
    parse_listen,
)
from workspace_server.runtimes.base import HostWorkspace

# ---------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:2049", ("127.0.0.1", 2049)), ("0.0.0.0:12049", ("0.0.0.0", 12049)), ("[::1]:2049", ("::1", 2049))],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["2049", "localhost:2049", "127.0.0.1:0", "127.0.0.1:70000", "127.0.0.1:x", ":2049"])
def test_parse_listen_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(text)


def test_parse_clients_accepts_repeats_and_commas() -> None:
    assert parse_clients(["10.0.0.0/24, 192.168.1.7", "fd00::/64"]) == (
        ipaddress.ip_network("10.0.0.0/24"),
        ipaddress.ip_network("192.168.1.7/32"),
        ipaddress.ip_network("fd00::/64"),
    )
    for bad in (["10.0.0.1/8"], ["example.com"], ["10.0.0.0/33"]):
        with pytest.raises(ValueError):
            parse_clients(bad)


def test_beyond_loopback_needs_explicit_clients() -> None:
    check_exposure("127.0.0.1", ())
    check_exposure("0.0.0.0", parse_clients(["10.0.0.0/24"]))
    for host in ("0.0.0.0", "10.0.0.5", "::"):
        with pytest.raises(ValueError, match="without --nfs-clients"):
            check_exposure(host, ())


def test_url() -> None:
    assert NfsSettings("127.0.0.1", 2049).url("/sandboxes/sbx-1") == "nfs://127.0.0.1:2049/sandboxes/sbx-1"
    assert NfsSettings("::1", 2049).url("/x") == "nfs://[::1]:2049/x"
    assert not NfsSettings("0.0.0.0", 2049).url("/x").startswith("nfs://0.0.0.0")


# ---------------------------------------------------------------------------- ganesha's configuration


def test_export_block_squashes_everything_to_the_sandbox_user() -> None:
    block = export_block(
        Export(7, "sbx-1", Path("/data/sandboxes/sbx-1/rw/workspace"), 101000, 101000), LOOPBACK_CLIENTS
    )
    assert "Export_Id = 7;" in block and 'Pseudo = "/sandboxes/sbx-1";' in block
    assert "Squash = All_Squash;" in block and "Anonymous_Uid = 101000;" in block and "Anonymous_Gid = 101000;" in block
    # Nobody but the listed clients: the export's own access is None, the CLIENT block grants RW.
    assert "  Access_Type = None;" in block and "Clients = 127.0.0.0/8, ::1; Access_Type = RW;" in block
    assert "Protocols = 4;" in block and "SecType = sys;" in block


def test_server_config_is_nfsv4_only_without_grace_and_lists_exports() -> None:
    export = Export(1, "sbx-1", Path("/w"), 101000, 101000)
    config = server_config(NfsSettings("127.0.0.1", 12049), Path("/data/nfs/recovery"), [export])
    for line in (
        "Protocols = 4;",
        "NFS_Port = 12049;",
        "Bind_Addr = 127.0.0.1;",
        "Enable_NLM = false;",
        "Enable_RQUOTA = false;",
        "Enable_UDP = false;",
        "Graceless = true;",
        "Access_Type = MDONLY_RO;",
    ):
        assert line in config, line
    assert config.count("EXPORT {") == 2  # the pseudo root and the sandbox


@pytest.mark.parametrize("value", ['a"b', "a\nb", "a;b", "a}b", "a#b"])
def test_values_that_could_break_out_of_the_configuration_are_refused(value: str) -> None:
    with pytest.raises(ValueError):
        quoted(value)


# ---------------------------------------------------------------------------- keeping exports in step


class FakeGanesha:
    """Records what NfsExports asks of ganesha."""

    instances: list[FakeGanesha] = []

    def __init__(self, state_dir: Path, *_: Any) -> None:
        self.config = ""
        self.exports: dict[int, str] = {}
        self.calls: list[str] = []
        self.reject: set[int] = set()
        self.dead = False
        FakeGanesha.instances.append(self)

    @property
    def ganesha_pid(self) -> int:
        return 1

    async def start(self, config: str, port: int) -> None:
        self.config = config

    async def add_export(self, config_file: Path, export_id: int) -> None:
        if self.dead:
            raise RuntimeFailure("no answer on ganesha's D-Bus")
        if export_id in self.reject:
            raise ExportRejected("refused")
        self.calls.append(f"add {export_id}")
        self.exports[export_id] = config_file.read_text()

    async def remove_export(self, export_id: int) -> None:
        self.calls.append(f"remove {export_id}")
        self.exports.pop(export_id, None)

    async def wait(self) -> str:
        import asyncio

        await asyncio.Event().wait()
        return ""

    async def stop(self) -> None:
        self.calls.append("stop")


@pytest.fixture
def fake_ganesha(monkeypatch: pytest.MonkeyPatch) -> type[FakeGanesha]:
    FakeGanesha.instances = []
    monkeypatch.setattr(exports_module, "GaneshaProcess", FakeGanesha)
    return FakeGanesha


def locate(sandbox_id: str) -> HostWorkspace | None:
    if sandbox_id == "sbx-elsewhere":
        return None
    return HostWorkspace(Path(f"/data/sandboxes/{sandbox_id}/rw/workspace"), 101000, 101000)


async def test_exports_follow_sandboxes(fake_ganesha: type[FakeGanesha], tmp_path: Path) -> None:
    nfs = NfsExports(NfsSettings("127.0.0.1", 12049), tmp_path / "nfs", locate)
    await nfs.start()
    try:
        ganesha = fake_ganesha.instances[0]
        await nfs.export("sbx-a")
        await nfs.export("sbx-a")  # idempotent
        await nfs.export("sbx-b")
        assert ganesha.calls == ["add 1", "add 2"]
        assert "Anonymous_Uid = 101000;" in ganesha.exports[1]
        assert nfs.url("sbx-a") == "nfs://127.0.0.1:12049/sandboxes/sbx-a"
        await nfs.withdraw("sbx-a")
        await nfs.withdraw("sbx-a")
        assert ganesha.calls[-1] == "remove 1" and nfs.url("sbx-a") is None
        await nfs.export("sbx-c")  # the freed id is used again
        assert ganesha.calls[-1] == "add 1"
        assert not list((tmp_path / "nfs" / "exports").iterdir())  # the per-export files are gone
        await nfs.export("sbx-elsewhere")  # no workspace on this host: never exported
        assert nfs.url("sbx-elsewhere") is None
        assert (tmp_path / "nfs").stat().st_mode & 0o077 == 0  # the D-Bus socket's dir: root only
    finally:
        await nfs.close()
    assert ganesha.calls[-1] == "stop"


async def test_a_rejected_export_has_no_url(fake_ganesha: type[FakeGanesha], tmp_path: Path) -> None:
    nfs = NfsExports(NfsSettings("127.0.0.1", 12049), tmp_path / "nfs", locate)
    await nfs.start()
    try:
        fake_ganesha.instances[0].reject.add(1)
        await nfs.export("sbx-a")
        assert nfs.url("sbx-a") is None
    finally:
        await nfs.close()


async def test_exports_wanted_while_ganesha_is_down_are_in_its_next_configuration(
    fake_ganesha: type[FakeGanesha], tmp_path: Path
) -> None:
    nfs = NfsExports(NfsSettings("127.0.0.1", 12049), tmp_path / "nfs", locate)
    await nfs.start()
    try:
        await nfs.export("sbx-a")
        fake_ganesha.instances[0].dead = True  # died: the call fails, the export stays wanted
        await nfs.export("sbx-b")
        assert nfs.url("sbx-b") is not None
        await nfs._launch()  # what the supervisor does after a death
        config = fake_ganesha.instances[1].config
        assert 'Pseudo = "/sandboxes/sbx-a";' in config and 'Pseudo = "/sandboxes/sbx-b";' in config
    finally:
        await nfs.close()
