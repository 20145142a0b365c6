"""What sandbox disks are promised is reserved on the host (issue 12, item 3).

Attack: sandbox disks were sparse images, so sandboxes each filling only their own disk_mb
could together fill the host's file system; then a neighbour's writes failed inside its own
quota (ext4 on the loop device lost pages at writeback), creates and deletes answered errors
and the server could not start again.

Guarantees under test, on a small ext4 file system of the test's own as the data dir (never
the host's disk): a create that does not fit beside the reserve and the other disks'
promises is refused with 429 RESOURCE_EXHAUSTED saying what it needed and what was free;
with accounted (sparse) disks, every admitted sandbox can write its whole disk at once and
the reserve is still there; with --disk-preallocate, every admitted sandbox can write its
whole disk and fsync it even once the file system is at 100% (filled from outside, as
another program on the host would); deletes work on the full file system; the server starts
again on it, re-adopts its sandboxes with their files, and deletes them; the warm pool stops
filling, and says so, when the next sandbox would not fit, and gives its disks up to a create
that needs the room.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx

from tests.e2e.reliability.reliability_support import (
    CREATED_IDS,
    Harness,
    create,
    envelope,
    fill_file_system,
    run,
    sh,
    unfill_file_system,
    wait_until,
)

FS_MB = 192
DISK_MB = 32
RESERVE_MB = 32
SETTINGS = ["--default-disk-mb", str(DISK_MB), "--disk-reserve-mb", str(RESERVE_MB)]
WRITE_MB = 26  # of a 32 MiB disk: what its own ext4 leaves to files, and some to spare
MAX_CREATES = 12  # sparse disks would let all of them in (each holds ~1 MiB on the host)


def _free_mb(path: Path) -> float:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize / (1 << 20)


def _assert_reserve_kept(data_dir: Path) -> None:
    left = _free_mb(data_dir) + RESERVE_MB / 2  # free, and the ballast held beside it
    assert left >= RESERVE_MB - 1, f"the warm pool ate into the reserve: {left:.1f} MiB left"


def _create_until_refused(c: httpx.Client) -> tuple[list[str], httpx.Response]:
    created: list[str] = []
    for _ in range(MAX_CREATES):
        response = c.post("/sandboxes", json={})
        if response.status_code != 201:
            return created, response
        CREATED_IDS.add(response.json()["id"])
        created.append(response.json()["id"])
    raise AssertionError(f"{MAX_CREATES} sandboxes of {DISK_MB} MiB were admitted on a {FS_MB} MiB file system")


def _write_whole_disk(c: httpx.Client, sandbox_id: str) -> dict[str, object]:
    """Write (and fsync) most of the sandbox's disk; the result of the command."""
    return run(
        c,
        sandbox_id,
        "dd",
        "if=/dev/zero",
        "of=/workspace/fill",
        "bs=1M",
        f"count={WRITE_MB}",
        "conv=fsync",
        timeout=120,
    )


def _reads_back(c: httpx.Client, sandbox_id: str) -> bool:
    size = sh(c, sandbox_id, "stat -c %s /workspace/fill").strip()
    same = run(c, sandbox_id, "cmp", "-n", str(WRITE_MB << 20), "/workspace/fill", "/dev/zero")
    return size == str(WRITE_MB << 20) and same["exit_code"] == 0


def test_accounted_disks_all_fit_when_every_sandbox_fills_its_own() -> None:
    with Harness("disk-account") as h:
        h.mount_ext4(h.data_dir, FS_MB)
        h.start(pool_size=0, extra=SETTINGS)
        with h.client(timeout=120) as c:
            ids, refused = _create_until_refused(c)
            assert refused.status_code == 429, refused.text
            body = envelope(refused)
            assert body["code"] == "RESOURCE_EXHAUSTED" and body["details"]["needed_mb"] == DISK_MB, body
            assert len(ids) >= 2, f"only {len(ids)} sandboxes of {DISK_MB} MiB fit on {FS_MB} MiB"
            images = list((h.data_dir / "sandboxes").glob("*/disk.img"))
            assert sum(i.stat().st_blocks * 512 for i in images) < len(ids) * DISK_MB * (1 << 20) / 2  # sparse
            # Every sandbox fills its own disk at the same time: all of it lands, and the
            # server's reserve is still there (sparse disks would have run the fs out).
            for sandbox_id in ids:
                result = _write_whole_disk(c, sandbox_id)
                assert result["exit_code"] == 0, (sandbox_id, result)
            assert all(_reads_back(c, sandbox_id) for sandbox_id in ids)
            _assert_reserve_kept(h.data_dir)
            again = c.post("/sandboxes", json={})
            assert again.status_code == 429 and envelope(again)["code"] == "RESOURCE_EXHAUSTED", again.text
            for sandbox_id in ids:
                assert c.delete(f"/sandboxes/{sandbox_id}").status_code == 204
        assert "Traceback" not in h.log(), h.log_tail()
        h.terminate()
        h.assert_data_dir_empty()


