"""Public data types: what the Workspace API returns and what you pass to it.

Every field the seed README documents is here under the same name; fields added since are
optional with a ``None`` default, so code written against the seed keeps working.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any, Literal, TypeAlias

SandboxState: TypeAlias = Literal["starting", "running", "paused", "stopping", "stopped", "deleting", "error"]
"""Lifecycle state of a sandbox (the state machine: docs/api.md, "Lifecycle")."""

OnTimeout: TypeAlias = Literal["delete", "stop", "pause"]
"""What a sandbox's timeout (and idle timeout) does to it."""

FileType: TypeAlias = Literal["file", "directory", "symlink", "other"]
"""Kind of filesystem entry; ``"other"`` covers devices, sockets and FIFOs."""


@dataclass
class Sandbox:
    """An isolated Linux environment created from a template."""

    id: str
    template: str
    state: SandboxState
    created_at: str
    updated_at: str
    name: str | None = None
    env: dict[str, str] | None = None
    metadata: dict[str, str] | None = None
    nfs_url: str | None = None
    timeout: int | None = None
    error_message: str | None = None
    expires_at: str | None = None
    cpu: float | None = None
    memory_mb: int | None = None
    pids: int | None = None
    disk_mb: int | None = None
    network: bool | None = None
    on_timeout: OnTimeout | None = None
    idle_timeout: int | None = None
    auto_resume: bool | None = None


@dataclass
class CreateSandboxParams:
    """Parameters for ``client.sandbox.create``.

    Fields left as ``None`` are not sent, so the server's defaults apply (the default template,
    its default lifetime and resource limits).
    """

    template: str | None = None
    name: str | None = None
    env: dict[str, str] | None = None
    metadata: dict[str, str] | None = None
    timeout: int | None = None
    """Sandbox lifetime in seconds of running time; when it expires the server deletes the
    sandbox (or stops or pauses it: ``on_timeout``)."""
    cpu: float | None = None
    memory_mb: int | None = None
    pids: int | None = None
    disk_mb: int | None = None
    network: bool | None = None
    on_timeout: OnTimeout | None = None
    """``"delete"`` (the server's default), ``"stop"`` (files kept) or ``"pause"``."""
    idle_timeout: int | None = None
    """Seconds without activity (API calls on the sandbox, PTY traffic, clients following a
    process, CPU use by its processes) after which ``on_timeout`` applies."""
    auto_resume: bool | None = None
    """A command or PTY started on a paused sandbox resumes it first (the server's default);
    with ``False`` it raises ``SandboxPausedError`` instead."""


@dataclass
class ForkSandboxParams:
    """What ``client.sandbox.fork`` changes; fields left as ``None`` keep the source's value.

    The template and ``disk_mb`` are always the source's (the fork's disk is a copy of its disk).
    """

    name: str | None = None
    env: dict[str, str] | None = None
    metadata: dict[str, str] | None = None
    timeout: int | None = None
    on_timeout: OnTimeout | None = None
    idle_timeout: int | None = None
    auto_resume: bool | None = None
    cpu: float | None = None
    memory_mb: int | None = None
    pids: int | None = None
    network: bool | None = None


@dataclass
class RunCommandOptions:
    """Options for ``client.process.run`` and ``client.process.run_stream``.

    ``timeout`` is how long the *command* may run (seconds). When it fires the server kills the
    command's whole process group and ``run`` raises ``ProcessTimeoutError``; ``run_stream``
    ends with an ``ErrorEvent(code="PROCESS_TIMEOUT")``. It is independent of the client's HTTP
    request timeout, which the SDK extends so that the command timeout always fires first.
    """

    args: list[str] | None = None
    env: dict[str, str] | None = None
    cwd: str | None = None
    timeout: float | None = None
    user: str | None = None
    """``"user"`` or ``"root"``; ``None`` uses the sandbox default."""
    stdin: str | None = None
    """Text written to the command's stdin, which is then closed. Without it stdin is
    ``/dev/null``, so commands that read stdin never hang waiting for input."""


@dataclass
class PtyOptions:
    """Options for ``client.pty.connect``."""

    cols: int = 80
    rows: int = 24
    shell: str | None = None
    """Shell to start; ``None`` lets the server choose (``/bin/bash`` when present)."""


@dataclass
class CommandResult:
    """Outcome of a command run to completion. A command killed by signal N exits with 128 + N."""

    exit_code: int
    stdout: str
    stderr: str
    pid: int | None = None
    stdout_truncated: bool = False
    """The server cut stdout at its output limit (``--max-run-output-mb``, counted as JSON)."""
    stderr_truncated: bool = False


# The ``type`` discriminators default to their only legal value (keyword-only, so the seed's
# field order is kept) which lets users build events in tests: ``StdoutEvent(data="x")``.


@dataclass
class StdoutEvent:
    """A chunk of the command's standard output (UTF-8, never splitting a character).

    From a background process (``ProcessHandle``), ``offset`` and ``end`` are the output
    offsets of the bytes it holds: resuming at ``end`` misses nothing and repeats nothing.
    """

    type: Literal["stdout"] = field(default="stdout", kw_only=True)
    data: str
    offset: int | None = None
    end: int | None = None


@dataclass
class StderrEvent:
    """A chunk of the command's standard error (``offset``/``end`` as for ``StdoutEvent``)."""

    type: Literal["stderr"] = field(default="stderr", kw_only=True)
    data: str
    offset: int | None = None
    end: int | None = None


@dataclass
class ExitEvent:
    """The command exited; always the last event of a successful stream.

    From a background process it also says which ``signal`` killed it (``code`` is then
    128 + signal), when it finished, whether its own timeout fired, and the output offset
    at which its output ends (``end``).
    """

    type: Literal["exit"] = field(default="exit", kw_only=True)
    code: int
    signal: int | None = None
    finished_at: str | None = None
    timed_out: bool = False
    end: int | None = None


