"""Storage faults.

Guarantees under test: a data dir the server cannot write is refused at startup with a
non-zero exit and a message naming the dir; a full data dir (a tiny tmpfs mounted by the
test) makes the calls that need it fail with a clear error (a create: 429
RESOURCE_EXHAUSTED, as its disk cannot be reserved) while the server keeps serving
everything else, and leaves no corrupted state (state.db opens, is in WAL mode and passes
its integrity check, and a restarted server sees exactly the sandboxes it should); a
sandbox's own disk quota (disk_mb) is enforced with DISK_QUOTA_EXCEEDED without touching
the file that was there.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.e2e.reliability.reliability_support import (
    Harness,
    assert_running_means_usable,
    bundle_ids,
    create,
    envelope,
    fill_file_system,
    list_workspace,
    run,
    sh,
    unfill_file_system,
)
from tests.support.live_server import free_port, workspace_command

STARTUP_BOUND = 60.0
FULL_TMPFS = "size=48m,mode=0755"
# Sandbox disks are reserved (store/disk_space.py): small ones, and a small reserve, on a small tmpfs.
SMALL_DISKS = ["--default-disk-mb", "8", "--disk-reserve-mb", "8"]
CLEAR_WORDS = ("space", "full", "quota")
QUOTA_ANSWER_BOUND = 5.0  # writing 12 MiB to a tmpfs takes milliseconds


def _db_facts(data_dir: Path) -> tuple[str, str, list[tuple[str, str]]]:
    db = sqlite3.connect(f"file:{data_dir / 'state.db'}?mode=ro", uri=True, timeout=10)
    try:
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
        check = db.execute("PRAGMA integrity_check").fetchone()[0]
        rows = db.execute("SELECT id, state FROM sandboxes ORDER BY id").fetchall()
    finally:
        db.close()
    return str(mode), str(check), [(str(i), str(s)) for i, s in rows]


@pytest.mark.parametrize("case", ["read-only-mount", "under-read-only-mount", "parent-is-a-file", "full"])
def test_unwritable_data_dir_is_refused_at_startup(case: str) -> None:
    with Harness(f"unwritable-{case}") as h:
        if case == "read-only-mount":
            data_dir = h.root / "ro"
            h.mount_tmpfs(data_dir, "ro,size=1m")
        elif case == "under-read-only-mount":
            h.mount_tmpfs(h.root / "ro", "ro,size=1m")
            data_dir = h.root / "ro" / "data"
        elif case == "parent-is-a-file":
            (h.root / "file").write_text("not a directory")
            data_dir = h.root / "file" / "data"
        else:
            data_dir = h.root / "full"
            h.mount_tmpfs(data_dir, "size=1m,mode=0755")
            fill_file_system(data_dir)
        command = [
            *workspace_command(),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(free_port()),
            "--data-dir",
            str(data_dir),
            "--pool-size",
            "0",
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("WORKSPACE_")}
        result = subprocess.run(command, capture_output=True, text=True, timeout=STARTUP_BOUND, env=env, check=False)
        output = result.stdout + result.stderr
        assert result.returncode != 0, f"the server started on an unwritable data dir:\n{output}"
        assert str(data_dir) in output, f"the error does not name the data dir:\n{output}"
        assert "Traceback" not in output, f"a traceback instead of a clear message:\n{output}"
        print(f"\n{case}: exit {result.returncode}: {output.strip().splitlines()[-1]}")


def test_full_data_dir_create_is_refused_clearly() -> None:
    with Harness("full-create") as h:
        h.mount_tmpfs(h.data_dir, FULL_TMPFS)
        h.start(extra=SMALL_DISKS)
        with h.client() as c:
            existing = create(c)["id"]
            fill_file_system(h.data_dir)
            response = c.post("/sandboxes", json={})
            assert response.status_code == 429, response.text
            body = envelope(response)
            assert body["code"] == "RESOURCE_EXHAUSTED", body
            assert body["details"]["needed_mb"] == 8 and body["details"]["free_mb"] < 8, body
            assert any(word in body["message"].lower() for word in CLEAR_WORDS), body
            assert bundle_ids(h.data_dir) == [existing], "the failed create left a bundle behind"


def test_full_data_dir_keeps_serving_and_leaves_no_corrupted_state() -> None:
    with Harness("full-serve") as h:
        h.mount_tmpfs(h.data_dir, FULL_TMPFS)
        h.start(extra=SMALL_DISKS)
        with h.client() as c:
            kept = create(c)["id"]
            sh(c, kept, "echo kept > /workspace/kept.txt")
            assert _db_facts(h.data_dir)[0] == "wal", "state.db is not in WAL mode"

            fill_file_system(h.data_dir)
            for _ in range(3):
                response = c.post("/sandboxes", json={})
                assert response.status_code >= 400, "a create succeeded on a full data dir"
                envelope(response)
            # Everything that does not need the data dir still works.
            assert httpx.get(h.url + "/healthz").status_code == 200
            assert httpx.get(h.url + "/metrics").status_code == 200
            assert [s["id"] for s in c.get("/sandboxes").json()["sandboxes"]] == [kept]
            assert run(c, kept, "cat", "/workspace/kept.txt")["stdout"] == "kept\n"
            assert (
                c.put(
                    f"/sandboxes/{kept}/files",
                    params={"path": "/workspace/new.txt"},
                    content=b"sandbox disks are separate",
                ).status_code
                == 200
            )
            assert bundle_ids(h.data_dir) == [kept], "failed creates left bundles behind"

            # Space comes back: so does every operation.
            unfill_file_system(h.data_dir)
            fresh = create(c)["id"]
            assert run(c, fresh, "echo", "ok")["stdout"] == "ok\n"
            assert c.delete(f"/sandboxes/{fresh}").status_code == 204
            h.assert_no_leftovers([fresh])

        h.terminate()
        mode, check, rows = _db_facts(h.data_dir)
        assert (mode, check) == ("wal", "ok")
        assert rows == [(kept, "running")], f"state.db holds more than the one sandbox: {rows}"
        h.start(extra=SMALL_DISKS)
        with h.client() as c:
            assert [(s["id"], s["state"]) for s in c.get("/sandboxes").json()["sandboxes"]] == [(kept, "running")]
            assert assert_running_means_usable(c) == [kept]
            assert sh(c, kept, "cat /workspace/kept.txt /workspace/new.txt") == "kept\nsandbox disks are separate"
            assert c.delete(f"/sandboxes/{kept}").status_code == 204
        h.assert_data_dir_empty()


def test_failed_delete_on_a_full_data_dir_leaves_state_consistent() -> None:
    with Harness("full-delete") as h:
        h.mount_tmpfs(h.data_dir, FULL_TMPFS)
        h.start(extra=SMALL_DISKS)
        with h.client() as c:
            sandbox_id = create(c)["id"]
            fill_file_system(h.data_dir)
            response = c.delete(f"/sandboxes/{sandbox_id}")
            if response.status_code == 204:
                assert c.get(f"/sandboxes/{sandbox_id}").status_code == 404
                h.assert_no_leftovers([sandbox_id])
            else:
                body = envelope(response)
                assert response.status_code == 507 and body["code"] in ("STORAGE_ERROR", "DISK_QUOTA_EXCEEDED")
                # The delete did not happen: the sandbox must be reported as what it still is.
                assert c.get(f"/sandboxes/{sandbox_id}").json()["state"] == "running"
                assert run(c, sandbox_id, "true")["exit_code"] == 0
            unfill_file_system(h.data_dir)
            if c.get(f"/sandboxes/{sandbox_id}").status_code == 200:
                assert c.delete(f"/sandboxes/{sandbox_id}").status_code == 204
            h.assert_no_leftovers([sandbox_id])


def test_upload_over_the_sandbox_disk_quota_fails_cleanly() -> None:
    """507 DISK_QUOTA_EXCEEDED at once; the old file and the sandbox untouched (a regression
    test: the request used to hang, the server waiting for credit on a stream the agent had
    already ended)."""
    with Harness("quota") as h:
        h.start()
        with h.client(timeout=QUOTA_ANSWER_BOUND) as c:
            sandbox_id = create(c, disk_mb=8)["id"]
            path = "/workspace/f.bin"
            assert c.put(f"/sandboxes/{sandbox_id}/files", params={"path": path}, content=b"old").status_code == 200
            try:
                response = c.put(
                    f"/sandboxes/{sandbox_id}/files", params={"path": path}, content=b"q" * (12 * 1024 * 1024)
                )
            except httpx.TimeoutException:
                pytest.fail(f"an upload over the disk quota got no answer within {QUOTA_ANSWER_BOUND} s")
            assert response.status_code == 507, response.text
            assert envelope(response)["code"] == "DISK_QUOTA_EXCEEDED"
            assert c.get(f"/sandboxes/{sandbox_id}/files", params={"path": path}).content == b"old"
            assert not [n for n in list_workspace(c, sandbox_id) if n.startswith(".ws-upload-")]
            assert (
                c.put(
                    f"/sandboxes/{sandbox_id}/files", params={"path": "/workspace/small"}, content=b"fits"
                ).status_code
                == 200
            )


def test_a_command_filling_the_sandbox_disk_fails_alone() -> None:
    """ENOSPC inside the sandbox is the command's own error; the sandbox stays usable."""
    with Harness("quota-cmd") as h:
        h.start()
        with h.client() as c:
            sandbox_id = create(c, disk_mb=8)["id"]
            result = run(c, sandbox_id, "sh", "-c", "head -c 16777216 /dev/zero > /workspace/big")
            assert result["exit_code"] != 0 and "space" in result["stderr"].lower(), result
            sh(c, sandbox_id, "rm /workspace/big")
            assert sh(c, sandbox_id, "echo fine > /workspace/ok && cat /workspace/ok") == "fine\n"
            assert c.delete(f"/sandboxes/{sandbox_id}").status_code == 204
        h.assert_data_dir_empty()
