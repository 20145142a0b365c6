"""`workspace serve --nfs`: every running sandbox's /workspace over NFSv4, through a real
userspace client (libnfs-utils) against the server's own nfs-ganesha."""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.reliability.reliability_support import run, sh
from tests.support import nfs_client
from tests.support.live_server import LiveServer, data_root, free_port, start_server, stop_server, workspace_command
from tests.support.nfs4 import Nfs4Client, NfsError

RESTART_WAIT = 30.0


def nfs_server(*flags: str) -> tuple[LiveServer, int]:
    port = free_port()
    server = start_server(
        data_root() / "data", extra=["--pool-size", "1", "--nfs", "--nfs-listen", f"127.0.0.1:{port}", *flags]
    )
    return server, port


def stop_all(server: LiveServer) -> None:
    """Sandboxes outlive servers by design: delete them, then stop the server."""
    try:
        with httpx.Client(base_url=server.url + "/api/v1", timeout=60) as client:
            for item in client.get("/sandboxes").json()["sandboxes"]:
                client.delete(f"/sandboxes/{item['id']}", params={"force": "true"})
    except httpx.HTTPError:
        pass
    stop_server(server)


@pytest.fixture(scope="module")
def nfs_live() -> Iterator[tuple[LiveServer, int]]:
    server, port = nfs_server()
    try:
        yield server, port
    finally:
        stop_all(server)


@pytest.fixture
def nfs_api(nfs_live: tuple[LiveServer, int]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=nfs_live[0].url + "/api/v1", timeout=120) as client:
        yield client