@dataclass
class DroppedEvent:
    """Output bytes ``[offset, end)`` of a background process were no longer kept when this
    follower reached them (its log keeps only the most recent ``log_bytes``)."""

    type: Literal["dropped"] = field(default="dropped", kw_only=True)
    offset: int
    end: int


@dataclass
class ErrorEvent:
    """The stream failed after the command started (e.g. its timeout fired); always last.

    ``code`` is the server error code, such as ``"PROCESS_TIMEOUT"`` or
    ``"AGENT_NOT_CONNECTED"``.
    """

    type: Literal["error"] = field(default="error", kw_only=True)
    message: str
    code: str | None = None


ProcessEvent: TypeAlias = StdoutEvent | StderrEvent | ExitEvent | ErrorEvent
"""Union of the events ``run_stream`` yields; narrow it with ``event.type``."""

ProcessOutputEvent: TypeAlias = StdoutEvent | StderrEvent | DroppedEvent | ExitEvent | ErrorEvent
"""Union of the events a ``ProcessHandle`` yields when it follows a background process."""

ProcessState: TypeAlias = Literal["running", "exited"]

FileWatchEventType: TypeAlias = Literal["create", "write", "remove", "rename", "chmod", "overflow"]


@dataclass
class FileWatchEvent:
    """A change seen by ``client.filesystem.watch``.

    ``rename`` events carry ``new_path`` (``None`` when the entry left the watched tree; an
    entry moved in is a ``create``). ``overflow`` means changes were lost (the kernel's
    queue was full): ``path`` is ``None`` and ``message`` says so; list the directory again.
    """

    type: FileWatchEventType
    path: str | None
    is_dir: bool = False
    new_path: str | None = None
    message: str | None = None


@dataclass
class FileInfo:
    """Metadata for one filesystem entry inside a sandbox."""

    name: str
    path: str
    type: FileType
    size: int
    modified_at: str | None = None
    mode: str | None = None
    """Permission bits in octal, e.g. ``"0644"``."""


class FileList(list[FileInfo]):
    """A directory's entries, sorted by name: a plain ``list`` of :class:`FileInfo`, which
    also says whether the server stopped at its maximum (``--max-list-entries``)."""

    truncated: bool = False

    def __init__(self, entries: Iterable[FileInfo] = (), truncated: bool = False) -> None:
        super().__init__(entries)
        self.truncated = truncated


@dataclass
class ProcessInfo:
    """A process started through the API (``client.process.list``, ``client.process.get``).

    Background processes (``client.process.start``) are described fully and stay listed
    for a while after they exit (``state == "exited"``, with ``exit_code``); for the others
    (``run``, streams, PTYs) the extra fields are ``None``. ``output_start``/``output_end``
    are the offsets of the output still kept, ``stdin`` whether stdin is still open.
    """

    pid: int
    command: str
    args: list[str] = field(default_factory=list)
    pty: bool = False
    tag: str | None = None
    cwd: str | None = None
    user: str | None = None
    background: bool = False
    started_at: str | None = None
    state: ProcessState = "running"
    exit_code: int | None = None
    signal: int | None = None
    finished_at: str | None = None
    timed_out: bool = False
    stdin: bool = False
    output_start: int | None = None
    output_end: int | None = None


@dataclass
class PtyInfo:
    """A live terminal session (``client.pty.list``)."""

    pty_id: str
    pid: int
    cols: int
    rows: int


@dataclass
class Template:
    """A template sandboxes can be created from (``client.template.list``).

    The built-in templates have only ``name`` and ``description``; image templates (imported,
    snapshots) also carry their digest, layers (bottom to top), size in bytes, creation time,
    ``source`` (``"imported"``, ``"snapshot"``, ...) and the image's ``env``, ``working_dir``
    and ``user`` (commands' defaults).
    """

    name: str
    description: str | None = None
    digest: str | None = None
    layers: list[str] = field(default_factory=list)
    size: int = 0
    created_at: str | None = None
    source: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    working_dir: str | None = None
    user: str | None = None
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class BuildStep:
    """One instruction of a build (``Build.steps``). ``kind`` is ``config`` (ENV, ARG,
    WORKDIR, USER, LABEL), ``run`` or ``copy`` (COPY, ADD); ``cached`` is true when a run or
    copy step's layer came from the server's step cache."""

    index: int
    line: int
    instruction: str
    kind: str
    state: str
    cached: bool | None = None
    layer: str | None = None
    exit_code: int | None = None


@dataclass
class Build:
    """A template build (``client.template.get_build``): ``state`` is ``building``,
    ``ready`` or ``error``; ``error`` is the server's (``code``, ``message``, ``step``,
    ``line``, ``exit_code``)."""

    id: str
    template: str
    base: str
    state: str
    created_at: str | None = None
    steps: list[BuildStep] = field(default_factory=list)
    error: dict[str, Any] | None = None
    digest: str | None = None
    log_bytes: int = 0


LocalPath: TypeAlias = str | os.PathLike[str]
"""A path on the machine running the SDK."""

FileContent: TypeAlias = bytes | bytearray | memoryview | IO[bytes] | Iterable[bytes]
"""What ``WorkspaceClient.filesystem.write`` accepts: bytes, a binary file object, or an
iterable of byte chunks. File objects and iterables are streamed, never read whole."""

AsyncFileContent: TypeAlias = bytes | bytearray | memoryview | IO[bytes] | Iterable[bytes] | AsyncIterable[bytes]
"""What ``AsyncWorkspaceClient.filesystem.write`` accepts: ``FileContent`` or an async
iterable of byte chunks (for instance another sandbox's ``read_stream``)."""
