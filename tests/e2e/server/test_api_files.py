from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from typing import Any

import httpx

Sandbox = dict[str, Any]


def files(sandbox: Sandbox, suffix: str = "") -> str:
    return f"/sandboxes/{sandbox['id']}/files{suffix}"


def test_write_read_round_trip_binary(api: httpx.Client, sandbox: Sandbox) -> None:
    data = bytes(range(256)) * 100
    info = api.put(files(sandbox), params={"path": "/workspace/dir/data.bin"}, content=data).json()
    assert info["type"] == "file" and info["size"] == len(data) and info["path"] == "/workspace/dir/data.bin"
    response = api.get(files(sandbox), params={"path": "/workspace/dir/data.bin"})
    assert response.content == data and response.headers["content-length"] == str(len(data))
    # Written files belong to the sandbox user, so commands can change them.
    owner = api.post(
        f"/sandboxes/{sandbox['id']}/processes/run",
        json={"command": "stat", "args": ["-c", "%U", "/workspace/dir/data.bin"]},
    ).json()
    assert owner["stdout"] == "user\n"


def test_large_file_streams_both_ways(api: httpx.Client, sandbox: Sandbox) -> None:
    size = 48 * 1024 * 1024
    chunk = os.urandom(1024 * 1024)
    expected = hashlib.sha256()

    def body() -> Iterator[bytes]:
        for _ in range(size // len(chunk)):
            expected.update(chunk)
            yield chunk

    info = api.put(files(sandbox), params={"path": "big.bin"}, content=body()).json()
    assert info["size"] == size
    got = hashlib.sha256()
    total = 0
    with api.stream("GET", files(sandbox), params={"path": "big.bin"}) as response:
        for part in response.iter_bytes():
            got.update(part)
            total += len(part)
    assert total == size and got.hexdigest() == expected.hexdigest()


def test_list_stat_exists_mkdir(api: httpx.Client, sandbox: Sandbox) -> None:
    assert api.post(files(sandbox, "/mkdir"), json={"path": "/workspace/a/b/c", "recursive": True}).status_code == 200
    api.put(files(sandbox), params={"path": "/workspace/a/f.txt"}, content=b"12345")
    listed = {f["name"]: f for f in api.get(files(sandbox, "/list"), params={"path": "/workspace/a"}).json()["files"]}
    assert listed["b"]["type"] == "directory" and listed["f.txt"]["size"] == 5
    assert listed["f.txt"]["path"] == "/workspace/a/f.txt" and listed["f.txt"]["modified_at"].endswith("Z")
    stat = api.get(files(sandbox, "/stat"), params={"path": "/workspace/a/f.txt"}).json()
    assert stat["type"] == "file" and stat["mode"] == "0644"
    assert api.get(files(sandbox, "/exists"), params={"path": "/workspace/a/f.txt"}).json() == {"exists": True}
    assert api.get(files(sandbox, "/exists"), params={"path": "/workspace/nope"}).json() == {"exists": False}
    again = api.post(files(sandbox, "/mkdir"), json={"path": "/workspace/a", "recursive": False})
    assert again.status_code == 409 and again.json()["code"] == "FILE_EXISTS"
    orphan = api.post(files(sandbox, "/mkdir"), json={"path": "/workspace/x/y", "recursive": False})
    assert orphan.json()["code"] == "FILE_NOT_FOUND"


def test_remove_move_copy(api: httpx.Client, sandbox: Sandbox) -> None:
    api.put(files(sandbox), params={"path": "/workspace/src.txt"}, content=b"hello")
    assert (
        api.post(
            files(sandbox, "/copy"), json={"source": "/workspace/src.txt", "destination": "/workspace/dst.txt"}
        ).status_code
        == 200
    )
    moved = api.post(
        files(sandbox, "/move"), json={"source": "/workspace/src.txt", "destination": "/workspace/new.txt"}
    )
    assert moved.json()["path"] == "/workspace/new.txt"
    assert api.get(files(sandbox), params={"path": "/workspace/dst.txt"}).content == b"hello"
    assert api.get(files(sandbox, "/exists"), params={"path": "/workspace/src.txt"}).json()["exists"] is False
    api.put(files(sandbox), params={"path": "/workspace/tree/one/two.txt"}, content=b"2")
    api.post(files(sandbox, "/copy"), json={"source": "/workspace/tree", "destination": "/workspace/tree2"})
    assert api.get(files(sandbox), params={"path": "/workspace/tree2/one/two.txt"}).content == b"2"
    refused = api.delete(files(sandbox), params={"path": "/workspace/tree"})
    assert refused.status_code == 409 and refused.json()["code"] == "DIRECTORY_NOT_EMPTY"
    assert api.delete(files(sandbox), params={"path": "/workspace/tree", "recursive": "true"}).status_code == 204
    assert api.delete(files(sandbox), params={"path": "/workspace/new.txt"}).status_code == 204
    assert api.get(files(sandbox, "/exists"), params={"path": "/workspace/tree"}).json()["exists"] is False


def test_file_errors_have_stable_codes(api: httpx.Client, sandbox: Sandbox) -> None:
    missing = api.get(files(sandbox), params={"path": "/workspace/missing.txt"})
    assert missing.status_code == 404 and missing.json()["code"] == "FILE_NOT_FOUND"
    assert missing.json()["details"]["path"] == "/workspace/missing.txt"
    readonly = api.put(files(sandbox), params={"path": "/usr/bin/evil"}, content=b"x")
    assert readonly.status_code == 403 and readonly.json()["code"] == "PERMISSION_DENIED"
    directory = api.get(files(sandbox), params={"path": "/workspace"})
    assert directory.json()["code"] == "IS_A_DIRECTORY"
    device = api.get(files(sandbox), params={"path": "/dev/zero"})
    assert device.status_code == 400 and device.json()["code"] == "INVALID_REQUEST"
    for bad in ("../etc/passwd", "/workspace/../../x", "a\x00b", "/" + "x" * 5000):
        response = api.get(files(sandbox, "/stat"), params={"path": bad})
        assert response.status_code == 400, bad
        assert response.json()["code"] == "INVALID_REQUEST"


def test_failed_upload_leaves_no_partial_file(api: httpx.Client, sandbox: Sandbox) -> None:
    api.put(files(sandbox), params={"path": "/workspace/keep.txt"}, content=b"original")

    def broken() -> Iterator[bytes]:
        yield b"partial data"
        raise RuntimeError("client gave up")

    try:
        api.put(files(sandbox), params={"path": "/workspace/keep.txt"}, content=broken())
    except (RuntimeError, httpx.HTTPError):
        pass
    assert api.get(files(sandbox), params={"path": "/workspace/keep.txt"}).content == b"original"
    # The agent discards the partial file once it hears the upload ended: soon, not instantly.
    deadline = time.monotonic() + 5
    while True:
        names = [f["name"] for f in api.get(files(sandbox, "/list"), params={"path": "/workspace"}).json()["files"]]
        if not [n for n in names if n.startswith(".ws-upload-")] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not [n for n in names if n.startswith(".ws-upload-")]
