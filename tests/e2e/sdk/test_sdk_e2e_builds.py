"""client.template.build, sync and async, against a live server: a context directory
streamed as a tar, the log delivered to on_log as it is written, the built template
returned; a failing step raises BuildFailedError with its step and exit code."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support import images
from tests.support.cli import run_cli
from tests.support.live_server import LiveServer
from workspace_sdk import (
    AsyncWorkspaceClient,
    BuildFailedError,
    CreateSandboxParams,
    RunCommandOptions,
    TemplateNotFoundError,
    WorkspaceClient,
)


@pytest.fixture(scope="module")
def base(workspace_server: LiveServer, tmp_path_factory: pytest.TempPathFactory) -> str:
    archive = images.busybox_oci_archive(tmp_path_factory.mktemp("images") / "busybox.tar")
    with WorkspaceClient(workspace_server.url) as client:
        client.template.import_image("sdk/build-base:1", archive, replace=True)
    return "sdk/build-base:1"


def context(root: Path, base: str) -> Path:
    (root / "app").mkdir()
    (root / "app" / "hello.sh").write_text("#!/bin/sh\necho hello from the build\n")
    (root / "app" / "hello.sh").chmod(0o755)
    (root / "secret.key").write_text("never sent\n")
    (root / ".containerignore").write_text("*.key\n")
    (root / "Containerfile").write_text(
        f"FROM {base}\nARG WHO\nENV GREETED=$WHO\nWORKDIR /srv\nCOPY app/ ./\nRUN ls /srv && ./hello.sh > out.txt\n"
    )
    return root


def test_sync_build_streams_log_and_returns_template(server_url: str, base: str, tmp_path: Path) -> None:
    log: list[str] = []
    with WorkspaceClient(server_url) as client:
        template = client.template.build(
            "sdk/built:1", context=context(tmp_path, base), build_args={"WHO": "sdk"}, on_log=log.append, replace=True
        )
        assert template.source == "built" and template.env["GREETED"] == "sdk" and template.working_dir == "/srv"
        text = "".join(log)
        assert "hello.sh" in text and "built sdk/built:1" in text
        sandbox = client.sandbox.create(CreateSandboxParams(template="sdk/built:1"))
        try:
            result = client.process.run(sandbox.id, "sh", RunCommandOptions(args=["-c", "cat out.txt; ls"]))
            assert result.stdout.startswith("hello from the build\n")
            assert "secret.key" not in result.stdout  # .containerignore kept it out of the context
        finally:
            client.sandbox.delete(sandbox.id, force=True)
        with pytest.raises(BuildFailedError) as failed:
            client.template.build(
                "sdk/broken:1", containerfile=f"FROM {base}\nRUN echo oops; exit 4\n", context=tmp_path, replace=True
            )
        assert (failed.value.step, failed.value.line, failed.value.exit_code) == (0, 2, 4)
        record = client.template.get_build(str(failed.value.build_id))
        assert record.state == "error" and record.steps[0].exit_code == 4
        client.template.cancel_build(record.id)


def test_async_build_with_containerfile_text(server_url: str, base: str, tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text("async data\n")

    async def scenario() -> None:
        log: list[str] = []
        async with AsyncWorkspaceClient(server_url) as client:
            template = await client.template.build(
                "sdk/built-async:1",
                containerfile=f"FROM {base}\nCOPY data.txt /data.txt\nRUN cat /data.txt\n",
                context=tmp_path,
                on_log=log.append,
                replace=True,
            )
            assert template.name == "sdk/built-async:1" and len(template.layers) == 3
            assert "async data" in "".join(log)
            again = await client.template.build(
                "sdk/built-async:1",
                containerfile=f"FROM {base}\nCOPY data.txt /data.txt\nRUN cat /data.txt\n",
                context=tmp_path,
                replace=True,
            )
            assert again.layers == template.layers  # every step from the cache
            with pytest.raises(TemplateNotFoundError):
                await client.template.build("sdk/x:1", containerfile="FROM no/such:1\n", context=tmp_path)

    asyncio.run(scenario())


def test_cli_build_streams_the_log(server_url: str, base: str, tmp_path: Path) -> None:
    root = tmp_path / "ctx"
    root.mkdir()
    (root / "motd").write_text("from the cli\n")
    containerfile = tmp_path / "Buildfile"  # outside the context: sent beside it
    containerfile.write_text(f"FROM {base}\nCOPY motd /etc/motd\nRUN cat /etc/motd\n")
    result = run_cli(
        server_url, "template", "build", "-f", str(containerfile), str(root), "-t", "cli/built:1", "--replace"
    )
    assert result.returncode == 0, result.stderr
    assert b"from the cli" in result.stderr  # the RUN step's output, streamed
    assert result.stdout.decode().startswith("cli/built:1 sha256:")
    failed = run_cli(server_url, "template", "build", str(root), "-t", "cli/none:1")
    assert failed.returncode != 0 and b"error:" in failed.stderr and b"Containerfile" in failed.stderr
