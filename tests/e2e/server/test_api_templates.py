"""Image templates over the API: import real archives (an OCI archive of Debian's
busybox-static, a docker-save archive, a podman-saved image), run sandboxes from them, and
every kind of bad input refused with a stable code and nothing left behind."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import images
from tests.support.images import Entry, Image, layer_tar
from tests.support.live_server import LiveServer, data_root, start_server, stop_server


def import_archive(api: httpx.Client, archive: Path, name: str, **params: Any) -> httpx.Response:
    with open(archive, "rb") as body:
        return api.post(
            "/templates/import",
            params={"name": name, **params},
            content=body,
            headers={"content-type": "application/octet-stream"},
            timeout=120,
        )


def run(api: httpx.Client, sandbox_id: str, command: str, *args: str, **fields: Any) -> dict[str, Any]:
    response = api.post(
        f"/sandboxes/{sandbox_id}/processes/run", json={"command": command, "args": list(args), **fields}
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


@pytest.fixture(scope="module")
def busybox(api_module: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The no-Python image, imported once for the module."""
    archive = images.oci_archive(
        Image([images.busybox_layer()], working_dir="/srv", env=["PATH=/bin", "IMAGE_GREETING=hello from the image"]),
        tmp_path_factory.mktemp("images") / "busybox.tar",
    )
    response = import_archive(api_module, archive, "test/busybox:1", replace="true")
    assert response.status_code == 201, response.text
    return "test/busybox:1"


@pytest.fixture(scope="module")
def api_module(workspace_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=workspace_server.url + "/api/v1", timeout=60) as client:
        yield client


@pytest.fixture
def image_sandbox(api: httpx.Client, busybox: str) -> Iterator[dict[str, Any]]:
    response = api.post("/sandboxes", json={"template": busybox})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    yield created
    api.delete(f"/sandboxes/{created['id']}", params={"force": "true"})


def test_imported_template_is_recorded(api: httpx.Client, busybox: str) -> None:
    template = api.get(f"/templates/{busybox}").json()
    assert template["name"] == busybox
    assert template["source"] == "imported"
    assert template["digest"].startswith("sha256:")
    assert len(template["layers"]) == 1 and template["layers"][0].startswith("sha256:")
    assert template["size"] > 1_000_000  # busybox itself
    assert template["env"]["IMAGE_GREETING"] == "hello from the image"
    assert template["working_dir"] == "/srv"
    assert template["created_at"].endswith("Z")
    assert busybox in [t["name"] for t in api.get("/templates").json()["templates"]]
    assert api.get("/templates/default").json()["source"] == "builtin"


def test_commands_run_in_an_image_without_python(api: httpx.Client, image_sandbox: dict[str, Any]) -> None:
    sandbox_id = image_sandbox["id"]
    assert run(api, sandbox_id, "id")["stdout"].startswith("uid=1000(user) gid=1000(user)")
    assert run(api, sandbox_id, "id", "-u", user="root")["stdout"].strip() == "0"
    # No Python in the image: the agent runs on a hidden interpreter that commands never see.
    probe = run(api, sandbox_id, "sh", "-c", "ls /usr/bin/python3 /bin/python3 2>&1; env")
    assert "No such file" in probe["stdout"]
    assert "WORKSPACE_AGENT" not in probe["stdout"] and "LD_" not in probe["stdout"]
    assert run(api, sandbox_id, "sh", "-c", "echo $HOME; test -d /workspace && echo ws")["stdout"].split() == [
        "/home/user",
        "ws",
    ]


def test_image_env_and_workdir_are_defaults_that_requests_override(
    api: httpx.Client, busybox: str, image_sandbox: dict[str, Any]
) -> None:
    sandbox_id = image_sandbox["id"]
    result = run(api, sandbox_id, "sh", "-c", "echo $IMAGE_GREETING; pwd")
    assert result["stdout"].splitlines() == ["hello from the image", "/srv"]
    result = run(api, sandbox_id, "sh", "-c", "echo $IMAGE_GREETING; pwd", env={"IMAGE_GREETING": "mine"}, cwd="/tmp")
    assert result["stdout"].splitlines() == ["mine", "/tmp"]
    created = api.post("/sandboxes", json={"template": busybox, "env": {"IMAGE_GREETING": "sandbox"}}).json()
    try:
        assert run(api, created["id"], "sh", "-c", "echo $IMAGE_GREETING")["stdout"] == "sandbox\n"
    finally:
        api.delete(f"/sandboxes/{created['id']}", params={"force": "true"})


