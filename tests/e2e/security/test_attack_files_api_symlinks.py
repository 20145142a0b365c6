"""The files API as a confused deputy (docs/security.md, "Symlinks and the files API").

The files API acts as sandbox root for its client. Code running as the sandbox user plants
symlinks (`/workspace/evil -> /root`, `-> /workspace/rootonly`, `-> /tmp`) and waits for a client
to write, make, move, copy, delete or read through them. The rule: a symlink lends the
files API only its owner's authority, so every such operation is refused with 403
`PERMISSION_DENIED` and the root-only place is left exactly as it was; links owned by root,
links to places the user may write, and paths without links work as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.security.attack_support import assert_error, create_sandbox, delete_sandbox, new_marker, sh
from tests.support.live_server import LiveServer

FILES = "/sandboxes/{id}/files"


@pytest.fixture(scope="module")
def planted(workspace_server: LiveServer) -> Iterator[dict[str, Any]]:
    """A sandbox where root made root-only places and the user planted links to them."""
    with httpx.Client(base_url=workspace_server.url + "/api/v1", timeout=60) as api:
        yield from _planted(api)


def _planted(api: httpx.Client) -> Iterator[dict[str, Any]]:
    sandbox = create_sandbox(api)
    marker = new_marker("deputy")
    setup_root = sh(
        api,
        sandbox["id"],
        f"""
        set -e
        echo {marker} > /root/secret && chmod 600 /root/secret
        echo {marker} > /root/victim
        mkdir -p /root/dir && echo {marker} > /root/dir/inner
        mkdir -p /workspace/rootonly/tree && chown -R root:root /workspace/rootonly && chmod 755 /workspace/rootonly
        echo {marker} > /workspace/rootonly/file
        echo {marker} > /workspace/rootonly/tree/a && echo {marker} > /workspace/rootonly/tree/b
        chmod 600 /workspace/rootonly/tree/b
        echo {marker} > /tmp/rootfile
        echo {marker} > /root/.profile-copy
        ln -s /root /workspace/rootlink   # planted by root: lends root's authority
        """,
        user="root",
    )
    assert setup_root["exit_code"] == 0, setup_root
    setup_user = sh(
        api,
        sandbox["id"],
        """
        set -e
        ln -s /root /workspace/evil
        ln -s /workspace/rootonly /workspace/ro
        ln -s /tmp /workspace/tmp
        ln -s ../../root /workspace/relative
        ln -s /root/.profile-copy /workspace/final
        mkdir -p /workspace/chain && ln -s /workspace/evil /workspace/chain/hop
        mkdir -p /home/user/mine && ln -s /home/user/mine /workspace/ok
        echo mine > /workspace/mine.txt
        """,
    )
    assert setup_user["exit_code"] == 0, setup_user
    yield {"id": sandbox["id"], "marker": marker}
    delete_sandbox(api, sandbox["id"])


def root_view(api: httpx.Client, sandbox_id: str) -> str:
    """Everything under the root-only places, with contents (as root, by command)."""
    answer = sh(
        api,
        sandbox_id,
        "cd / && find /root /workspace/rootonly /tmp/rootfile | sort | while read f; do "
        'if [ -f "$f" ]; then echo "$f $(stat -c %u:%a "$f") $(md5sum < "$f")"; else echo "$f"; fi; done',
        user="root",
    )
    return str(answer["stdout"])


def files(planted: dict[str, Any]) -> str:
    return FILES.format(id=planted["id"])


ATTACKS: list[tuple[str, str, dict[str, Any]]] = [
    ("write", "PUT", {"params": {"path": "/workspace/evil/planted"}, "content": b"x"}),
    ("write-over", "PUT", {"params": {"path": "/workspace/evil/victim"}, "content": b"x"}),
    ("write-relative-link", "PUT", {"params": {"path": "/workspace/relative/planted"}, "content": b"x"}),
    ("write-link-chain", "PUT", {"params": {"path": "/workspace/chain/hop/planted"}, "content": b"x"}),
    ("write-deeper", "PUT", {"params": {"path": "/workspace/evil/dir/planted"}, "content": b"x"}),
    ("write-new-parents", "PUT", {"params": {"path": "/workspace/evil/new/deep/planted"}, "content": b"x"}),
    ("write-writable-link-unwritable-dir", "PUT", {"params": {"path": "/workspace/ro/planted"}, "content": b"x"}),
    ("write-over-in-sticky-dir", "PUT", {"params": {"path": "/workspace/tmp/rootfile"}, "content": b"x"}),
    ("mkdir", "POST mkdir", {"json": {"path": "/workspace/evil/made"}}),
    ("mkdir-recursive", "POST mkdir", {"json": {"path": "/workspace/evil/made/deeper", "recursive": True}}),
    ("remove", "DELETE", {"params": {"path": "/workspace/evil/victim"}}),
    ("remove-recursive", "DELETE", {"params": {"path": "/workspace/ro/tree", "recursive": "true"}}),
    ("remove-in-sticky-dir", "DELETE", {"params": {"path": "/workspace/tmp/rootfile"}}),
    ("move-source", "POST move", {"json": {"source": "/workspace/evil/victim", "destination": "/workspace/stolen"}}),
    ("move-destination", "POST move", {"json": {"source": "/workspace/mine.txt", "destination": "/workspace/evil/x"}}),
    ("copy-destination", "POST copy", {"json": {"source": "/workspace/mine.txt", "destination": "/workspace/evil/x"}}),
    (
        "copy-onto-final-link",
        "POST copy",
        {"json": {"source": "/workspace/mine.txt", "destination": "/workspace/final"}},
    ),
    (
        "copy-source-unreadable",
        "POST copy",
        {"json": {"source": "/workspace/evil/secret", "destination": "/workspace/s"}},
    ),
    ("copy-tree-unreadable", "POST copy", {"json": {"source": "/workspace/ro/tree", "destination": "/workspace/t"}}),
    ("read-unreadable", "GET", {"params": {"path": "/workspace/evil/secret"}}),
    ("read-unreachable", "GET", {"params": {"path": "/workspace/evil/victim"}}),
    ("list-unreachable", "GET list", {"params": {"path": "/workspace/evil"}}),
    ("list-unreachable-below", "GET list", {"params": {"path": "/workspace/evil/dir"}}),
    ("stat-unreachable", "GET stat", {"params": {"path": "/workspace/evil/victim"}}),
    ("exists-unreachable", "GET exists", {"params": {"path": "/workspace/evil/victim"}}),
    ("watch-unreachable", "GET watch", {"params": {"path": "/workspace/evil"}}),
    ("watch-unreachable-below", "GET watch", {"params": {"path": "/workspace/chain/hop/dir"}}),
    ("watch-tree-unreadable", "GET watch", {"params": {"path": "/workspace/ro/tree", "recursive": "true"}}),
]


@pytest.mark.parametrize(("name", "verb", "request_args"), ATTACKS, ids=[a[0] for a in ATTACKS])
def test_attack_files_api_through_a_users_symlink_is_refused(
    api: httpx.Client, planted: dict[str, Any], name: str, verb: str, request_args: dict[str, Any]
) -> None:
    before = root_view(api, planted["id"])
    method, _, action = verb.partition(" ")
    url = files(planted) + (f"/{action}" if action else "")
    response = api.request(method, url, **request_args)
    body = assert_error(response, 403, "PERMISSION_DENIED")
    assert "symlink" in body["message"] and "uid 1000" in body["message"], body
    assert planted["marker"] not in response.text
    assert root_view(api, planted["id"]) == before, f"{name} changed a root-only place"
    leftovers = sh(api, planted["id"], "ls -a /workspace /root /workspace/rootonly", user="root")["stdout"]
    assert "planted" not in leftovers and ".ws-upload-" not in leftovers and ".ws-copy-" not in leftovers
    assert "stolen" not in leftovers and "made" not in leftovers


def test_legitimate_writes_through_links_and_as_root_keep_working(api: httpx.Client, planted: dict[str, Any]) -> None:
    url = files(planted)
    # A user's link to a directory the user may write: written through, as before.
    ok = api.put(url, params={"path": "/workspace/ok/file"}, content=b"through")
    assert ok.status_code == 200, ok.text
    assert sh(api, planted["id"], "cat /home/user/mine/file")["stdout"] == "through"
    # A link planted by root lends root's authority.
    by_root = api.put(url, params={"path": "/workspace/rootlink/by-root-link"}, content=b"r")
    assert by_root.status_code == 200, by_root.text
    # No link at all: the API acts as root, as it always did.
    direct = api.put(url, params={"path": "/root/direct"}, content=b"d")
    assert direct.status_code == 200, direct.text
    made = api.post(url + "/mkdir", json={"path": "/root/made/deep", "recursive": True})
    assert made.status_code == 200, made.text
    assert api.get(url, params={"path": "/root/secret"}).text == planted["marker"] + "\n"
    # A link at the written path itself is replaced by the file, never followed.
    replaced = api.put(url, params={"path": "/workspace/final"}, content=b"new")
    assert replaced.status_code == 200 and replaced.json()["type"] == "file", replaced.text
    check = sh(
        api, planted["id"], f"grep -c {planted['marker']} /root/.profile-copy; cat /workspace/final", user="root"
    )
    assert check["stdout"] == "1\nnew", check
    # Copying, moving and deleting the user's own things through the user's link.
    assert (
        api.post(url + "/copy", json={"source": "/workspace/mine.txt", "destination": "/workspace/ok/"}).status_code
        == 200
    )
    moved = api.post(url + "/move", json={"source": "/workspace/ok/mine.txt", "destination": "/workspace/ok/moved"})
    assert moved.status_code == 200, moved.text
    assert api.delete(url, params={"path": "/workspace/ok/moved"}).status_code == 204
    # Reading through a link to what the user may read.
    assert api.get(url, params={"path": "/workspace/ro/file"}).text == planted["marker"] + "\n"
    # Metadata through a link to what the user may read; the link itself.
    listed = api.get(url + "/list", params={"path": "/workspace/ro"})
    assert listed.status_code == 200 and {f["name"] for f in listed.json()["files"]} == {"file", "tree"}
    assert all(f["path"].startswith("/workspace/ro/") for f in listed.json()["files"])
    assert api.get(url + "/stat", params={"path": "/workspace/evil"}).json()["type"] == "symlink"
    assert api.get(url + "/exists", params={"path": "/workspace/evil"}).json() == {"exists": True}
    assert api.get(url + "/exists", params={"path": "/workspace/nothing/here"}).json() == {"exists": False}
    # Deleting the planted link itself removes the link, not what it points to.
    assert api.delete(url, params={"path": "/workspace/relative"}).status_code == 204
    assert "victim" in sh(api, planted["id"], "ls /root", user="root")["stdout"]


def test_a_watch_through_a_users_link_to_what_the_user_may_read_names_the_link(
    api: httpx.Client, planted: dict[str, Any]
) -> None:
    """The same rule as a listing: allowed where the user could list, and the events name
    the path the client asked for, not where the link leads."""
    with api.stream("GET", files(planted) + "/watch", params={"path": "/workspace/ok"}, timeout=30) as events:
        assert events.status_code == 200
        lines = events.iter_lines()
        assert next(line for line in lines if line.startswith("event:")) == "event: ready"
        sh(api, planted["id"], "echo hi > /home/user/mine/seen")
        change = next(line for line in lines if line.startswith("data:") and "seen" in line)
    assert '"/workspace/ok/seen"' in change, change
