"""Builds from a Containerfile: each RUN, COPY and ADD step runs in a sandbox of the image
so far (same isolation, limits and egress filter as any sandbox), and what it changed
becomes a layer, exactly as a snapshot makes one. Steps are cached by (the image so far, the
step as it executes, the context files it uses): an unchanged rebuild makes no sandbox.

A build is answered at once (`building`) and runs as a task; its log is kept with its
record (templates/build_store.py). On any end but success, the step's sandbox is deleted
and nothing of the build is stored but its layers already complete (they are cache)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from workspace_server.agent_link.streams import CommandExit, CommandFailed, CommandOutput
from workspace_server.domain import containerfile
from workspace_server.domain.builds import (
    BUILD_CANCELLED,
    BUILD_FAILED,
    BUILD_TIMEOUT,
    Build,
    BuildError,
    BuildState,
    BuildStep,
    new_build_id,
)
from workspace_server.domain.errors import InvalidRequest, ResourceExhausted, WorkspaceError
from workspace_server.domain.models import Template
from workspace_server.services.create_request import CreateRequest
from workspace_server.services.processes import BASE_PATH
from workspace_server.services.sandboxes import SandboxService
from workspace_server.services.templates import TemplateService, now_iso
from workspace_server.templates import build_context
from workspace_server.templates.build_store import BuildStore

log = logging.getLogger(__name__)

CONCURRENT_BUILDS = 2
MAX_PENDING_BUILDS = 16  # running or waiting for a slot; each holds its unpacked context on disk
DEFAULT_TIME_LIMIT = 3600
RESTARTED = "the server restarted during the build; its step sandbox was deleted: build again"
CANCELLED = "the build was cancelled (deleted) while building"
SHUT_DOWN = "the server shut down during the build; its step sandbox was deleted: build again"
STEP_SANDBOX_MARGIN = 60  # a step sandbox outlives the build limit by this at most, whatever happens


class BuildNotFound(WorkspaceError):
    code = "BUILD_NOT_FOUND"

    def __init__(self, build_id: str) -> None:
        super().__init__(f"build {build_id} not found", build_id=build_id)


class StepFailed(Exception):
    def __init__(self, step: BuildStep, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.step, self.message, self.exit_code = step, message, exit_code


@dataclass
class BuildRequest:
    name: str
    replace: bool = False
    file: str | None = None  # the Containerfile's path in the context
    build_args: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)  # RUN steps only, never in the image
    time_limit: float = DEFAULT_TIME_LIMIT
    network: bool = False
    cpu: float | None = None
    memory_mb: int | None = None
    disk_mb: int | None = None
    description: str = ""


@dataclass
class _Job:
    build: Build
    request: BuildRequest
    work: Path
    base: Template
    plan: list[containerfile.Step]
    copies: dict[int, build_context.CopyPlan]
    task: asyncio.Task[None] | None = None


class BuildService:
    def __init__(self, templates: TemplateService, sandboxes: SandboxService, store: BuildStore) -> None:
        self.templates = templates
        self.sandboxes = sandboxes
        self.store = store
        self._jobs: dict[str, _Job] = {}
        self._slots = asyncio.Semaphore(CONCURRENT_BUILDS)
        self._closing = False

    async def start(self) -> None:
        """Builds cut by a restart end in error; their step sandboxes are deleted."""
        for build in self.store.open():
            if build.sandbox_id:
                with contextlib.suppress(WorkspaceError):
                    await self.sandboxes.delete(build.sandbox_id, force=True)
            self._end(build, BuildError(BUILD_CANCELLED, RESTARTED))

    async def shutdown(self) -> None:
        self._closing = True
        for job in list(self._jobs.values()):
            if job.task is not None:
                job.task.cancel()
        for job in list(self._jobs.values()):
            if job.task is not None:
                with contextlib.suppress(BaseException):
                    await job.task

    # ------------------------------------------------------------------ queries
    def get(self, build_id: str) -> Build:
        build = self.store.get(build_id)
        if build is None:
            raise BuildNotFound(build_id)
        build.log_bytes = self.store.log_size(build_id)
        return build

    def all(self) -> list[Build]:
        return self.store.all()

    # ------------------------------------------------------------------ submit
    async def submit(self, request: BuildRequest, body: AsyncIterator[bytes]) -> Build:
        """Check everything that can be checked before a step runs (the Containerfile, its
        base, the context's files), then start the build; its record, `building`."""
        name = self.templates.new_name(request.name, request.replace)
        if len(self._jobs) >= MAX_PENDING_BUILDS:
            raise ResourceExhausted(f"{len(self._jobs)} builds are running or waiting already; try again later")
        if not 0 < request.time_limit <= 24 * 3600:
            raise InvalidRequest("timeout must be between 1 and 86400 seconds", field="timeout")
        self.sandboxes.limits(cpu=request.cpu, memory_mb=request.memory_mb, disk_mb=request.disk_mb)
        for option, values in (("build_arg", request.build_args), ("env", request.env)):
            for key, value in values.items():
                if not key or "=" in key or "\x00" in key or "\x00" in value:
                    raise InvalidRequest(f"invalid {option} {key!r}: a name without '=', no NUL byte", field=option)
        work = self.templates.store.scratch_root / ("build-" + os.urandom(8).hex())
        work.mkdir(mode=0o700)
        try:
            job = await self._prepare(request, name, body, work)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        self._jobs[job.build.id] = job
        self.store.put(job.build)
        self.store.append_log(job.build.id, f"building {name} from {job.base.name}\n".encode(), always=True)
        self.store.prune()
        job.task = asyncio.create_task(self._run(job), name=f"build {job.build.id}")
        return job.build

    async def _prepare(self, request: BuildRequest, name: str, body: AsyncIterator[bytes], work: Path) -> _Job:
        archive = work / "context.tar"
        await self.templates.receive(body, archive, what="a build context (a tar of its directory)")
        context = work / "context"
        limit = self.templates.max_image_bytes
        room = self.templates.room("the build context")
        await asyncio.to_thread(build_context.unpack_context, archive, context, limit, room)
        archive.unlink()
        text = build_context.read_containerfile(context, request.file)
        parsed = containerfile.parse(text, request.build_args)
        base = self.templates.get(parsed.base)
        if not base.is_image:
            raise InvalidRequest(
                f"Containerfile line {parsed.base_line}: FROM {parsed.base}: builds start from an image template "
                f"(the built-in {base.name!r} has no layers to build on); import or bootstrap a base image",
                field="containerfile",
                line=parsed.base_line,
            )
        plan = containerfile.plan(parsed, base.config, request.build_args)
        copies = {}
        for step in plan:
            if step.kind == "copy":
                copies[step.index] = await asyncio.to_thread(build_context.plan_copy, context, step, limit)
        stamp = now_iso()
        build = Build(
            id=new_build_id(),
            template=name,
            base=base.name,
            state=BuildState.BUILDING,
            created_at=stamp,
            updated_at=stamp,
            steps=[BuildStep(s.index, s.line, s.text, s.kind) for s in plan],
        )
        return _Job(build, request, work, base, plan, copies)

    # ------------------------------------------------------------------ cancel
    async def delete(self, build_id: str) -> None:
        """A running build is cancelled (its sandbox deleted; the record stays, in error);
        a finished one's record and log are removed."""
        build = self.get(build_id)
        job = self._jobs.get(build_id)
        if job is not None and job.task is not None and not job.task.done():
            job.task.cancel()
            with contextlib.suppress(BaseException):
                await job.task
            return
        if build.state == BuildState.BUILDING:  # no task: nothing runs it any more
            self._end(build, BuildError(BUILD_CANCELLED, CANCELLED))
            return
        self.store.remove(build_id)

    # ------------------------------------------------------------------ running
    def _log(self, build: Build, text: str) -> None:
        self.store.append_log(build.id, text.encode(), always=True)

    def _end(self, build: Build, error: BuildError | None, digest: str | None = None) -> None:
        build.state = BuildState.ERROR if error else BuildState.READY
        if error is not None and error.step is None:  # the step that was running names the failure
            running = next((s for s in build.steps if s.state == "running"), None)
            if running is not None:
                error.step, error.line = running.index, running.line
        build.error, build.digest, build.sandbox_id = error, digest, None
        build.updated_at = now_iso()
        for step in build.steps:
            if step.state == "running":
                step.state = "error"
        if error is not None:
            self._log(build, f"error: {error.message}\n")
        else:
            self._log(build, f"built {build.template} ({digest})\n")
        self.store.put(build)

    async def _run(self, job: _Job) -> None:
        build = job.build
        error: BuildError | None = None
        template: Template | None = None
        try:
            if self._slots.locked():
                self._log(build, f"waiting: {CONCURRENT_BUILDS} builds are running\n")
            async with self._slots:
                async with asyncio.timeout(job.request.time_limit):
                    template = await self._steps(job)
        except TimeoutError:
            error = BuildError(
                BUILD_TIMEOUT, f"the build took longer than its time limit of {job.request.time_limit} s"
            )
        except asyncio.CancelledError:
            error = BuildError(BUILD_CANCELLED, SHUT_DOWN if self._closing else CANCELLED)
        except StepFailed as failed:
            step = failed.step
            error = BuildError(BUILD_FAILED, failed.message, step.index, step.line, failed.exit_code)
        except WorkspaceError as exc:
            error = BuildError(exc.code, exc.message)
        except Exception as exc:
            log.exception("build %s failed", build.id)
            error = BuildError("INTERNAL", f"the build failed: {exc!r}")
        finally:
            shutil.rmtree(job.work, ignore_errors=True)
            self._jobs.pop(build.id, None)
        self._end(build, error, template.digest if template else None)

    async def _steps(self, job: _Job) -> Template:
        build, base = job.build, job.base
        layers = list(base.layers)
        chain = hashlib.sha256(f"{base.digest}\n{'/'.join(base.layers)}".encode()).hexdigest()
        config = base.config
        labels: dict[str, str] = {}
        with self.templates.store.pins() as pin:
            for digest in base.layers:  # the base may be deleted meanwhile: its layers stay until we are done
                pin(digest)
            if not all(self.templates.store.has_layer(d) for d in base.layers):
                raise InvalidRequest(
                    f"the base template {base.name} was deleted during the build", field="containerfile"
                )
            for step, record in zip(job.plan, build.steps, strict=True):
                began = time.monotonic()
                self._log(build, f"\nstep {step.index + 1}/{len(job.plan)} (line {step.line}): {step.text}\n")
                if step.kind != "config":
                    copy = job.copies.get(step.index)
                    key = hashlib.sha256(
                        "\n".join((chain, step.cache_text(), copy.digest if copy else "")).encode()
                    ).hexdigest()
                    cached = self.store.cached_layer(key)
                    if cached is not None:
                        pin(cached)  # before looking: a collection in another thread keeps it from now on
                    if cached is not None and self.templates.store.has_layer(cached):
                        record.cached, layer = True, cached
                        self._log(build, f"cached: {cached}\n")
                    else:
                        record.state, record.cached = "running", False
                        self.store.put(build)
                        image = Template(base.name, "", "sha256:" + chain, tuple(layers), 0, None, "built", config)
                        layer = await self._execute(job, step, record, image, copy, pin)
                        self.store.remember(key, layer)
                    record.layer = layer
                    layers.append(layer)
                    chain = key
                config, labels = step.config, step.labels
                record.state, record.seconds = "done", round(time.monotonic() - began, 3)
                self.store.put(build)
            size = sum(self.templates.store.layer_size(d) for d in layers)
            description = job.request.description or _describe(labels)
            template = Template(
                name=build.template,
                description=description,
                digest="sha256:" + hashlib.sha256("\n".join(layers).encode()).hexdigest(),
                layers=tuple(layers),
                size=size,
                created_at=now_iso(),
                source="built",
                config=replace(config, env=dict(config.env)),
                labels=labels,
            )
            # Stored while its layers are still pinned: a collection running meanwhile keeps them.
            self.templates.store_template(template, replace=job.request.replace)
        if job.request.replace:
            await self.templates.collect_garbage()
        return template

    async def _execute(
        self,
        job: _Job,
        step: containerfile.Step,
        record: BuildStep,
        image: Template,
        copy: build_context.CopyPlan | None,
        pin: Callable[[str], None],
    ) -> str:
        """Run one step in a fresh sandbox of `image`; what it changed, as a stored layer."""
        request = job.request
        sandbox = await self.sandboxes.create(
            CreateRequest(
                template=image.name,
                metadata={"workspace.build": job.build.id, "workspace.step": str(step.index)},
                timeout=int(request.time_limit) + STEP_SANDBOX_MARGIN,
                cpu=request.cpu,
                memory_mb=request.memory_mb,
                disk_mb=request.disk_mb,
                network=request.network,
            ),
            image=image,
        )
        job.build.sandbox_id = sandbox.id
        self.store.put(job.build)
        try:
            if step.kind == "run":
                code = await self._run_command(job, step, sandbox.id)
                record.exit_code = code
                if code != 0:
                    raise StepFailed(record, f"step {step.index + 1} (line {step.line}) exited with {code}", code)
            else:
                assert copy is not None
                await self._copy(job, step, record, sandbox.id, copy)
            runtime = self.sandboxes.runtime
            changes = job.work / f"step-{step.index}.tar"
            await runtime.freeze(sandbox.id)
            await runtime.pack_changes(sandbox.id, changes)
            layer = await asyncio.to_thread(self.templates.store_layer, changes, job.work / f"layer-{step.index}", pin)
            changes.unlink(missing_ok=True)
            return layer.diff_id
        finally:
            with contextlib.suppress(WorkspaceError):
                await asyncio.shield(self.sandboxes.delete(sandbox.id, force=True))
            job.build.sandbox_id = None

    async def _run_command(self, job: _Job, step: containerfile.Step, sandbox_id: str) -> int:
        root = step.run_user == "root"
        env = {
            "PATH": BASE_PATH,
            "HOME": "/root" if root else "/home/user",
            "USER": step.run_user,
            "LOGNAME": step.run_user,
            "LANG": "C.UTF-8",
            **job.request.env,  # build-time only (a proxy): ARG and ENV override it, the image never holds it
            **step.run_env,
        }
        agent = self.sandboxes.agent(sandbox_id)
        stream = await agent.spawn(
            list(step.argv), env, step.config.working_dir or "/", step.run_user, None, False, None
        )
        try:
            await stream.started()
            while True:
                event = await stream.next()
                if isinstance(event, CommandOutput):
                    self.store.append_log(job.build.id, event.data)
                elif isinstance(event, CommandExit):
                    return event.code
                elif isinstance(event, CommandFailed):
                    raise StepFailed(
                        job.build.steps[step.index], f"step {step.index + 1} (line {step.line}): {event.error.message}"
                    )
                else:
                    raise StepFailed(
                        job.build.steps[step.index], "the sandbox agent ended the command without a status"
                    )
        except WorkspaceError as exc:  # a missing shell, a bad cwd: the step's failure
            raise StepFailed(
                job.build.steps[step.index], f"step {step.index + 1} (line {step.line}): {exc.message}"
            ) from None
        finally:
            stream.close()

    async def _copy(
        self,
        job: _Job,
        step: containerfile.Step,
        record: BuildStep,
        sandbox_id: str,
        copy: build_context.CopyPlan,
    ) -> None:
        agent = self.sandboxes.agent(sandbox_id)
        owner = await self._owner(sandbox_id, step, record) if step.chown else None
        tar = job.work / f"copy-{step.index}.tar"
        with open(tar, "xb") as out:
            await asyncio.to_thread(build_context.write_copy_tar, copy, out, owner)

        async def chunks() -> AsyncIterator[bytes]:
            with open(tar, "rb") as data:
                while chunk := await asyncio.to_thread(data.read, 1 << 20):
                    yield chunk

        try:
            count = await agent.unpack(copy.target_dir, chunks())
        except WorkspaceError as exc:
            raise StepFailed(record, f"step {step.index + 1} (line {step.line}): {exc.message}") from None
        finally:
            tar.unlink(missing_ok=True)
        self._log(job.build, f"copied {count} entries to {copy.target_dir}\n")

    async def _owner(self, sandbox_id: str, step: containerfile.Step, record: BuildStep) -> tuple[int, int]:
        """--chown user[:group], names looked up in the image's /etc/passwd and /etc/group."""
        assert step.chown is not None
        user, _, group = step.chown.partition(":")

        async def lookup(name: str, table: str) -> int:
            if name.isdigit():
                number = int(name)
            else:
                entries = await self._read_table(sandbox_id, table)
                found = entries.get(name)
                if found is None:
                    raise StepFailed(record, f"line {step.line}: --chown: no {name!r} in the image's {table}")
                number = found
            if not 0 <= number <= 65535:
                raise StepFailed(record, f"line {step.line}: --chown: ids go from 0 to 65535")
            return number

        uid = await lookup(user, "/etc/passwd")
        if group:
            return uid, await lookup(group, "/etc/group")
        if user.isdigit():
            return uid, uid
        passwd = await self._read_table(sandbox_id, "/etc/passwd", field=3)
        return uid, passwd.get(user, uid)

    async def _read_table(self, sandbox_id: str, path: str, field: int = 2) -> dict[str, int]:
        try:
            _, chunks = await self.sandboxes.agent(sandbox_id).read(path)
        except WorkspaceError:
            return {}
        data = bytearray()
        async for chunk in chunks:
            data += chunk
            if len(data) > 1 << 20:
                break
        table: dict[str, int] = {}
        for line in data.decode(errors="replace").splitlines():
            parts = line.split(":")
            if len(parts) > field and parts[field].isdigit():
                table.setdefault(parts[0], int(parts[field]))
        return table


def _describe(labels: dict[str, str]) -> str:
    text = labels.get("org.opencontainers.image.description") or labels.get("description") or ""
    return text[:500]