def test_files_and_root_changes_stay_in_the_sandbox(
    api: httpx.Client, busybox: str, image_sandbox: dict[str, Any]
) -> None:
    sandbox_id = image_sandbox["id"]
    assert (
        api.put(f"/sandboxes/{sandbox_id}/files", params={"path": "/workspace/a.txt"}, content=b"data").status_code
        == 200
    )
    assert run(api, sandbox_id, "cat", "/workspace/a.txt")["stdout"] == "data"
    run(api, sandbox_id, "sh", "-c", "echo changed > /etc/motd && rm /bin/vi", user="root")
    assert api.get(f"/sandboxes/{sandbox_id}/files", params={"path": "/etc/motd"}).content == b"changed\n"
    other = api.post("/sandboxes", json={"template": busybox}).json()
    try:  # the template's files are shared read-only: another sandbox sees the originals
        assert run(api, other["id"], "cat", "/etc/motd")["stdout"] == "busybox image\n"
        assert run(api, other["id"], "ls", "/bin/vi")["exit_code"] == 0
    finally:
        api.delete(f"/sandboxes/{other['id']}", params={"force": "true"})
    # A user cannot change what belongs to root in the image.
    assert run(api, sandbox_id, "sh", "-c", "echo x > /bin/evil")["exit_code"] != 0


def test_root_changes_survive_stop_and_start_and_are_forked(
    api: httpx.Client, busybox: str, image_sandbox: dict[str, Any]
) -> None:
    """The overlay's upper layer lives on the sandbox's disk: kept by a stop, copied by a fork."""
    sandbox_id = image_sandbox["id"]
    run(api, sandbox_id, "sh", "-c", "echo changed > /etc/motd && rm /bin/vi && mkdir /opt/new", user="root")
    for operation in ("stop", "start", "stop", "start"):
        response = api.post(f"/sandboxes/{sandbox_id}/{operation}")
        assert response.status_code == 200, response.text
    check = "cat /etc/motd; ls /bin/vi 2>/dev/null || echo no-vi; ls -d /opt/new; id -u"
    expected = "changed\nno-vi\n/opt/new\n0\n"
    assert run(api, sandbox_id, "sh", "-c", check, user="root")["stdout"] == expected
    fork = api.post(f"/sandboxes/{sandbox_id}/fork")
    assert fork.status_code == 201, fork.text
    try:
        assert fork.json()["template"] == busybox
        assert run(api, fork.json()["id"], "sh", "-c", check, user="root")["stdout"] == expected
        run(api, fork.json()["id"], "sh", "-c", "echo fork > /etc/motd", user="root")
        assert run(api, sandbox_id, "cat", "/etc/motd")["stdout"] == "changed\n"
    finally:
        api.delete(f"/sandboxes/{fork.json()['id']}", params={"force": "true"})


def test_pty_in_an_image(workspace_server: LiveServer, image_sandbox: dict[str, Any]) -> None:
    from websockets.sync.client import connect

    url = workspace_server.url.replace("http", "ws") + f"/api/v1/sandboxes/{image_sandbox['id']}/pty?shell=/bin/sh"
    with connect(url) as socket:
        ready = socket.recv(timeout=10)
        assert '"ready"' in str(ready)
        socket.send(b"echo pty-$((6*7))\n")
        seen = b""
        while b"pty-42" not in seen:
            frame = socket.recv(timeout=10)
            seen += frame if isinstance(frame, bytes) else frame.encode()


def test_docker_archive_layers_and_whiteouts(api: httpx.Client, tmp_path: Path) -> None:
    top = layer_tar(
        [
            Entry("etc/.wh.motd", b""),
            Entry("home/added.txt", b"from layer two"),
            Entry("bin/.wh..wh..opq", b""),
            Entry("bin/busybox", images.BUSYBOX.read_bytes(), mode=0o755),
            Entry("bin/sh", kind=tarfile.SYMTYPE, link="busybox"),
            Entry("bin/cat", kind=tarfile.SYMTYPE, link="busybox"),
            Entry("bin/ls", kind=tarfile.SYMTYPE, link="busybox"),
            Entry("bin/true", kind=tarfile.SYMTYPE, link="busybox"),
        ]
    )
    archive = images.docker_archive(Image([images.busybox_layer(), top]), tmp_path / "docker.tar")
    response = import_archive(api, archive, "test/docker-save", replace="true")
    assert response.status_code == 201, response.text
    assert len(response.json()["layers"]) == 2
    created = api.post("/sandboxes", json={"template": "test/docker-save"}).json()
    try:
        sandbox_id = created["id"]
        assert run(api, sandbox_id, "cat", "/home/added.txt")["stdout"] == "from layer two"
        assert run(api, sandbox_id, "ls", "/etc/motd")["exit_code"] != 0  # whited out
        assert sorted(run(api, sandbox_id, "ls", "/bin")["stdout"].split()) == ["busybox", "cat", "ls", "sh", "true"]
    finally:
        api.delete(f"/sandboxes/{created['id']}", params={"force": "true"})
    assert api.delete("/templates/test/docker-save").status_code == 204


