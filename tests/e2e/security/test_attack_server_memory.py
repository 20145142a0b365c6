"""Making the server hold what a sandbox produces (docs/reliability.md, "Resource bounds").

Each attack measures the live server's peak resident memory (`VmHWM` of /proc/PID/status,
reset through `clear_refs` before the attack) over its resident memory just before: the
growth must stay within the documented bound, whatever the sandbox sends. The server is a
private one with small output and listing limits, so that the attacks stay quick; the
bounds scale with those settings, not with what the sandbox sends.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.reliability.reliability_support import Harness, create, rss_bytes, sh
from tests.e2e.security.attack_support import PLANT_AGENT_SOCKET

MAX_RUN_OUTPUT_MB = 8
MAX_LIST_ENTRIES = 150_000
GROWTH_BOUND = 64 << 20


SETTINGS = ["--max-run-output-mb", str(MAX_RUN_OUTPUT_MB), "--max-list-entries", str(MAX_LIST_ENTRIES)]

# Sandbox root replaces the agent's socket with its own agent, which answers hello and then
# answers any listing with valid entries forever, as fast as the server's credit allows.
HOSTILE_LISTER = r"""
import json, os, socket, struct, sys
HEADER = struct.Struct(">IIB")
WINDOW = 4 * 1024 * 1024
"""
HOSTILE_LISTER += PLANT_AGENT_SOCKET
HOSTILE_LISTER += r"""
name = "n" * 255
line = json.dumps({"name": name, "path": "/workspace/" + name, "type": "file", "size": 0,
                   "modified_at": "2026-01-01T00:00:00.000000Z", "mode": "0644"}).encode() + b"\n"
