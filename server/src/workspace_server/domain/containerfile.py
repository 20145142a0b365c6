"""A Containerfile as a build plan: the instructions we build (parsed by dockerfile-parse:
lines, continuations, comments, the escape directive), with ARG and ENV substituted as
container engines do, turned into steps that either change the image's config or run in
a sandbox (RUN, COPY, ADD).

Pure data: no I/O, no framework. Every refusal is an INVALID_REQUEST naming the line."""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

from dockerfile_parse import DockerfileParser  # type: ignore[import-untyped]

from workspace_server.domain.errors import InvalidRequest
from workspace_server.domain.models import ImageConfig

MAX_CONTAINERFILE_BYTES = 1 << 20
SUPPORTED = ("FROM", "RUN", "COPY", "ADD", "ENV", "WORKDIR", "USER", "ARG", "LABEL")
SHELL = ("/bin/sh", "-c")
# The users a build step can run as: our sandboxes run commands as root or as `user`.
RUN_USERS = {
    "": "root",
    "root": "root",
    "0": "root",
    "0:0": "root",
    "user": "user",
    "1000": "user",
    "1000:1000": "user",
}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::([-+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


def _refuse(line: int, message: str) -> InvalidRequest:
    return InvalidRequest(f"Containerfile line {line}: {message}", field="containerfile", line=line)


def substitute(text: str, variables: dict[str, str]) -> str:
    """`$X`, `${X}`, `${X:-default}`, `${X:+alternative}`; an unknown variable is empty."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(4)
        current = variables.get(name, "")
        if match.group(2) == "-":
            return current or substitute(match.group(3), variables)
        if match.group(2) == "+":
            return substitute(match.group(3), variables) if current else ""
        return current

    return _VARIABLE.sub(value, text)


def words(text: str, variables: dict[str, str], line: int) -> list[str]:
    """Split like the engines' shell lexer: whitespace separates, '...' is literal, "..." and
    bare text substitute variables, a backslash escapes the next character."""
    result: list[str] = []
    current: list[str] = []
    pending = False  # a word has started (an empty quoted string is a word)
    i = 0
    while i < len(text):
        char = text[i]
        if char.isspace():
            if pending:
                result.append("".join(current))
                current, pending = [], False
            i += 1
            continue
        pending = True
        if char == "\\" and i + 1 < len(text):
            current.append(text[i + 1])
            i += 2
        elif char == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise _refuse(line, "unterminated single quote")
            current.append(text[i + 1 : end])
            i = end + 1
        elif char == '"':
            j, piece = i + 1, []
            while j < len(text) and text[j] != '"':
                if text[j] == "\\" and j + 1 < len(text) and text[j + 1] in '"\\$':
                    piece.append("\x00" + text[j + 1] if text[j + 1] == "$" else text[j + 1])
                    j += 2
                else:
                    piece.append(text[j])
                    j += 1
            if j >= len(text):
                raise _refuse(line, "unterminated double quote")
            current.append(_expand("".join(piece), variables))
            i = j + 1
        else:
            j = i
            while j < len(text) and not text[j].isspace() and text[j] not in "'\"\\":
                j += 1
            current.append(_expand(text[i:j], variables))
            i = j
    if pending:
        result.append("".join(current))
    return result


def _expand(text: str, variables: dict[str, str]) -> str:
    # "\x00$" marks an escaped dollar: kept literal.
    return substitute(text.replace("\x00$", "\x01"), variables).replace("\x01", "$")


def key_values(text: str, variables: dict[str, str], line: int, instruction: str) -> list[tuple[str, str]]:
    """`K=V K2="v 2"`, or the legacy `K value with spaces` (ENV and LABEL)."""
    parts = words(text, variables, line)
    if not parts:
        raise _refuse(line, f"{instruction} needs at least one KEY=value")
    if "=" not in parts[0]:
        if instruction == "ARG":
            return [(parts[0], "")] if len(parts) == 1 else _bad_pairs(line, instruction)
        if len(parts) < 2:
            raise _refuse(line, f"{instruction} {parts[0]} needs a value")
        legacy = text.strip().split(None, 1)[1]
        return [(parts[0], " ".join(words(legacy, variables, line)))]
    pairs = []
    for part in parts:
        key, sep, value = part.partition("=")
        if not sep or not key:
            return _bad_pairs(line, instruction)
        pairs.append((key, value))
    return pairs


def _bad_pairs(line: int, instruction: str) -> list[tuple[str, str]]:
    raise _refuse(line, f"{instruction} takes KEY=value pairs")


@dataclass(frozen=True)
class Instruction:
    line: int  # 1-based, where it starts
    name: str  # upper case
    value: str  # after the instruction word, continuations joined
    text: str  # as written, for logs and the build record


@dataclass(frozen=True)
class Step:
    """One instruction of the plan. `kind` is `config` (ENV, WORKDIR, USER, LABEL, ARG: no
    sandbox), `run` or `copy` (COPY and ADD): those two each make a layer."""

    index: int
    line: int
    text: str
    kind: str
    config: ImageConfig  # the image's config after this step
    labels: dict[str, str] = field(default_factory=dict)
    argv: tuple[str, ...] = ()
    run_env: dict[str, str] = field(default_factory=dict)  # ENV plus the ARGs in scope (RUN only)
    run_user: str = "root"  # what our sandboxes call the user: root or user
    sources: tuple[str, ...] = ()
    destination: str = ""
    chown: str | None = None
    extract_archives: bool = False  # ADD: a local tar archive is unpacked at the destination

    def cache_text(self) -> str:
        """What the step's cache key holds besides the parent and the context files: the step
        as it will execute, with everything that changes its result."""
        return json.dumps(
            {
                "kind": self.kind,
                "argv": self.argv,
                "env": sorted(self.run_env.items()),
                "user": self.run_user,
                "cwd": self.config.working_dir,
                "sources": self.sources,
                "destination": self.destination,
                "chown": self.chown,
                "add": self.extract_archives,
            },
            sort_keys=True,
        )


@dataclass(frozen=True)
class Containerfile:
    base: str  # the FROM reference, ARGs substituted
    instructions: tuple[Instruction, ...]  # after FROM
    base_line: int


def parse(text: str, build_args: dict[str, str]) -> Containerfile:
    if len(text.encode()) > MAX_CONTAINERFILE_BYTES:
        raise InvalidRequest(f"the Containerfile is over {MAX_CONTAINERFILE_BYTES} bytes", field="containerfile")
    if "\x00" in text:
        raise InvalidRequest("the Containerfile holds a NUL byte", field="containerfile")
    parser = DockerfileParser(fileobj=_Blank(), cache_content=True, env_replace=False)
    parser.content = text
    structure: list[dict[str, Any]] = parser.structure
    instructions = [
        Instruction(int(i["startline"]) + 1, str(i["instruction"]).upper(), str(i["value"]), str(i["content"]).strip())
        for i in structure
        if str(i["instruction"]).upper() != "COMMENT"
    ]
    global_args: dict[str, str] = {}
    index = 0
    while index < len(instructions) and instructions[index].name == "ARG":  # ARGs before FROM feed FROM only
        for key, value in key_values(instructions[index].value, global_args, instructions[index].line, "ARG"):
            global_args[key] = build_args.get(key, value)
        index += 1
    if index >= len(instructions) or instructions[index].name != "FROM":
        line = instructions[index].line if index < len(instructions) else 1
        raise _refuse(line, "a Containerfile starts with FROM (after optional ARGs)")
    source = instructions[index]
    base_words = words(source.value, global_args, source.line)
    if not base_words or base_words[0].startswith("--"):
        raise _refuse(source.line, "FROM takes a template name (FROM options such as --platform are not supported)")
    if len(base_words) not in (1, 3) or (len(base_words) == 3 and base_words[1].upper() != "AS"):
        raise _refuse(source.line, "FROM takes a template name, optionally `AS name`")
    rest = instructions[index + 1 :]
    for instruction in rest:
        if instruction.name == "FROM":
            raise _refuse(instruction.line, "multi-stage builds (a second FROM) are not supported")
        if instruction.name not in SUPPORTED:
            raise _refuse(
                instruction.line,
                f"{instruction.name} is not supported in builds (supported: {', '.join(SUPPORTED)})",
            )
    return Containerfile(base_words[0], tuple(rest), source.line)


class _Blank:
    """dockerfile-parse wants a file object to hold the content; ours lives in memory."""

    def __init__(self) -> None:
        self.data = b""

    def read(self) -> bytes:
        return self.data

    def seek(self, offset: int) -> None:
        pass

    def truncate(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


def plan(containerfile: Containerfile, base: ImageConfig, build_args: dict[str, str]) -> list[Step]:
    """The steps, each with the config it leaves. Unknown `build_args` are ignored (as
    engines do, with a warning they log)."""
    env = dict(base.env)
    working_dir = base.working_dir or "/"
    user = base.user or ""
    args: dict[str, str] = {}
    labels: dict[str, str] = {}
    steps: list[Step] = []
    for instruction in containerfile.instructions:
        line, name = instruction.line, instruction.name
        variables = {**args, **env}  # ENV wins over ARG, as in the engines
        kind, extra = "config", {}
        if name == "ENV":
            for key, value in key_values(instruction.value, variables, line, name):
                _check_name(key, line, name)
                env[key] = value
        elif name == "ARG":
            for key, value in key_values(instruction.value, variables, line, name):
                _check_name(key, line, name)
                args[key] = build_args.get(key, value)
        elif name == "LABEL":
            for key, value in key_values(instruction.value, variables, line, name):
                labels[key] = value
        elif name == "WORKDIR":
            parts = words(instruction.value, variables, line)
            if len(parts) != 1:
                raise _refuse(line, "WORKDIR takes one path")
            working_dir = posixpath.normpath(posixpath.join(working_dir, parts[0]))
        elif name == "USER":
            parts = words(instruction.value, variables, line)
            if len(parts) != 1:
                raise _refuse(line, "USER takes one user[:group]")
            user = parts[0]
        elif name == "RUN":
            kind = "run"
            if user not in RUN_USERS:
                raise _refuse(
                    line,
                    f"RUN as user {user!r} is not supported: build steps run as root (USER root) or as "
                    "user (uid 1000, USER user)",
                )
            extra = {
                "argv": _run_argv(instruction.value, line),
                "run_env": {**args, **env},
                "run_user": RUN_USERS[user],
            }
        elif name in ("COPY", "ADD"):
            kind = "copy"
            extra = _copy(instruction.value, variables, working_dir, line, name)
        steps.append(
            Step(
                index=len(steps),
                line=line,
                text=instruction.text,
                kind=kind,
                config=ImageConfig(env=dict(env), working_dir=working_dir, user=user or None),
                labels=dict(labels),
                **extra,  # type: ignore[arg-type]
            )
        )
    return steps


def _check_name(key: str, line: int, instruction: str) -> None:
    if not _NAME.match(key):
        raise _refuse(line, f"{instruction} name {key!r} is not a valid variable name")


def _run_argv(value: str, line: int) -> tuple[str, ...]:
    stripped = value.strip()
    if not stripped:
        raise _refuse(line, "RUN needs a command")
    if stripped.startswith("--"):
        raise _refuse(line, "RUN options (--mount, --network, ...) are not supported")
    if stripped.startswith("["):
        try:
            argv = json.loads(stripped)
        except ValueError:
            argv = None  # not JSON: the shell form, as the engines read it
        if isinstance(argv, list):
            if not argv or not all(isinstance(a, str) for a in argv):
                raise _refuse(line, "RUN's exec form is a JSON list of strings")
            return tuple(argv)
    return (*SHELL, stripped)


def _copy(value: str, variables: dict[str, str], working_dir: str, line: int, name: str) -> dict[str, Any]:
    parts = words(value, variables, line)
    chown = None
    while parts and parts[0].startswith("--"):
        option = parts.pop(0)
        if option.startswith("--chown="):
            chown = option.removeprefix("--chown=")
            if not chown:
                raise _refuse(line, "--chown needs user[:group]")
        else:
            raise _refuse(line, f"{name} option {option.split('=')[0]} is not supported (only --chown)")
    if len(parts) < 2:
        raise _refuse(line, f"{name} takes one or more sources and a destination")
    *sources, destination = parts
    for source in sources:
        if "://" in source or source.startswith("git@"):
            raise _refuse(line, f"{name} of a remote URL ({source}) is not supported: put the file in the context")
        relative = posixpath.normpath(source.lstrip("/") or ".")
        if relative == ".." or relative.startswith("../"):
            raise _refuse(line, f"{name} source {source!r} lies outside the build context")
    resolved = posixpath.join(working_dir, destination)
    # A trailing slash (or several sources) means "into this directory".
    directory = destination.endswith("/") or len(sources) > 1
    destination = posixpath.normpath(resolved) + ("/" if directory and resolved != "/" else "")
    return {
        "sources": tuple(posixpath.normpath(s.lstrip("/") or ".") for s in sources),
        "destination": destination,
        "chown": chown,
        "extract_archives": name == "ADD",
    }