@pytest.mark.skipif(shutil.which("podman") is None, reason="podman is not installed")
def test_podman_saved_image(api: httpx.Client, tmp_path: Path) -> None:
    context = tmp_path / "context"
    context.mkdir()
    shutil.copy(images.BUSYBOX, context / "busybox")
    (context / "Containerfile").write_text(
        'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n'
        "RUN mkdir -p /data && echo podman-built > /data/marker\nENV BUILT_BY=podman\nWORKDIR /data\n"
    )
    tag = f"localhost/ws-test-podman:{tmp_path.name[-8:]}"
    try:
        subprocess.run(
            ["podman", "build", "-q", "--network=none", "-t", tag, str(context)], check=True, capture_output=True
        )
        subprocess.run(["podman", "save", "-o", str(tmp_path / "podman.tar"), tag], check=True, capture_output=True)
    finally:
        subprocess.run(["podman", "rmi", "-f", tag], capture_output=True, check=False)
    response = import_archive(api, tmp_path / "podman.tar", "test/podman", replace="true")
    assert response.status_code == 201, response.text
    assert response.json()["env"]["BUILT_BY"] == "podman"
    created = api.post("/sandboxes", json={"template": "test/podman"}).json()
    try:
        result = run(api, created["id"], "sh", "-c", "cat marker; echo $BUILT_BY")
        assert result["stdout"] == "podman-built\npodman\n"
    finally:
        api.delete(f"/sandboxes/{created['id']}", params={"force": "true"})
    assert api.delete("/templates/test/podman").status_code == 204


# ---------------------------------------------------------------------- bad input
BAD_LAYERS: dict[str, tuple[list[Entry], str]] = {
    "dotdot": ([Entry("../escape", b"x")], "unsafe_path"),
    "absolute": ([Entry("/etc/escape", b"x")], "unsafe_path"),
    "symlink-outside": ([Entry("a/b", kind=tarfile.SYMTYPE, link="../../../etc")], "unsafe_link"),
    "through-symlink": (
        [Entry("etc", kind=tarfile.SYMTYPE, link="/etc"), Entry("etc/escape", b"x")],
        "unsafe_path",
    ),
    "hardlink-outside": ([Entry("x", kind=tarfile.LNKTYPE, link="../../etc/passwd")], "unsafe_path"),
    "hardlink-missing": ([Entry("x", kind=tarfile.LNKTYPE, link="etc/shadow")], "unsafe_link"),
    "device-node": ([Entry("dev/sda", kind=tarfile.BLKTYPE)], "device_node"),
    "char-device": ([Entry("dev/mem", kind=tarfile.CHRTYPE)], "device_node"),
}


def store_state(server: LiveServer) -> tuple[list[str], list[str]]:
    templates = server.data_dir / "templates"
    return sorted(p.name for p in (templates / "layers").iterdir()), sorted(
        p.name for p in (templates / "scratch").iterdir()
    )


@pytest.mark.parametrize("case", sorted(BAD_LAYERS))
def test_unsafe_layers_are_refused(api: httpx.Client, workspace_server: LiveServer, tmp_path: Path, case: str) -> None:
    entries, reason = BAD_LAYERS[case]
    before = store_state(workspace_server)
    archive = images.oci_archive(Image([images.busybox_layer(), layer_tar(entries)]), tmp_path / "bad.tar")
    response = import_archive(api, archive, f"test/bad-{case}")
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "INVALID_IMAGE"
    assert response.json()["details"]["reason"] == reason
    assert store_state(workspace_server)[1] == []  # no work left behind
    assert set(store_state(workspace_server)[0]) <= set(before[0]) | {
        images.sha256(images.busybox_layer()).split(":")[1]
    }  # the good layer below may stay (garbage-collected later); the bad one never
    assert api.get(f"/templates/test/bad-{case}").json()["code"] == "TEMPLATE_NOT_FOUND"