def test_preallocated_disks_survive_a_full_file_system_which_still_deletes_and_restarts() -> None:
    with Harness("disk-reserve") as h:
        h.mount_ext4(h.data_dir, FS_MB)
        h.start(extra=[*SETTINGS, "--disk-preallocate"])
        with h.client(timeout=120) as c:
            ids, refused = _create_until_refused(c)
            assert refused.status_code == 429, refused.text
            body = envelope(refused)
            assert body["code"] == "RESOURCE_EXHAUSTED", body
            assert body["details"]["needed_mb"] == DISK_MB and body["details"]["free_mb"] < DISK_MB, body
            assert "disk space" in body["message"], body
            assert len(ids) >= 2, f"only {len(ids)} sandboxes of {DISK_MB} MiB fit on {FS_MB} MiB"
            print(f"\nadmitted {len(ids)} sandboxes of {DISK_MB} MiB; refused: {body['message']}")

            # Another program fills the file system to the last block.
            fill_file_system(h.data_dir)
            assert _free_mb(h.data_dir) < 1
            # Every sandbox can still write its whole disk, to the disk (fsync), and read it back.
            for sandbox_id in ids:
                result = _write_whole_disk(c, sandbox_id)
                assert result["exit_code"] == 0, (sandbox_id, result)
            subprocess.run(["sh", "-c", "echo 3 > /proc/sys/vm/drop_caches"], check=False)
            assert all(_reads_back(c, sandbox_id) for sandbox_id in ids)

            # Creates are refused cleanly; a delete works on the full file system.
            again = c.post("/sandboxes", json={})
            assert again.status_code == 429 and envelope(again)["code"] == "RESOURCE_EXHAUSTED", again.text
            gone = ids.pop()
            assert c.delete(f"/sandboxes/{gone}").status_code == 204
            assert c.get(f"/sandboxes/{gone}").status_code == 404
            h.assert_no_leftovers([gone])

        # Full again (what the delete freed is taken too); the server restarts on it.
        fill_file_system(h.data_dir, "filler-again")
        assert _free_mb(h.data_dir) < 1
        h.terminate()
        h.start(extra=[*SETTINGS, "--disk-preallocate"])
        with h.client(timeout=120) as c:
            listed = {s["id"]: s["state"] for s in c.get("/sandboxes").json()["sandboxes"]}
            assert listed == dict.fromkeys(ids, "running"), listed
            assert all(_reads_back(c, sandbox_id) for sandbox_id in ids)
            refused = c.post("/sandboxes", json={})
            assert refused.status_code == 429 and envelope(refused)["code"] == "RESOURCE_EXHAUSTED", refused.text
            for sandbox_id in ids:
                assert c.delete(f"/sandboxes/{sandbox_id}").status_code == 204
        assert "Traceback" not in h.log(), h.log_tail()
        unfill_file_system(h.data_dir)
        unfill_file_system(h.data_dir, "filler-again")
        h.assert_data_dir_empty()