def create(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/sandboxes", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


@pytest.fixture
def exported(nfs_api: httpx.Client) -> Iterator[dict[str, Any]]:
    created = create(nfs_api)
    yield created
    nfs_api.delete(f"/sandboxes/{created['id']}", params={"force": "true"})


def ganesha_pid(data_dir: Path) -> int:
    return int((data_dir / "nfs" / "ganesha.pid").read_text().strip())


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------- nfs_url


def test_nfs_url_names_the_export_while_the_sandbox_runs(
    nfs_live: tuple[LiveServer, int], nfs_api: httpx.Client, exported: dict[str, Any]
) -> None:
    url = f"nfs://127.0.0.1:{nfs_live[1]}/sandboxes/{exported['id']}"
    assert exported["nfs_url"] == url
    assert nfs_api.get(f"/sandboxes/{exported['id']}").json()["nfs_url"] == url
    listed = {s["id"]: s for s in nfs_api.get("/sandboxes").json()["sandboxes"]}
    assert listed[exported["id"]]["nfs_url"] == url
    assert nfs_client.ls(url).ok


def test_the_export_is_gone_after_delete(nfs_api: httpx.Client) -> None:
    created = create(nfs_api)
    url = created["nfs_url"]
    assert nfs_client.ls(url).ok
    assert nfs_api.delete(f"/sandboxes/{created['id']}").status_code == 204
    gone = nfs_client.ls(url)
    assert not gone.ok and "NFS4ERR_NOENT" in gone.output, gone.output


def test_stop_withdraws_the_export_start_and_fork_export_again(nfs_api: httpx.Client) -> None:
    created = create(nfs_api)
    sandbox_id, url = created["id"], created["nfs_url"]
    fork_id = None
    try:
        sh(nfs_api, sandbox_id, "echo kept > /workspace/kept.txt")
        stopped = nfs_api.post(f"/sandboxes/{sandbox_id}/stop").json()
        assert stopped["state"] == "stopped" and stopped["nfs_url"] is None, stopped
        gone = nfs_client.ls(url)
        assert not gone.ok and "NFS4ERR_NOENT" in gone.output, gone.output
        started = nfs_api.post(f"/sandboxes/{sandbox_id}/start").json()
        assert started["state"] == "running" and started["nfs_url"] == url, started
        assert nfs_client.cat(url, "kept.txt").output == "kept\n"
        paused = nfs_api.post(f"/sandboxes/{sandbox_id}/pause").json()
        assert paused["nfs_url"] == url and nfs_client.cat(url, "kept.txt").ok  # the files stay served
        nfs_api.post(f"/sandboxes/{sandbox_id}/resume")
        fork = nfs_api.post(f"/sandboxes/{sandbox_id}/fork", json={})
        assert fork.status_code == 201, fork.text
        fork_id = fork.json()["id"]
        fork_url = fork.json()["nfs_url"]
        assert fork_url and fork_url != url
        assert nfs_client.cat(fork_url, "kept.txt").output == "kept\n"  # a copy of the disk, exported too
        assert nfs_client.cat(url, "kept.txt").ok  # and the source still is
    finally:
        for leftover in (sandbox_id, fork_id):
            if leftover:
                nfs_api.delete(f"/sandboxes/{leftover}", params={"force": "true"})


def test_nfs_url_is_null_when_nfs_is_off(sandbox: dict[str, Any]) -> None:
    assert sandbox["nfs_url"] is None


# ---------------------------------------------------------------------------- data


def test_round_trip_in_both_directions(nfs_api: httpx.Client, exported: dict[str, Any], tmp_path: Path) -> None:
    url, sandbox_id = exported["nfs_url"], exported["id"]
    source = tmp_path / "in.txt"
    source.write_text("written over NFS\n")
    assert nfs_client.put(url, "in.txt", source).ok
    assert sh(nfs_api, sandbox_id, "cat /workspace/in.txt") == "written over NFS\n"  # at once, no sync step

    sh(nfs_api, sandbox_id, "mkdir -p /workspace/out && printf 'written inside\\n' > /workspace/out/file.txt")
    read = nfs_client.cat(url, "out/file.txt")
    assert read.ok and read.output == "written inside\n", read.output
    assert {"in.txt", "out"} <= nfs_client.names(nfs_client.ls(url))


def test_a_large_file_both_ways(nfs_api: httpx.Client, tmp_path: Path) -> None:
    created = create(nfs_api, disk_mb=512)
    try:
        url, sandbox_id = created["nfs_url"], created["id"]
        source = tmp_path / "big.bin"
        with open(source, "wb") as handle:
            for _ in range(96):
                handle.write(os.urandom(1 << 20))
        assert nfs_client.put(url, "big.bin", source).ok
        inside = sh(nfs_api, sandbox_id, "sha256sum /workspace/big.bin").split()[0]
        assert inside == sha256(source)
        back = tmp_path / "back.bin"
        assert nfs_client.get(url, "big.bin", back).ok
        assert sha256(back) == sha256(source) and back.stat().st_size == 96 << 20
    finally:
        nfs_api.delete(f"/sandboxes/{created['id']}", params={"force": "true"})


def test_disk_mb_bounds_what_nfs_writes(nfs_api: httpx.Client, tmp_path: Path) -> None:
    created = create(nfs_api, disk_mb=16)
    try:
        url, sandbox_id = created["nfs_url"], created["id"]
        source = tmp_path / "too-big.bin"
        with open(source, "wb") as handle:
            handle.write(os.urandom(40 << 20))
        refused = nfs_client.put(url, "too-big.bin", source)
        assert not refused.ok, refused.output
        used_kb = int(sh(nfs_api, sandbox_id, "du -sk /workspace").split()[0])
        assert used_kb <= 16 * 1024, used_kb
        # The sandbox still works, and so does NFS once there is room again.
        sh(nfs_api, sandbox_id, "rm -f /workspace/too-big.bin")
        small = tmp_path / "small.txt"
        small.write_text("fits\n")
        assert nfs_client.put(url, "small.txt", small).ok
    finally:
        nfs_api.delete(f"/sandboxes/{created['id']}", params={"force": "true"})


# ---------------------------------------------------------------------------- identity


def test_files_written_over_nfs_belong_to_the_sandbox_user(
    nfs_live: tuple[LiveServer, int], nfs_api: httpx.Client, exported: dict[str, Any]
) -> None:
    url, sandbox_id = exported["nfs_url"], exported["id"]
    other = create(nfs_api)
    try:
        workspace = nfs_live[0].data_dir / "sandboxes" / sandbox_id / "rw" / "workspace"
        other_user = (nfs_live[0].data_dir / "sandboxes" / other["id"] / "rw" / "workspace").stat().st_uid
        # Whatever the client claims: root, the sandbox's own host uid, another sandbox's.
        for name, uid in (("as-root", 0), ("as-self", workspace.stat().st_uid), ("as-other", other_user)):
            client, export = Nfs4Client.for_url(url, uid=uid, gid=uid)
            with client:
                client.write_file(f"{export}/{name}", b"x")
                attrs = client.stat(f"{export}/{name}")
            assert attrs.owner == str(workspace.stat().st_uid) == attrs.group, (name, attrs)
            inside = sh(nfs_api, sandbox_id, f"stat -c %u:%g /workspace/{name}").strip()
            assert inside == "1000:1000", (name, inside)
        host_uid = workspace.stat().st_uid
        assert (host_uid - 100000) % 65536 == 1000 and host_uid != other_user, host_uid
    finally:
        nfs_api.delete(f"/sandboxes/{other['id']}", params={"force": "true"})


def test_an_nfs_client_cannot_act_as_sandbox_root(nfs_api: httpx.Client, exported: dict[str, Any]) -> None:
    url, sandbox_id = exported["nfs_url"], exported["id"]
    for script in (
        "echo root-secret > /workspace/secret && chmod 600 /workspace/secret",
        "mkdir /workspace/locked && chmod 700 /workspace/locked",
    ):
        result = run(nfs_api, sandbox_id, "sh", "-c", script, user="root")
        assert result["exit_code"] == 0, result
    client, export = Nfs4Client.for_url(url, uid=0, gid=0)
    with client:
        for attempt in (
            lambda: client.read_bytes(f"{export}/secret"),
            lambda: client.write_file(f"{export}/locked/x", b"x"),
        ):
            with pytest.raises(NfsError) as denied:
                attempt()
            assert denied.value.name == "NFS4ERR_ACCESS"
        client.write_file(f"{export}/mine", b"x")
        owner = client.stat(f"{export}/mine").owner
        for target in ("0", str(int(owner) + 65536)):  # root; the next sandbox's user
            # Ganesha squashes the new owner too (so the chown is a no-op), or refuses it.
            with contextlib.suppress(NfsError):
                client.chown(f"{export}/mine", target)
            assert client.stat(f"{export}/mine").owner == owner
    assert sh(nfs_api, sandbox_id, "stat -c %u /workspace/mine").strip() == "1000"
    denied_cat = nfs_client.cat(url, "secret")
    assert not denied_cat.ok and "root-secret" not in denied_cat.output


# ---------------------------------------------------------------------------- confinement


def test_symlinks_made_inside_the_sandbox_do_not_leave_its_workspace(
    nfs_api: httpx.Client, exported: dict[str, Any]
) -> None:
    url, sandbox_id = exported["nfs_url"], exported["id"]
    sh(
        nfs_api,
        sandbox_id,
        "cd /workspace && echo mine > own.txt && ln -s / root && ln -s /etc/passwd passwd"
        " && ln -s ../../../../../../../etc/passwd up && ln -s .. parent",
    )
    host_passwd = Path("/etc/passwd").read_text()
    for name in ("passwd", "up", "root/etc/passwd", "parent/etc/passwd"):
        read = nfs_client.cat(url, name)
        assert not read.ok and "root:x:0:0" not in read.output, (name, read.output)
        assert host_passwd not in read.output
    # A link to / resolves to the export's own root: the sandbox's files, nothing else.
    assert nfs_client.names(nfs_client.ls(url, "root")) == nfs_client.names(nfs_client.ls(url))


def test_the_server_never_follows_a_symlink(nfs_api: httpx.Client, exported: dict[str, Any]) -> None:
    """What a hostile client sends, not what a friendly one resolves: OPEN and LOOKUP of the
    links themselves. The server hands back the link's text and nothing behind it."""
    url, sandbox_id = exported["nfs_url"], exported["id"]
    sh(nfs_api, sandbox_id, "cd /workspace && ln -s /etc/passwd passwd && ln -s / root && ln -s .. up")
    client, export = Nfs4Client.for_url(url)
    with client:
        with pytest.raises(NfsError) as opened:
            client.read_bytes(f"{export}/passwd")
        assert opened.value.name in ("NFS4ERR_SYMLINK", "NFS4ERR_INVAL"), opened.value.name
        assert client.readlink(f"{export}/passwd") == "/etc/passwd"
        for link in ("root", "up"):
            assert client.stat(f"{export}/{link}").type == "symlink"
            with pytest.raises(NfsError) as through:  # a link is not a directory to walk through
                client.listdir(f"{export}/{link}")
            assert through.value.name in ("NFS4ERR_NOTDIR", "NFS4ERR_SYMLINK"), through.value.name


def test_above_the_export_is_only_the_pseudo_root(exported: dict[str, Any]) -> None:
    url = exported["nfs_url"]
    for path in ("../../etc/passwd", "../../../etc/passwd", "../etc/passwd"):
        read = nfs_client.cat(url, path)
        assert not read.ok and "root:x:0:0" not in read.output, (path, read.output)
    client, export = Nfs4Client.for_url(url)
    with client:
        parent = client.listdir(f"{export}/..")  # LOOKUPP: ganesha's pseudo directory
        assert exported["id"] in parent and all(name.startswith("sbx-") for name in parent), parent
        assert client.listdir(f"{export}/../..") == ["sandboxes"]
        with pytest.raises(NfsError) as top:
            client.listdir(f"{export}/../../..")
        assert top.value.name == "NFS4ERR_NOENT"
        with pytest.raises(NfsError) as readonly:
            client.mkdir(f"{export}/../planted")
        assert readonly.value.name in ("NFS4ERR_ROFS", "NFS4ERR_ACCESS", "NFS4ERR_PERM"), readonly.value.name


def test_a_symlink_to_another_sandbox_stays_in_its_own_export(
    nfs_live: tuple[LiveServer, int], nfs_api: httpx.Client, exported: dict[str, Any]
) -> None:
    other = create(nfs_api)
    try:
        sh(nfs_api, other["id"], "echo other-secret > /workspace/secret.txt")
        other_host = nfs_live[0].data_dir / "sandboxes" / other["id"] / "rw" / "workspace"
        sh(
            nfs_api,
            exported["id"],
            f"cd /workspace && ln -s /sandboxes/{other['id']}/secret.txt export-link"
            f" && ln -s ../{other['id']}/secret.txt sibling-link && ln -s {other_host}/secret.txt host-link",
        )
        for name in ("export-link", "sibling-link", "host-link"):
            read = nfs_client.cat(exported["nfs_url"], name)
            assert not read.ok and "other-secret" not in read.output, (name, read.output)
    finally:
        nfs_api.delete(f"/sandboxes/{other['id']}", params={"force": "true"})


def test_clients_outside_the_allowed_ranges_are_refused() -> None:
    server, port = nfs_server("--nfs-clients", "192.0.2.0/24")  # TEST-NET-1: not us
    try:
        with httpx.Client(base_url=server.url + "/api/v1", timeout=60) as client:
            created = create(client)
            assert created["nfs_url"] == f"nfs://127.0.0.1:{port}/sandboxes/{created['id']}"
            refused = nfs_client.ls(created["nfs_url"])
            assert not refused.ok and "NFS4ERR_ACCESS" in refused.output, refused.output
    finally:
        stop_all(server)


def test_nfs_beyond_loopback_needs_an_explicit_client_range(tmp_path: Path) -> None:
    command = [*workspace_command(), "serve", "--port", "1", "--data-dir", str(tmp_path), "--nfs"]
    refused = subprocess.run(
        [*command, "--nfs-listen", "0.0.0.0:2049"], capture_output=True, text=True, timeout=60, check=False
    )
    assert refused.returncode == 2 and "without --nfs-clients" in refused.stderr, refused.stderr
    for bad in (["--nfs-listen", "localhost:2049"], ["--nfs-clients", "10.0.0.1/8"]):
        rejected = subprocess.run([*command, *bad], capture_output=True, text=True, timeout=60, check=False)
        assert rejected.returncode == 2 and "error: --nfs" in rejected.stderr, rejected.stderr


# ---------------------------------------------------------------------------- supervision


def wait_until_served(url: str) -> None:
    deadline = time.monotonic() + RESTART_WAIT
    while time.monotonic() < deadline:
        if nfs_client.ls(url).ok:
            return
        time.sleep(0.1)
    raise AssertionError(f"{url} was not served again within {RESTART_WAIT} s")


def test_ganesha_killed_is_restarted_with_every_export(
    nfs_live: tuple[LiveServer, int], nfs_api: httpx.Client, exported: dict[str, Any], tmp_path: Path
) -> None:
    data_dir = nfs_live[0].data_dir
    before = ganesha_pid(data_dir)
    os.kill(before, signal.SIGKILL)
    wait_until_served(exported["nfs_url"])
    assert ganesha_pid(data_dir) != before
    assert "nfs: ganesha.nfsd exited" in nfs_live[0].log()
    source = tmp_path / "after.txt"
    source.write_text("after the restart\n")
    assert nfs_client.put(exported["nfs_url"], "after.txt", source).ok
    assert sh(nfs_api, exported["id"], "cat /workspace/after.txt") == "after the restart\n"
    # And sandboxes made after the restart are exported too.
    later = create(nfs_api)
    try:
        assert nfs_client.ls(later["nfs_url"]).ok
    finally:
        nfs_api.delete(f"/sandboxes/{later['id']}", params={"force": "true"})


def test_exports_come_back_after_a_server_restart(tmp_path: Path) -> None:
    server, port = nfs_server()
    try:
        with httpx.Client(base_url=server.url + "/api/v1", timeout=60) as client:
            created = create(client)
            sh(client, created["id"], "echo kept > /workspace/kept.txt")
        stop_server(server)
        gone = nfs_client.ls(created["nfs_url"])
        assert not gone.ok, "ganesha must stop with the server"
        assert not (server.data_dir / "nfs" / "ganesha.pid").exists()
        server = start_server(server.data_dir, extra=["--pool-size", "1", "--nfs", "--nfs-listen", f"127.0.0.1:{port}"])
        with httpx.Client(base_url=server.url + "/api/v1", timeout=60) as client:
            again = client.get(f"/sandboxes/{created['id']}").json()
            assert again["state"] == "running" and again["nfs_url"] == created["nfs_url"]
        read = nfs_client.cat(created["nfs_url"], "kept.txt")
        assert read.ok and read.output == "kept\n", read.output
    finally:
        stop_all(server)


def test_a_killed_server_leaves_no_ganesha_behind_for_the_next_one() -> None:
    server, port = nfs_server()
    try:
        stale = ganesha_pid(server.data_dir)
        stop_server(server, signal.SIGKILL)  # no shutdown: ganesha and its D-Bus outlive it
        assert Path(f"/proc/{stale}").exists()
        server = start_server(server.data_dir, extra=["--pool-size", "1", "--nfs", "--nfs-listen", f"127.0.0.1:{port}"])
        assert ganesha_pid(server.data_dir) != stale
        with httpx.Client(base_url=server.url + "/api/v1", timeout=60) as client:
            assert nfs_client.ls(create(client)["nfs_url"]).ok
    finally:
        stop_all(server)


# ---------------------------------------------------------------------------- kernel client


def kernel_mount_unavailable() -> str | None:
    try:
        filesystems = Path("/proc/filesystems").read_text()
    except OSError:
        return "no /proc/filesystems"
    if "nfs4" not in filesystems:
        return "this kernel has no NFSv4 client (nfs4 is not in /proc/filesystems)"
    if subprocess.run(["which", "mount.nfs4"], capture_output=True, check=False).returncode != 0:
        return "mount.nfs4 (Debian's nfs-common) is not installed"
    return None


@pytest.mark.skipif(kernel_mount_unavailable() is not None, reason=str(kernel_mount_unavailable()))
def test_the_kernel_client_mounts_the_export(
    nfs_live: tuple[LiveServer, int], nfs_api: httpx.Client, exported: dict[str, Any], tmp_path: Path
) -> None:
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    export_path = f"/sandboxes/{exported['id']}"
    subprocess.run(
        ["mount", "-t", "nfs4", "-o", f"port={nfs_live[1]},vers=4.1", f"127.0.0.1:{export_path}", str(mountpoint)],
        check=True,
        timeout=60,
    )
    try:
        (mountpoint / "kernel.txt").write_text("through the kernel\n")
        assert sh(nfs_api, exported["id"], "cat /workspace/kernel.txt") == "through the kernel\n"
        assert sh(nfs_api, exported["id"], "stat -c %u /workspace/kernel.txt").strip() == "1000"
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False, timeout=60)
