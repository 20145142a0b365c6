"""Request and response bodies of the REST API (the OpenAPI document comes from these)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from workspace_server.domain.builds import Build
from workspace_server.domain.models import OnTimeout, Sandbox, SandboxState, Template

ShortText = Annotated[str, StringConstraints(max_length=256)]
EnvName = Annotated[str, StringConstraints(min_length=1, max_length=256)]
EnvValue = Annotated[str, StringConstraints(max_length=32768)]
PathText = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
Arg = Annotated[str, StringConstraints(max_length=131072)]
MetaValue = Annotated[str, StringConstraints(max_length=4096)]
Timeout = Annotated[int, Field(gt=0, le=30 * 24 * 3600)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class CreateSandboxBody(StrictModel):
    template: ShortText | None = None
    name: ShortText | None = None
    env: Annotated[dict[EnvName, EnvValue], Field(max_length=256)] | None = None
    metadata: Annotated[dict[ShortText, MetaValue], Field(max_length=256)] | None = None
    timeout: Timeout | None = None
    cpu: Annotated[float, Field(gt=0, le=1024)] | None = None
    memory_mb: Annotated[int, Field(gt=0, le=1 << 20)] | None = None
    pids: Annotated[int, Field(gt=0, le=1 << 20)] | None = None
    disk_mb: Annotated[int, Field(gt=0, le=1 << 24)] | None = None
    network: bool | None = None
    on_timeout: Annotated[
        OnTimeout | None, Field(description="What the timeout and the idle timeout do (default delete)")
    ] = None
    idle_timeout: Annotated[
        Timeout | None,
        Field(description="Seconds without activity (API calls, PTY traffic, followers, CPU use) before on_timeout"),
    ] = None
    auto_resume: Annotated[
        bool | None, Field(description="A command or PTY on a paused sandbox resumes it first (default true)")
    ] = None


class ForkSandboxBody(StrictModel):
    """What the fork changes; everything left out is the source's (disk_mb and template
    are always the source's: the copy is of its disk)."""

    name: ShortText | None = None
    env: Annotated[dict[EnvName, EnvValue], Field(max_length=256)] | None = None
    metadata: Annotated[dict[ShortText, MetaValue], Field(max_length=256)] | None = None
    timeout: Timeout | None = None
    on_timeout: OnTimeout | None = None
    idle_timeout: Timeout | None = None
    auto_resume: bool | None = None
    cpu: Annotated[float, Field(gt=0, le=1024)] | None = None
    memory_mb: Annotated[int, Field(gt=0, le=1 << 20)] | None = None
    pids: Annotated[int, Field(gt=0, le=1 << 20)] | None = None
    network: bool | None = None


class SetTimeoutBody(StrictModel):
    timeout: Annotated[Timeout, Field(description="Seconds from now until on_timeout fires")]
    on_timeout: OnTimeout | None = None
    idle_timeout: Annotated[
        int | None, Field(ge=0, le=30 * 24 * 3600, description="A new idle timeout; 0 turns it off")
    ] = None


class SandboxBody(BaseModel):
    id: str
    template: str
    state: SandboxState
    created_at: str
    updated_at: str
    name: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    metadata: dict[str, str] = Field(default_factory=dict)
    nfs_url: str | None = Field(
        None, description="nfs://HOST:PORT/sandboxes/ID: its /workspace over NFSv4 while it runs (server flag --nfs)"
    )
    timeout: int | None = None
    error_message: str | None = None
    expires_at: str | None = None
    cpu: float
    memory_mb: int
    pids: int
    disk_mb: int
    network: bool
    oom_kills: int = Field(0, description="Processes the OOM killer ended in this sandbox (memory_mb reached)")
    on_timeout: OnTimeout = OnTimeout.DELETE
    idle_timeout: int | None = None
    auto_resume: bool = True

    @classmethod
    def of(cls, sandbox: Sandbox) -> SandboxBody:
        expires = None
        if sandbox.expires_at is not None:
            expires = datetime.fromtimestamp(sandbox.expires_at, tz=timezone.utc).isoformat().replace("+00:00", "Z")
        return cls(
            id=sandbox.id,
            template=sandbox.template,
            state=sandbox.state,
            created_at=sandbox.created_at,
            updated_at=sandbox.updated_at,
            name=sandbox.name,
            env=sandbox.env,
            metadata=sandbox.metadata,
            nfs_url=sandbox.nfs_url,
            timeout=sandbox.timeout,
            error_message=sandbox.error_message,
            expires_at=expires,
            cpu=sandbox.limits.cpu,
            memory_mb=sandbox.limits.memory_mb,
            pids=sandbox.limits.pids,
            disk_mb=sandbox.limits.disk_mb,
            network=sandbox.network,
            oom_kills=sandbox.oom_kills,
            on_timeout=sandbox.on_timeout,
            idle_timeout=sandbox.idle_timeout,
            auto_resume=sandbox.auto_resume,
        )


