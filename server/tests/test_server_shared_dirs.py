from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from workspace_server.runtimes import shared_dirs
from workspace_server.runtimes.runc import build_etc


def write_files(content: str) -> Callable[[Path], None]:
    def build(target: Path) -> None:
        (target / "f").write_text(content)

    return build


def test_publish_is_content_addressed_and_never_changes_in_place(tmp_path: Path) -> None:
    first = shared_dirs.publish(tmp_path, "x", write_files("one"))
    again = shared_dirs.publish(tmp_path, "x", write_files("one"))
    other = shared_dirs.publish(tmp_path, "x", write_files("two"))
    assert first == again != other
    assert (first / "f").read_text() == "one" and (other / "f").read_text() == "two"
    shared_dirs.prune(tmp_path, "x", keep=[other])
    assert not first.exists() and other.exists()


def test_sandbox_etc_is_an_allow_list(tmp_path: Path) -> None:
    host = tmp_path / "host"
    (host / "ssl" / "private").mkdir(parents=True)
    (host / "ssl" / "private" / "key.pem").write_text("secret")
    (host / "ssl" / "openssl.cnf").write_text("cnf")
    (host / "pip.conf").write_text("token")
    (host / "profile").write_text("profile")
    target = tmp_path / "etc"
    target.mkdir()
    build_etc(target, source=host)
    assert (target / "profile").exists() and (target / "ssl" / "openssl.cnf").exists()
    assert not (target / "pip.conf").exists() and not (target / "ssl" / "private").exists()
    assert "user:x:1000:1000" in (target / "passwd").read_text()