def test_the_warm_pool_stops_where_the_next_disk_would_not_fit() -> None:
    with Harness("disk-reserve-pool") as h:
        h.mount_ext4(h.data_dir, FS_MB)
        h.start(pool_size=MAX_CREATES, extra=SETTINGS)
        for template in ("default", "workspace-test:latest"):  # both built-in templates have a pool
            stopped = f"warm pool for {template}: stopped at"
            wait_until(lambda s=stopped: s in h.log(), 60, 0.2, "the pool to stop")
        _assert_reserve_kept(h.data_dir)
        with h.client(timeout=60) as c:
            # A cold create that does not fit beside the warm disks: warm sandboxes make room
            # (a user's sandbox comes before a speculative one).
            bigger = create(c, disk_mb=DISK_MB + 16)["id"]
            assert "discarded" in h.log(), h.log_tail()
            _assert_reserve_kept(h.data_dir)
            # A delete frees a disk, and the pools fill again, up to what fits.
            assert c.delete(f"/sandboxes/{bigger}").status_code == 204
        wait_until(lambda: ": filling again" in h.log(), 30, 0.2, "a pool to fill again")
        wait_until(lambda: h.log().count(": stopped at") >= 3, 30, 0.2, "it to stop again")
        _assert_reserve_kept(h.data_dir)
        h.terminate()
        h.assert_data_dir_empty()


def _import(c: httpx.Client, archive: Path, name: str) -> httpx.Response:
    with open(archive, "rb") as body:
        return c.post("/templates/import", params={"name": name}, content=body, timeout=300)


def _scratch_is_empty(data_dir: Path) -> bool:
    return not any((data_dir / "templates" / "scratch").iterdir())


def test_imports_and_snapshots_take_only_what_is_free_beside_the_reserve_and_the_promises(tmp_path: Path) -> None:
    """Sibling of the sparse disks: an import's upload and layers, and a snapshot's changes,
    are the server's own writes. Unadmitted, they took the room promised to sandbox disks (and
    the reserve): then a sandbox met ENOSPC within its quota. They are admitted like disks
    are, and a refusal leaves nothing behind and the sandbox running."""
    from tests.support.images import Entry, Image, busybox_oci_archive, docker_archive, layer_tar

    big_disk_mb = 100
    with Harness("disk-templates") as h:
        h.mount_ext4(h.data_dir, FS_MB)
        h.start(pool_size=0, extra=SETTINGS)
        with h.client(timeout=300) as c:
            assert _import(c, busybox_oci_archive(tmp_path / "busybox.tar"), "busybox").status_code == 201
            sandbox_id = create(c, template="busybox", disk_mb=big_disk_mb)["id"]
            sh(c, sandbox_id, "dd if=/dev/urandom of=/workspace/small bs=1M count=8 conv=fsync 2>/dev/null")
            small = c.post(f"/sandboxes/{sandbox_id}/snapshot", json={"name": "snap-small"})
            assert small.status_code == 201, small.text
            # Now most of its disk: the changes no longer fit beside the reserve and what the
            # disk may still write, so the snapshot is refused before anything is written.
            sh(c, sandbox_id, "dd if=/dev/urandom of=/workspace/big bs=1M count=56 conv=fsync 2>/dev/null")
            refused = c.post(f"/sandboxes/{sandbox_id}/snapshot", json={"name": "snap-big"})
            assert refused.status_code == 429, refused.text
            body = envelope(refused)
            assert body["code"] == "RESOURCE_EXHAUSTED" and body["details"]["reserve_mb"] == RESERVE_MB, body
            assert _scratch_is_empty(h.data_dir)
            # The sandbox was thawed and can still write the rest of its promise.
            sh(c, sandbox_id, "dd if=/dev/zero of=/workspace/rest bs=1M count=24 conv=fsync 2>/dev/null")
            # An import bigger than what is left is cut off while it uploads.
            archive = docker_archive(Image([layer_tar([Entry("data.bin", os.urandom(48 << 20))])]), tmp_path / "d.tar")
            cut = _import(c, archive, "too-big")
            assert cut.status_code == 429 and envelope(cut)["code"] == "RESOURCE_EXHAUSTED", cut.text
            assert _scratch_is_empty(h.data_dir)
            assert c.get("/templates/too-big").status_code == 404
            _assert_reserve_kept(h.data_dir)
            assert c.delete(f"/sandboxes/{sandbox_id}").status_code == 204
            # With the disk's promise given back, the same import fits.
            assert _import(c, archive, "fits").status_code == 201
        assert "Traceback" not in h.log(), h.log_tail()
        h.terminate()
        h.assert_data_dir_empty()
