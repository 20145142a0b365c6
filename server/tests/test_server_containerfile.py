"""domain/containerfile.py: the Containerfile as a plan (no sandbox, no I/O)."""

from __future__ import annotations

import pytest

from workspace_server.domain.containerfile import Step, parse, plan, substitute, words
from workspace_server.domain.errors import InvalidRequest
from workspace_server.domain.models import ImageConfig


def steps(text: str, base: ImageConfig | None = None, build_args: dict[str, str] | None = None) -> list[Step]:
    args = build_args or {}
    return plan(parse(text, args), base or ImageConfig(env={"PATH": "/bin"}), args)


def test_substitution_forms() -> None:
    variables = {"A": "1", "EMPTY": ""}
    assert substitute("$A ${A} ${B:-two} ${A:+alt} ${EMPTY:-fallback} ${B:+x}.", variables) == "1 1 two alt fallback ."
    assert words('a \'b $A\' "c $A" \\$A d\\ e "\\$A"', variables, 1) == ["a", "b $A", "c 1", "$A", "d e", "$A"]
    assert words('x "" y', {}, 1) == ["x", "", "y"]


def test_plan_tracks_env_args_workdir_user_labels() -> None:
    plan_steps = steps(
        'ARG BASE=img:1\nFROM ${BASE}\nARG V=1\nENV HOME_DIR=/srv NAME="a b"\nENV LEGACY spaced value\n'
        'WORKDIR $HOME_DIR\nWORKDIR app\nLABEL k=$V\nRUN echo $V\nUSER user\nRUN ["id"]\nCOPY --chown=user a b ./\n',
        build_args={"V": "2"},
    )
    run = next(s for s in plan_steps if s.kind == "run")
    assert run.argv == ("/bin/sh", "-c", "echo $V") and run.run_user == "root"
    assert run.run_env["V"] == "2" and run.run_env["NAME"] == "a b" and run.run_env["LEGACY"] == "spaced value"
    assert run.config.working_dir == "/srv/app"
    exec_form = [s for s in plan_steps if s.kind == "run"][1]
    assert exec_form.argv == ("id",) and exec_form.run_user == "user"
    copy = plan_steps[-1]
    assert copy.sources == ("a", "b") and copy.destination == "/srv/app/" and copy.chown == "user"
    assert copy.labels == {"k": "2"} and copy.config.user == "user"
    assert "V" not in copy.config.env  # ARGs are never in the image


def test_cache_text_changes_with_what_the_step_sees() -> None:
    one = steps("FROM a\nENV X=1\nRUN true\n")[-1]
    two = steps("FROM a\nENV X=2\nRUN true\n")[-1]
    same = steps("FROM a\nENV X=1\nLABEL unrelated=yes\nRUN true\n")[-1]
    assert one.cache_text() != two.cache_text()
    assert one.cache_text() == same.cache_text()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("RUN true\n", "starts with FROM"),
        ("FROM a\nFROM b\n", "line 2: multi-stage"),
        ("FROM --platform=linux/arm64 a\n", "options"),
        ('FROM a\nCMD ["x"]\n', "line 2: CMD is not supported"),
        ("FROM a\nRUN --mount=type=cache,target=/x true\n", "RUN options"),
        ("FROM a\nCOPY --from=builder /x /y\n", "--from is not supported"),
        ("FROM a\nCOPY ../x /y\n", "outside the build context"),
        ("FROM a\nADD https://example.com/x /y\n", "remote URL"),
        ("FROM a\nUSER nobody\nRUN true\n", "line 3: RUN as user 'nobody'"),
        ("FROM a\nENV 1BAD=x\n", "not a valid variable name"),
        ("FROM a\nRUN echo 'unterminated\n", None),
        ("FROM a\nCOPY onlyone\n", "one or more sources and a destination"),
    ],
)
def test_refusals_name_the_line(text: str, needle: str | None) -> None:
    try:
        steps(text)
    except InvalidRequest as exc:
        assert exc.details.get("field") == "containerfile"
        if needle is not None:
            assert needle in exc.message
    else:
        assert needle is None  # a shell-form RUN is the shell's to parse