class LifecycleBody(SandboxBody):
    """The sandbox after a lifecycle operation; `changed` is false when it was already in
    the state asked for (a repeated pause, resume, stop or start is harmless)."""

    changed: bool


class SandboxList(BaseModel):
    sandboxes: list[SandboxBody]


class TemplateBody(BaseModel):
    name: str
    description: str
    digest: str | None = Field(None, description="The image's manifest digest (image templates only)")
    layers: list[str] = Field(default_factory=list, description="Layer digests, bottom to top")
    size: int = Field(0, description="Bytes of file content in the layers")
    created_at: str | None = None
    source: Literal["builtin", "imported", "built", "snapshot", "bootstrap"] = "builtin"
    env: dict[str, str] = Field(default_factory=dict, description="The image's Env: defaults for every command")
    working_dir: str | None = Field(None, description="The image's WorkingDir: commands' default cwd")
    user: str | None = Field(None, description="The image's User (commands still run as `user` unless asked)")
    labels: dict[str, str] = Field(default_factory=dict, description="The LABELs of a built template")

    @classmethod
    def of(cls, template: Template) -> TemplateBody:
        return cls(
            name=template.name,
            description=template.description,
            digest=template.digest,
            layers=list(template.layers),
            size=template.size,
            created_at=template.created_at,
            source=template.source,  # type: ignore[arg-type]
            env=dict(template.config.env),
            working_dir=template.config.working_dir,
            user=template.config.user,
            labels=dict(template.labels),
        )


class TemplateList(BaseModel):
    templates: list[TemplateBody]


class BuildStepBody(BaseModel):
    index: int = Field(description="0-based, in the order of the Containerfile (FROM excluded)")
    line: int = Field(description="The Containerfile line the instruction starts on (1-based)")
    instruction: str = Field(description="As written")
    kind: Literal["config", "run", "copy"] = Field(
        description="config: ENV, ARG, WORKDIR, USER, LABEL (no sandbox); run: RUN; copy: COPY, ADD"
    )
    state: Literal["pending", "running", "done", "error"]
    cached: bool | None = Field(None, description="run/copy steps: true if the layer came from the step cache")
    layer: str | None = Field(None, description="The step's layer digest, once made")
    exit_code: int | None = Field(None, description="RUN steps: the command's exit code")
    seconds: float | None = None


class BuildErrorBody(BaseModel):
    code: str = Field(description="BUILD_FAILED, BUILD_TIMEOUT, BUILD_CANCELLED, or another error code")
    message: str
    step: int | None = Field(None, description="The failing step's index")
    line: int | None = Field(None, description="The failing step's Containerfile line")
    exit_code: int | None = Field(None, description="A failing RUN's exit code")


class BuildBody(BaseModel):
    id: str
    template: str = Field(description="The name:tag the build makes")
    base: str = Field(description="The FROM template")
    state: Literal["building", "ready", "error"]
    created_at: str
    updated_at: str
    steps: list[BuildStepBody]
    error: BuildErrorBody | None = None
    digest: str | None = Field(None, description="The template's digest, once ready")
    log_bytes: int = Field(0, description="Bytes of log so far (GET .../logs?offset= reads from any of them)")
    sandbox_id: str | None = Field(None, description="The sandbox running the current step")

    @classmethod
    def of(cls, build: Build) -> BuildBody:
        return cls.model_validate(asdict(build))