@pytest.mark.parametrize(
    ("case", "status", "code", "reason"),
    [
        ("digest-mismatch", 400, "INVALID_IMAGE", "digest_mismatch"),
        ("broken-gzip", 400, "INVALID_IMAGE", "corrupt"),
        ("truncated", 400, "INVALID_IMAGE", "corrupt"),
        ("not-a-tar", 400, "INVALID_IMAGE", "unknown_format"),
        ("no-manifest", 400, "INVALID_IMAGE", "unknown_format"),
        ("unknown-media-type", 400, "INVALID_IMAGE", "unsupported_media_type"),
        ("empty", 400, "INVALID_REQUEST", None),
    ],
)
def test_broken_archives_are_refused(
    api: httpx.Client,
    workspace_server: LiveServer,
    tmp_path: Path,
    case: str,
    status: int,
    code: str,
    reason: str | None,
) -> None:
    path = tmp_path / "bad.tar"
    good = Image([layer_tar([Entry("hello.txt", b"hello")])])
    if case == "digest-mismatch":
        images.oci_archive(good, path, corrupt_blob=True)
    elif case == "broken-gzip":
        images.oci_archive(good, path, broken_gzip=True)
    elif case == "truncated":
        data = images.oci_archive(Image([images.busybox_layer()]), tmp_path / "whole.tar").read_bytes()
        path.write_bytes(data[: len(data) // 2])  # inside the busybox layer's blob
    elif case == "not-a-tar":
        path.write_bytes(b"this is not an archive\n" * 100)
    elif case == "no-manifest":
        path.write_bytes(layer_tar([Entry("hello.txt", b"hello")]))
    elif case == "unknown-media-type":
        good.layer_media_type = "application/vnd.example.layer"
        images.oci_archive(good, path)
    else:
        path.write_bytes(b"")
    response = import_archive(api, path, f"test/broken-{case}")
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    if reason is not None:
        assert response.json()["details"]["reason"] == reason
    assert store_state(workspace_server)[1] == []
    assert (
        images.sha256(layer_tar([Entry("hello.txt", b"hello")])).split(":")[1] not in store_state(workspace_server)[0]
    )


@pytest.mark.parametrize("name", ["UPPER", "a b", "../x", "x:", ":tag", "a//b", "-lead", "x" * 300, "name:bad tag"])
def test_invalid_names_are_refused(api: httpx.Client, tmp_path: Path, name: str) -> None:
    archive = images.oci_archive(Image([layer_tar([Entry("f", b"x")])]), tmp_path / "a.tar")
    response = import_archive(api, archive, name)
    assert response.status_code in (400, 422), response.text
    assert response.json()["code"] == "INVALID_REQUEST"


def test_existing_name_conflicts_unless_replaced(api: httpx.Client, tmp_path: Path) -> None:
    first = images.oci_archive(Image([layer_tar([Entry("version", b"1")])]), tmp_path / "1.tar")
    second = images.oci_archive(Image([layer_tar([Entry("version", b"2")])]), tmp_path / "2.tar")
    assert import_archive(api, first, "test/conflict", replace="true").status_code == 201
    response = import_archive(api, second, "test/conflict:latest")
    assert response.status_code == 409 and response.json()["code"] == "TEMPLATE_EXISTS"
    for builtin in ("default", "workspace-test:latest", "workspace-test"):
        assert import_archive(api, second, builtin).json()["code"] == "TEMPLATE_EXISTS"
    replaced = import_archive(api, second, "test/conflict", replace="true")
    assert replaced.status_code == 201
    assert replaced.json()["layers"] == [images.sha256(layer_tar([Entry("version", b"2")]))]
    assert api.delete("/templates/test/conflict").status_code == 204


def test_delete_in_use_conflicts_then_layers_are_collected(
    api: httpx.Client, workspace_server: LiveServer, tmp_path: Path
) -> None:
    unique = layer_tar([Entry("unique-to-this-test", tmp_path.name.encode())])
    archive = images.oci_archive(Image([images.busybox_layer(), unique]), tmp_path / "a.tar")
    assert import_archive(api, archive, "test/in-use", replace="true").status_code == 201
    created = api.post("/sandboxes", json={"template": "test/in-use"}).json()
    response = api.delete("/templates/test/in-use")
    assert response.status_code == 409
    assert response.json()["code"] == "TEMPLATE_IN_USE"
    assert created["id"] in response.json()["details"]["sandboxes"]
    api.delete(f"/sandboxes/{created['id']}", params={"force": "true"})
    assert api.delete("/templates/test/in-use").status_code == 204
    assert images.sha256(unique).split(":")[1] not in store_state(workspace_server)[0]
    assert api.get("/templates/test/in-use").json()["code"] == "TEMPLATE_NOT_FOUND"
    assert api.delete("/templates/default").json()["code"] == "INVALID_REQUEST"


def test_images_over_the_maximum_size_are_refused(tmp_path: Path) -> None:
    root = data_root()
    server = start_server(root / "data", extra=["--pool-size", "0", "--max-image-mb", "1"])
    try:
        big = layer_tar([Entry("big", b"\0" * (3 * 1024 * 1024))])  # compresses to almost nothing
        with httpx.Client(base_url=server.url + "/api/v1", timeout=60) as client:
            for image in (Image([big], compress=False), Image([big])):
                archive = images.oci_archive(image, tmp_path / "big.tar")
                response = import_archive(client, archive, "big")
                assert response.status_code == 413, response.text
                assert response.json()["code"] == "IMAGE_TOO_LARGE"
                assert store_state(server) == ([], [])
    finally:
        stop_server(server)
        shutil.rmtree(root, ignore_errors=True)


def test_commands_survive_a_killed_spawner_in_an_image(api: httpx.Client, image_sandbox: dict[str, Any]) -> None:
    """The slow path (the agent starts commands itself, through choom) and the restarted
    spawner (a fresh interpreter) both run on the host's interpreter, not the image's."""
    sandbox_id = image_sandbox["id"]
    # The user's own agent.py processes: the spawner (the agent itself runs as sandbox root).
    find = (
        "for p in /proc/[0-9]*; do [ -O $p ] && grep -q 'agent[.]py' $p/cmdline 2>/dev/null && echo ${p#/proc/}; done"
    )
    spawners = run(api, sandbox_id, "sh", "-c", find)["stdout"].split()
    assert spawners
    # Started by the spawner it kills: the answer may be that the spawner exited.
    api.post(f"/sandboxes/{sandbox_id}/processes/run", json={"command": "kill", "args": ["-9", *spawners]})
    for _ in range(20):
        for _attempt in range(5):  # one sent to the spawner as it dies is refused: "retry the command"
            response = api.post(
                f"/sandboxes/{sandbox_id}/processes/run",
                json={"command": "sh", "args": ["-c", "id -u; cat /proc/self/oom_score_adj"]},
            )
            if "retry the command" not in response.text:
                break
            time.sleep(0.2)
        assert response.status_code == 200, response.text
        assert response.json()["stdout"].split() == ["1000", "500"], response.text
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        respawned = run(api, sandbox_id, "sh", "-c", find)["stdout"].split()
        if respawned and not set(respawned) & set(spawners):
            break
        time.sleep(0.2)
    else:
        raise AssertionError("no new spawner started")


def test_snapshot_then_a_sandbox_from_it(api: httpx.Client, busybox: str, image_sandbox: dict[str, Any]) -> None:
    sandbox_id = image_sandbox["id"]
    assert (
        api.put(f"/sandboxes/{sandbox_id}/files", params={"path": "/workspace/notes.txt"}, content=b"kept").status_code
        == 200
    )
    run(
        api,
        sandbox_id,
        "sh",
        "-c",
        "echo snapshot > /etc/motd; rm /bin/vi; mkdir -p /opt/tool && echo t > /opt/tool/x",
        user="root",
    )
    run(api, sandbox_id, "sh", "-c", "sleep 30 & echo started")  # a process that is frozen meanwhile
    response = api.post(f"/sandboxes/{sandbox_id}/snapshot", json={"name": "test/snap", "replace": True})
    assert response.status_code == 201, response.text
    snap = response.json()
    assert snap["source"] == "snapshot"
    parent = api.get(f"/templates/{busybox}").json()
    assert snap["layers"][:-1] == parent["layers"] and len(snap["layers"]) == len(parent["layers"]) + 1
    assert snap["env"] == parent["env"]
    assert run(api, sandbox_id, "echo", "still running")["stdout"] == "still running\n"  # thawed
    created = api.post("/sandboxes", json={"template": "test/snap"}).json()
    try:
        child = created["id"]
        assert run(api, child, "cat", "/workspace/notes.txt")["stdout"] == "kept"
        assert run(api, child, "cat", "/etc/motd")["stdout"] == "snapshot\n"
        assert run(api, child, "ls", "/bin/vi")["exit_code"] != 0  # the deletion is a whiteout
        assert run(api, child, "cat", "/opt/tool/x")["stdout"] == "t\n"
        assert run(api, child, "stat", "-c", "%U", "/workspace/notes.txt")["stdout"] == "user\n"  # uids shifted back
        # A snapshot of a snapshot stacks one more layer.
        run(api, child, "sh", "-c", "echo two > /workspace/second")
        again = api.post(f"/sandboxes/{child}/snapshot", json={"name": "test/snap2", "replace": True}).json()
        assert len(again["layers"]) == len(snap["layers"]) + 1
        conflict = api.post(f"/sandboxes/{child}/snapshot", json={"name": "test/snap2"})
        assert conflict.status_code == 409 and conflict.json()["code"] == "TEMPLATE_EXISTS"
        response = api.delete("/templates/test/snap")
        assert response.status_code == 409 and response.json()["code"] == "TEMPLATE_IN_USE"
    finally:
        api.delete(f"/sandboxes/{created['id']}", params={"force": "true"})
    assert api.delete("/templates/test/snap2").status_code == 204
    assert api.delete("/templates/test/snap").status_code == 204


def test_snapshot_of_a_builtin_template_sandbox_is_refused(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    response = api.post(f"/sandboxes/{sandbox['id']}/snapshot", json={"name": "test/nope"})
    assert response.status_code == 400 and response.json()["code"] == "INVALID_REQUEST"
    missing = api.post("/sandboxes/sbx-0000000000000000/snapshot", json={"name": "test/nope"})
    assert missing.status_code == 404 and missing.json()["code"] == "SANDBOX_NOT_FOUND"


def test_warm_pool_of_an_operator_named_template(tmp_path: Path) -> None:
    """`--pool TEMPLATE=N`: filled once the template is imported, serves creates, and is
    refilled from the new layers when the template is replaced."""
    from tests.e2e.reliability.reliability_support import metric_samples

    root = data_root()
    server = start_server(root / "data", extra=["--pool-size", "0", "--pool", "test/pooled=1"])

    def warm() -> float:
        samples = metric_samples(httpx.get(server.url + "/metrics", timeout=10).text)
        return samples.get(("workspace_pool_size", (("template", "test/pooled:latest"),)), 0.0)

    def pool_creates() -> float:
        samples = metric_samples(httpx.get(server.url + "/metrics", timeout=10).text)
        return sum(
            v
            for (name, labels), v in samples.items()
            if name.endswith("create_seconds_count") and ("source", "pool") in labels
        )

    def wait_warm() -> None:
        deadline = time.monotonic() + 30
        while warm() < 1:
            assert time.monotonic() < deadline, "the pool of test/pooled did not fill"
            time.sleep(0.1)

    try:
        with httpx.Client(base_url=server.url + "/api/v1", timeout=60) as client:
            archive = images.busybox_oci_archive(tmp_path / "busybox.tar")
            assert import_archive(client, archive, "test/pooled").status_code == 201
            wait_warm()
            before = pool_creates()
            created = client.post("/sandboxes", json={"template": "test/pooled"}).json()
            assert pool_creates() == before + 1
            assert run(client, created["id"], "cat", "/etc/motd")["stdout"] == "busybox image\n"
            client.delete(f"/sandboxes/{created['id']}", params={"force": "true"})
            wait_warm()
            changed = Image([images.busybox_layer(), layer_tar([Entry("etc/motd", b"replaced\n")])])
            assert (
                import_archive(
                    client, images.oci_archive(changed, tmp_path / "v2.tar"), "test/pooled", replace="true"
                ).status_code
                == 201
            )
            time.sleep(0.5)
            wait_warm()
            created = client.post("/sandboxes", json={"template": "test/pooled"}).json()
            assert run(client, created["id"], "cat", "/etc/motd")["stdout"] == "replaced\n"
            client.delete(f"/sandboxes/{created['id']}", params={"force": "true"})
    finally:
        stop_server(server)
        shutil.rmtree(root, ignore_errors=True)