chunk = line * (64 * 1024 // len(line))

def frame(stream, kind, payload=b""):
    return HEADER.pack(len(payload), stream, kind) + payload

def exact(conn, size):
    data = b""
    while len(data) < size:
        more = conn.recv(size - len(data))
        if not more:
            raise EOFError
        data += more
    return data

def answer(conn, stream, body):
    op = json.loads(body).get("op")
    if op == "list":
        conn.sendall(frame(stream, 2, json.dumps({"type": "ready"}).encode()))
        return stream
    reply = {"type": "ok", "version": 1, "pid": 1} if op == "hello" else {"type": "ok"}
    conn.sendall(frame(stream, 2, json.dumps(reply).encode()) + frame(stream, 7))
    return None

while True:
    conn, _ = listener.accept()
    listing, outstanding = None, 0
    try:
        while True:
            if listing is not None and outstanding + len(chunk) <= WINDOW:
                conn.sendall(frame(listing, 3, chunk))
                outstanding += len(chunk)
                continue
            length, stream, kind = HEADER.unpack(exact(conn, HEADER.size))
            body = exact(conn, length) if length else b""
            if kind == 1:
                listing = answer(conn, stream, body) or listing
            elif kind == 6 and stream == listing:
                outstanding -= struct.unpack(">I", body)[0]
            elif kind == 7 and stream == listing:
                listing, outstanding = None, 0
    except Exception:
        conn.close()
"""


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    with Harness("server-memory") as h:
        h.start(extra=SETTINGS)
        yield h


def reset_peak(pid: int) -> int:
    """Reset the process's peak RSS (`VmHWM`) to its current RSS; the current RSS."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    return rss_bytes(pid)


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for pid {pid}")


def test_attack_listing_100k_entries_streams_within_bounded_server_memory(harness: Harness) -> None:
    """100,000 files with 200-character names: the listing used to be held whole in the
    server (a list of dicts, then models, then JSON: hundreds of MiB). It is streamed now,
    entry by entry under the agent link's flow control."""
    count = 100_000
    with harness.client(timeout=300) as client:
        sandbox = create(client, disk_mb=2048)  # 128k inodes
        made = sh(
            client,
            sandbox["id"],
            f"python3 -c \"import os; os.mkdir('/workspace/big'); "
            f"[open('/workspace/big/%06d' % i + 'n' * 194, 'w').close() for i in range({count})]\"; "
            "ls /workspace/big | wc -l",
            timeout=240,
        )
        assert made.strip() == str(count), made
        before = reset_peak(harness.pid)
        with client.stream(
            "GET", f"/sandboxes/{sandbox['id']}/files/list", params={"path": "/workspace/big"}
        ) as response:
            assert response.status_code == 200, response.read()
            body = b"".join(response.iter_bytes())
        growth = peak_rss(harness.pid) - before
        print(f"listing of {count} entries: {len(body) >> 20} MiB sent, server peak growth {growth >> 20} MiB")
        assert growth < GROWTH_BOUND, f"the server grew by {growth >> 20} MiB listing {count} entries"
        listing = json.loads(body)
        assert len(listing["files"]) == count and listing["truncated"] is False
        names = [entry["name"] for entry in listing["files"]]
        assert names == sorted(names) and names[0] == "000000" + "n" * 194
        # The SDK's contract is unchanged: the whole list.
        from workspace_sdk import WorkspaceClient

        with WorkspaceClient(harness.url, timeout=300) as sdk:
            files = sdk.filesystem.list(sandbox["id"], "/workspace/big")
        assert isinstance(files, list) and len(files) == count


def test_listing_past_the_maximum_is_cut_and_marked_truncated(harness: Harness) -> None:
    with harness.client(timeout=120) as client:
        sandbox = create(client)
        sh(client, sandbox["id"], "mkdir /workspace/d && cd /workspace/d && touch a b c")
        response = client.get(f"/sandboxes/{sandbox['id']}/files/list", params={"path": "/workspace/d"})
        assert response.status_code == 200 and response.json()["truncated"] is False
        assert [f["name"] for f in response.json()["files"]] == ["a", "b", "c"]
        missing = client.get(f"/sandboxes/{sandbox['id']}/files/list", params={"path": "/workspace/nope"})
        assert missing.status_code == 404 and missing.json()["code"] == "FILE_NOT_FOUND", missing.text


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_attack_run_output_of_control_bytes_is_bounded_as_encoded(harness: Harness, stream: str) -> None:
    """64 MiB of control bytes on each stream: each byte is six in JSON (`\\u0001`). The cap
    counted raw bytes, so a cap of N cost a response of 12 N and many times that in memory;
    it counts the encoded bytes now, and the output is encoded once."""
    cap = MAX_RUN_OUTPUT_MB << 20
    with harness.client(timeout=300) as client:
        sandbox = create(client)
        script = (
            "import os, sys\n"
            "chunk = bytes(range(1, 32)) * 8192\n"
            "for fd in (1, 2):\n"
            "    left = 64 << 20\n"
            "    while left > 0:\n"
            "        left -= os.write(fd, chunk[:left])\n"
        )
        before = reset_peak(harness.pid)
        with client.stream(
            "POST",
            f"/sandboxes/{sandbox['id']}/processes/run",
            json={"command": "python3", "args": ["-c", script], "timeout": 240},
        ) as response:
            assert response.status_code == 200, response.read()
            body = b"".join(response.iter_bytes())
        growth = peak_rss(harness.pid) - before
        result = json.loads(body)
        assert result["exit_code"] == 0
        print(f"run of 2 x 64 MiB of control bytes: {len(body) >> 20} MiB sent, server peak growth {growth >> 20} MiB")
        assert len(body) <= 2 * cap + 4096, len(body)
        encoded = json.dumps(result[stream], ensure_ascii=False, separators=(",", ":")).encode()
        assert cap - 64 <= len(encoded) - 2 <= cap, len(encoded)
        assert result[f"{stream}_truncated"] is True
        assert result[stream][:31] == bytes(range(1, 32)).decode()  # the beginning is kept, escapes intact
        assert growth < 4 * cap + (16 << 20), f"the server grew by {growth >> 20} MiB for one run"


def test_run_output_within_the_cap_is_whole_and_not_marked(harness: Harness) -> None:
    with harness.client(timeout=120) as client:
        sandbox = create(client)
        response = client.post(
            f"/sandboxes/{sandbox['id']}/processes/run",
            json={"command": "python3", "args": ["-c", "import sys; sys.stdout.write('\\x01é' * 1000); print('end')"]},
        )
        result = response.json()
        assert result["stdout"] == "\x01é" * 1000 + "end\n"
        assert result["stdout_truncated"] is False and result["stderr_truncated"] is False


def test_attack_hostile_agent_sending_an_endless_listing_is_cut_at_the_maximum(harness: Harness) -> None:
    """Sandbox root replaces the agent (its socket, then a server restart) with one that
    answers a listing with entries forever. The server streams them under flow control and
    stops at --max-list-entries with `truncated`; its memory stays flat."""
    with harness.client(timeout=120) as client:
        sandbox = create(client)
        planted = sh(
            client,
            sandbox["id"],
            f"setsid python3 -c '{HOSTILE_LISTER}' </dev/null >/tmp/fake.out 2>&1 & "
            "for i in $(seq 600); do grep -q planted /tmp/fake.out && break; sleep 0.05; done; cat /tmp/fake.out",
            user="root",
        )
        assert planted.split() == ["planted"], planted
    harness.terminate()
    harness.start(extra=SETTINGS, same_port=True)
    with harness.client(timeout=300) as client:
        before = reset_peak(harness.pid)
        received = 0
        pieces = []
        with client.stream("GET", f"/sandboxes/{sandbox['id']}/files/list", params={"path": "/workspace"}) as response:
            assert response.status_code == 200, response.read()
            for piece in response.iter_bytes():
                received += len(piece)
                pieces.append(piece)
                assert received < 1 << 30, "the listing did not stop"
        growth = peak_rss(harness.pid) - before
        print(f"hostile listing: {received >> 20} MiB sent, server peak growth {growth >> 20} MiB")
        assert growth < GROWTH_BOUND, f"the server grew by {growth >> 20} MiB on a hostile listing"
        listing = json.loads(b"".join(pieces))
        assert len(listing["files"]) == MAX_LIST_ENTRIES and listing["truncated"] is True
        assert "error" not in listing
        assert httpx.get(harness.url + "/healthz", timeout=10).status_code == 200