class BuildList(BaseModel):
    builds: list[BuildBody]


class SnapshotBody(StrictModel):
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    replace: bool = False
    description: ShortText = ""


class RunCommandBody(StrictModel):
    command: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    args: Annotated[list[Arg], Field(max_length=4096)] = Field(default_factory=list)
    env: Annotated[dict[EnvName, EnvValue], Field(max_length=256)] = Field(default_factory=dict)
    cwd: PathText | None = None
    timeout: Annotated[float, Field(gt=0, le=30 * 24 * 3600)] | None = None
    user: Literal["user", "root"] | None = None
    stdin: Annotated[str, StringConstraints(max_length=1 << 20)] | None = None


class CommandResultBody(BaseModel):
    exit_code: int
    stdout: str
    stderr: str
    pid: int
    stdout_truncated: bool = Field(
        default=False, description="stdout was cut at the server's max-run-output bytes (of its JSON encoding)"
    )
    stderr_truncated: bool = Field(default=False, description="the same for stderr")


class KillBody(StrictModel):
    signal: Annotated[int, Field(ge=1, le=64)] = 15


class StartProcessBody(StrictModel):
    command: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    args: Annotated[list[Arg], Field(max_length=4096)] = Field(default_factory=list)
    env: Annotated[dict[EnvName, EnvValue], Field(max_length=256)] = Field(default_factory=dict)
    cwd: PathText | None = None
    timeout: Annotated[float, Field(gt=0, le=30 * 24 * 3600)] | None = None
    user: Literal["user", "root"] | None = None
    tag: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = Field(
        None, description="Unique among the sandbox's running processes; [A-Za-z0-9._-], not all digits"
    )
    stdin: bool = Field(False, description="Keep stdin open for send_stdin (otherwise it is /dev/null)")
    log_bytes: Annotated[int, Field(ge=64 * 1024, le=1 << 30)] | None = Field(
        None, description="Size of the output log (the most recent bytes are kept)"
    )


class ProcessInfo(BaseModel):
    pid: int
    command: str
    args: list[str]
    pty: bool
    tag: str | None = None
    cwd: str | None = None
    user: str | None = None
    background: bool = False
    started_at: str | None = None
    state: Literal["running", "exited"] = "running"
    exit_code: int | None = None
    signal: int | None = None
    finished_at: str | None = None
    timed_out: bool = False
    stdin: bool = False
    output_start: int | None = None
    output_end: int | None = None


class ProcessList(BaseModel):
    processes: list[ProcessInfo]


class FileInfoBody(BaseModel):
    name: str
    path: str
    type: Literal["file", "directory", "symlink", "other"]
    size: int
    modified_at: str | None = None
    mode: str | None = None


class ListError(BaseModel):
    code: str
    message: str


class FileList(BaseModel):
    files: list[FileInfoBody]
    truncated: bool = Field(
        default=False,
        description="The listing stopped early: at the server's max-list-entries, or because of `error`",
    )
    error: ListError | None = Field(
        default=None, description="Why a listing that had begun was cut short (the agent was lost...)"
    )


class ExistsBody(BaseModel):
    exists: bool


class MkdirBody(StrictModel):
    path: PathText
    recursive: bool = False


class MoveBody(StrictModel):
    source: PathText
    destination: PathText


class CopyBody(MoveBody):
    recursive: bool = True


class ResizeBody(StrictModel):
    cols: Annotated[int, Field(ge=1, le=1000)]
    rows: Annotated[int, Field(ge=1, le=1000)]


class PtyInfo(BaseModel):
    pty_id: str
    pid: int
    cols: int
    rows: int


class PtyList(BaseModel):
    ptys: list[PtyInfo]


class Health(BaseModel):
    status: str
