"""The client verbs of ``workspace``: sandboxes, commands, shells, files, processes, templates.

Each verb accepts ``--json`` (machine-readable output on stdout) and reports failures as one
``error: ...`` line on stderr with a non-zero exit status.
"""

from __future__ import annotations

import functools
import signal as signals
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

import typer

from workspace_cli.commands import EXIT_INTERRUPTED, EXIT_WORKSPACE_ERROR
from workspace_cli.output import age, fail, print_fields, print_json, print_table

if TYPE_CHECKING:
    from workspace_sdk import OnTimeout, Sandbox, WorkspaceClient

F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    help="Workspace: self-hosted sandboxes. Client verbs talk to $WORKSPACE_API_URL "
    "(default http://localhost:8080) with $WORKSPACE_API_KEY.",
    no_args_is_help=True,
    add_completion=False,
)
template_app = typer.Typer(help="Templates sandboxes are created from.", no_args_is_help=True)
app.add_typer(template_app, name="template")


@dataclass
class Connection:
    url: str | None = None
    api_key: str | None = None
    timeout: float = 60.0


connection = Connection()

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts")]
SandboxId = Annotated[str, typer.Argument(help="Sandbox id", show_default=False)]


@app.callback()
def connect_options(
    url: Annotated[
        str | None,
        typer.Option("--url", envvar="WORKSPACE_API_URL", help="Server URL [default: http://localhost:8080]"),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", envvar="WORKSPACE_API_KEY", help="API key", show_default=False)
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds each request may take")] = 60.0,
) -> None:
    """Workspace: self-hosted sandboxes."""
    connection.url, connection.api_key, connection.timeout = url, api_key, timeout


@contextmanager
def client() -> Iterator[WorkspaceClient]:
    """An SDK client for the chosen server, closed when the block ends."""
    import httpx

    from workspace_sdk import WorkspaceClient

    url = connection.url or "http://localhost:8080"
    # Plain HTTP never uses TLS, but httpx's default transport loads the CA bundle anyway
    # (30 ms on a quiet machine, much more on a busy one): skip it for http:// servers.
    http = httpx.Client(transport=httpx.HTTPTransport(verify=False)) if url.startswith("http://") else None
    try:
        with WorkspaceClient(url, connection.api_key, connection.timeout, http_client=http) as api:
            yield api
    except ValueError as exc:
        fail(str(exc), 2)
    finally:
        if http is not None:
            http.close()


def error_line(exc: Exception) -> str:
    """One readable line for an SDK error (its code stays visible for grepping)."""
    from workspace_sdk import AuthenticationError, WorkspaceConnectionError

    if isinstance(exc, AuthenticationError):
        return f"the server refused the API key (set WORKSPACE_API_KEY or --api-key): {exc.message}"
    if isinstance(exc, WorkspaceConnectionError):
        return f"server unreachable: {exc.message}"
    code = getattr(exc, "code", None)
    message = getattr(exc, "message", str(exc))
    return f"{message} ({code})" if code else message


def verb(command: Callable[[F], F], exit_code: int = 1) -> Callable[[F], F]:
    """Register a verb whose SDK errors become one ``error:`` line and ``exit_code``."""

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from workspace_sdk import WorkspaceError

            try:
                return function(*args, **kwargs)
            except WorkspaceError as exc:
                fail(error_line(exc), exit_code)
            except KeyboardInterrupt:
                sys.stderr.write("\n")
                raise typer.Exit(EXIT_INTERRUPTED) from None

        command(wrapper)  # type: ignore[arg-type]
        return function

    return decorate


def parse_pairs(values: Sequence[str] | None, option: str) -> dict[str, str] | None:
    if not values:
        return None
    pairs: dict[str, str] = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key:
            fail(f"{option} takes KEY=VALUE, got {value!r}", 2)
        pairs[key] = rest
    return pairs


def parse_signal(value: str) -> int:
    if value.isdigit():
        return int(value)
    name = value.upper()
    name = name if name.startswith("SIG") else "SIG" + name
    try:
        return int(signals.Signals[name])
    except KeyError:
        fail(f"unknown signal {value!r} (a number or a name such as TERM, KILL, INT)", 2)


def limits(sandbox: Sandbox) -> str:
    memory = f"{sandbox.memory_mb} MiB" if sandbox.memory_mb is not None else "-"
    disk = f"{sandbox.disk_mb} MiB" if sandbox.disk_mb is not None else "-"
    return f"cpu {sandbox.cpu if sandbox.cpu is not None else '-'}, mem {memory}, disk {disk}"


# --- sandboxes ---------------------------------------------------------------------------


@verb(app.command("ls"))
def list_sandboxes(
    state: Annotated[str | None, typer.Option(help="Only sandboxes in this state")] = None,
    json_output: JsonOption = False,
) -> None:
    """List sandboxes."""
    with client() as api:
        sandboxes = api.sandbox.list(state)  # type: ignore[arg-type]
    if json_output:
        print_json(sandboxes)
        return
    print_table(
        ["ID", "NAME", "TEMPLATE", "STATE", "AGE", "LIMITS"],
        (
            [s.id, s.name or "", s.template, s.state, age(s.created_at), limits(s) + (", network" if s.network else "")]
            for s in sandboxes
        ),
        "no sandboxes",
    )


@verb(app.command())
def create(
    template: Annotated[str | None, typer.Option("--template", "-t", help="Template [server default]")] = None,
    name: Annotated[str | None, typer.Option(help="A name for people")] = None,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE for every command")] = None,
    metadata: Annotated[list[str] | None, typer.Option("--metadata", "-m", help="KEY=VALUE label")] = None,
    timeout: Annotated[int | None, typer.Option(help="Lifetime in seconds before it is deleted")] = None,
    cpu: Annotated[float | None, typer.Option(help="CPU cores")] = None,
    memory: Annotated[int | None, typer.Option("--memory", help="Memory limit in MiB")] = None,
    pids: Annotated[int | None, typer.Option(help="Process limit")] = None,
    disk: Annotated[int | None, typer.Option("--disk", help="Disk quota in MiB")] = None,
    network: Annotated[bool | None, typer.Option("--network/--no-network", help="Outbound internet")] = None,
    on_timeout: Annotated[str | None, typer.Option("--on-timeout", help="delete, stop or pause")] = None,
    idle: Annotated[int | None, typer.Option("--idle", help="Idle timeout in seconds")] = None,
    json_output: JsonOption = False,
) -> None:
    """Create a sandbox and print its id once it is running."""
    from workspace_sdk import CreateSandboxParams

    params = CreateSandboxParams(
        template=template,
        name=name,
        env=parse_pairs(env, "--env"),
        metadata=parse_pairs(metadata, "--metadata"),
        timeout=timeout,
        cpu=cpu,
        memory_mb=memory,
        pids=pids,
        disk_mb=disk,
        network=network,
        on_timeout=checked_on_timeout(on_timeout),
        idle_timeout=idle,
    )
    with client() as api:
        sandbox = api.sandbox.create(params)
    if json_output:
        print_json(sandbox)
    else:
        sys.stdout.write(sandbox.id + "\n")


@verb(app.command())
def inspect(sandbox_id: SandboxId, json_output: JsonOption = False) -> None:
    """Show one sandbox."""
    with client() as api:
        sandbox = api.sandbox.get(sandbox_id)
    if json_output:
        print_json(sandbox)
        return
    fields = [
        ("id", sandbox.id),
        ("name", sandbox.name or "-"),
        ("template", sandbox.template),
        ("state", sandbox.state + (f" ({sandbox.error_message})" if sandbox.error_message else "")),
        ("created", f"{sandbox.created_at} ({age(sandbox.created_at)} ago)"),
        ("expires", sandbox.expires_at or "never"),
        ("limits", limits(sandbox) + f", pids {sandbox.pids if sandbox.pids is not None else '-'}"),
        ("network", "outbound" if sandbox.network else "none"),
        ("env", " ".join(f"{k}={v}" for k, v in (sandbox.env or {}).items()) or "-"),
        ("metadata", " ".join(f"{k}={v}" for k, v in (sandbox.metadata or {}).items()) or "-"),
    ]
    print_fields(fields)


@app.command("rm")
def remove(
    sandbox_ids: Annotated[list[str], typer.Argument(help="Sandbox ids", show_default=False)],
    force: Annotated[bool, typer.Option("--force", "-f", help="Kill processes at once (no SIGTERM grace)")] = False,
    json_output: JsonOption = False,
) -> None:
    """Delete sandboxes (each one is tried; the exit status is 1 if any failed)."""
    from workspace_sdk import WorkspaceError

    removed: list[str] = []
    errors: list[dict[str, str]] = []
    with client() as api:
        for sandbox_id in sandbox_ids:
            try:
                api.sandbox.delete(sandbox_id, force=force)
                removed.append(sandbox_id)
            except WorkspaceError as exc:
                errors.append({"sandbox_id": sandbox_id, "code": exc.code, "message": error_line(exc)})
                if not json_output:
                    sys.stderr.write(f"error: {error_line(exc)}\n")
                if exc.code in ("CONNECTION_ERROR", "UNAUTHORIZED") or exc.status_code is None:
                    break  # the next ones would fail the same way
            else:
                if not json_output:
                    sys.stdout.write(sandbox_id + "\n")
    if json_output:
        print_json({"removed": removed, "errors": errors})
    if errors:
        raise typer.Exit(1)


# --- commands and shells -----------------------------------------------------------------


@verb(app.command("exec"), exit_code=EXIT_WORKSPACE_ERROR)
def execute(
    sandbox_id: SandboxId,
    command: Annotated[list[str], typer.Argument(help="Command and arguments (after --)", show_default=False)],
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="KEY=VALUE")] = None,
    cwd: Annotated[str | None, typer.Option("--cwd", "-w", help="Working directory")] = None,
    user: Annotated[str | None, typer.Option("--user", "-u", help="user or root")] = None,
    timeout: Annotated[float | None, typer.Option(help="Kill the command after this many seconds")] = None,
    stdin: Annotated[bool, typer.Option("--stdin", "-i", help="Send this terminal's stdin (read to EOF)")] = False,
    json_output: JsonOption = False,
) -> None:
    """Run a command; its output streams live and its exit status becomes ours."""
    from workspace_cli.commands import run_command

    with client() as api:
        code = run_command(
            api,
            sandbox_id,
            command,
            env=parse_pairs(env, "--env"),
            cwd=cwd,
            user=user,
            timeout=timeout,
            stdin=sys.stdin.read() if stdin else None,
            json_output=json_output,
        )
    raise typer.Exit(code)


@verb(app.command())
def shell(
    sandbox_id: SandboxId,
    program: Annotated[str | None, typer.Option("--shell", help="Shell to start [/bin/bash]")] = None,
    json_output: JsonOption = False,
) -> None:
    """Open an interactive terminal in the sandbox (Ctrl-D or `exit` leaves)."""
    from workspace_cli.terminal import run_shell

    with client() as api:
        code = run_shell(api, sandbox_id, program)
    if json_output:
        print_json({"sandbox_id": sandbox_id, "exit_code": code})
    raise typer.Exit(code if code is not None else 0)


# --- files -------------------------------------------------------------------------------


@verb(app.command())
def cp(
    source: Annotated[str, typer.Argument(help="ID:PATH, a local path, or - for stdin", show_default=False)],
    destination: Annotated[str, typer.Argument(help="ID:PATH, a local path, or - for stdout", show_default=False)],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar")] = False,
    json_output: JsonOption = False,
) -> None:
    """Copy a file into or out of a sandbox, streamed (ID:PATH names the sandbox side)."""
    from workspace_cli.transfer import copy

    with client() as api:
        result = copy(api, source, destination, progress=not quiet and not json_output)
    if json_output:
        print_json(result)


# --- processes ---------------------------------------------------------------------------


@verb(app.command())
def ps(sandbox_id: SandboxId, json_output: JsonOption = False) -> None:
    """List the processes started through the API (commands, background processes, shells)."""
    with client() as api:
        processes = api.process.list(sandbox_id)
    if json_output:
        print_json(processes)
        return
    print_table(
        ["PID", "COMMAND", "PTY"],
        ([str(p.pid), " ".join([p.command, *p.args]), "yes" if p.pty else ""] for p in processes),
        "no processes",
    )


@verb(app.command())
def kill(
    sandbox_id: SandboxId,
    pid: Annotated[int, typer.Argument(help="Process id inside the sandbox", show_default=False)],
    signal: Annotated[str, typer.Option("--signal", "-s", help="Number or name")] = "TERM",
    json_output: JsonOption = False,
) -> None:
    """Send a signal to a process."""
    number = parse_signal(signal)
    with client() as api:
        api.process.kill(sandbox_id, pid, number)
    if json_output:
        print_json({"sandbox_id": sandbox_id, "pid": pid, "signal": number})


def parse_port_mapping(value: str) -> tuple[int, int]:
    """``LOCAL:REMOTE`` or ``REMOTE`` (then the same local port)."""
    local, _, remote = value.rpartition(":")
    try:
        ports = (int(local) if local else int(remote), int(remote))
    except ValueError:
        raise typer.BadParameter("takes LOCAL:REMOTE or PORT, e.g. 5432:5432", param_hint="PORTS") from None
    if not (0 <= ports[0] <= 65535 and 1 <= ports[1] <= 65535):
        raise typer.BadParameter("ports are 1-65535 (LOCAL may be 0: any free port)", param_hint="PORTS")
    return ports


@verb(app.command("port-forward"))
def port_forward(
    sandbox_id: SandboxId,
    ports: Annotated[str, typer.Argument(help="LOCAL:REMOTE (LOCAL 0: any free port), or PORT", show_default=False)],
    json_output: JsonOption = False,
) -> None:
    """Forward a local TCP port to a port on the sandbox's loopback, until Ctrl-C."""
    import time

    local, remote = parse_port_mapping(ports)
    with client() as api:
        api.sandbox.get(sandbox_id)  # an unknown sandbox fails now, not at the first connection
        with api.sandbox.port_forward(sandbox_id, remote, local) as forward:
            if json_output:
                print_json({"sandbox_id": sandbox_id, "local_port": forward.local_port, "remote_port": remote})
            else:
                sys.stdout.write(f"forwarding 127.0.0.1:{forward.local_port} -> {sandbox_id}:{remote} (Ctrl-C ends)\n")
            sys.stdout.flush()
            while True:
                time.sleep(3600)


@verb(app.command())
def url(
    sandbox_id: SandboxId,
    port: Annotated[int, typer.Argument(help="Port a server listens on inside the sandbox", show_default=False)],
    public: Annotated[bool, typer.Option("--public", help="Make the port public (no token)")] = False,
    expires_in: Annotated[int | None, typer.Option("--expires-in", help="Seconds the token is valid")] = None,
    json_output: JsonOption = False,
) -> None:
    """Print a preview URL for a server inside the sandbox."""
    with client() as api:
        address = api.sandbox.get_url(sandbox_id, port, public=public, expires_in=expires_in)
    if json_output:
        print_json({"sandbox_id": sandbox_id, "port": port, "url": address})
    else:
        sys.stdout.write(address + "\n")


# --- templates ---------------------------------------------------------------------------


def checked_on_timeout(value: str | None) -> OnTimeout | None:
    if value not in (None, "delete", "stop", "pause"):
        raise typer.BadParameter("must be delete, stop or pause", param_hint="--on-timeout")
    return cast("OnTimeout | None", value)


def print_state(sandbox: Sandbox, json_output: bool) -> None:
    if json_output:
        print_json(sandbox)
    else:
        sys.stdout.write(f"{sandbox.id} {sandbox.state}\n")


@verb(app.command())
def pause(sandbox_id: SandboxId, json_output: JsonOption = False) -> None:
    """Freeze a sandbox's processes (files keep working; a command resumes it)."""
    with client() as api:
        print_state(api.sandbox.pause(sandbox_id), json_output)


@verb(app.command())
def resume(sandbox_id: SandboxId, json_output: JsonOption = False) -> None:
    """Thaw a paused sandbox."""
    with client() as api:
        print_state(api.sandbox.resume(sandbox_id), json_output)


@verb(app.command())
def stop(
    sandbox_id: SandboxId,
    force: Annotated[bool, typer.Option("--force", "-f", help="Kill processes at once (no SIGTERM grace)")] = False,
    json_output: JsonOption = False,
) -> None:
    """End a sandbox's processes and free its memory; its files are kept until `rm`."""
    with client() as api:
        print_state(api.sandbox.stop(sandbox_id, force=force), json_output)


@verb(app.command())
def start(sandbox_id: SandboxId, json_output: JsonOption = False) -> None:
    """Boot a stopped sandbox again on its files, with the same id."""
    with client() as api:
        print_state(api.sandbox.start(sandbox_id), json_output)


@verb(app.command())
def fork(
    sandbox_id: SandboxId,
    name: Annotated[str | None, typer.Option(help="A name for the fork")] = None,
    metadata: Annotated[list[str] | None, typer.Option("--metadata", "-m", help="KEY=VALUE label")] = None,
    json_output: JsonOption = False,
) -> None:
    """A new sandbox with a copy of this one's files; prints its id."""
    from workspace_sdk import ForkSandboxParams

    params = ForkSandboxParams(name=name, metadata=parse_pairs(metadata, "--metadata"))
    with client() as api:
        forked = api.sandbox.fork(sandbox_id, params)
    if json_output:
        print_json(forked)
    else:
        sys.stdout.write(forked.id + "\n")


@verb(app.command("timeout"))
def set_timeout(
    sandbox_id: SandboxId,
    seconds: Annotated[int, typer.Argument(help="Seconds from now", show_default=False)],
    on_timeout: Annotated[str | None, typer.Option("--on-timeout", help="delete, stop or pause")] = None,
    idle: Annotated[int | None, typer.Option("--idle", help="Idle timeout in seconds (0: off)")] = None,
    json_output: JsonOption = False,
) -> None:
    """Set when a sandbox times out, and what its timeout does."""
    policy = checked_on_timeout(on_timeout)
    with client() as api:
        sandbox = api.sandbox.set_timeout(sandbox_id, seconds, on_timeout=policy, idle_timeout=idle)
    if json_output:
        print_json(sandbox)
    else:
        sys.stdout.write(f"{sandbox.id} expires {sandbox.expires_at or 'when it runs again'}\n")


@verb(app.command())
def snapshot(
    sandbox_id: SandboxId,
    name: Annotated[str, typer.Argument(help="Template name[:tag] to create", show_default=False)],
    replace: Annotated[bool, typer.Option(help="Replace a template of that name")] = False,
    description: Annotated[str, typer.Option(help="Shown by template ls")] = "",
    json_output: JsonOption = False,
) -> None:
    """Save a sandbox's files as a new template."""
    with client() as api:
        template = api.sandbox.snapshot(sandbox_id, name, replace=replace, description=description)
    if json_output:
        print_json(template)
    else:
        sys.stdout.write(template.name + "\n")


# The template verbs live in their own module; importing it registers them on template_app.
from workspace_cli import templates as _template_verbs  # noqa: E402,F401

# --- entry point -------------------------------------------------------------------------

# Options of the callback that take a value, to find the verb in argv without click.
VALUE_OPTIONS = {"--url", "--api-key", "--timeout"}


def requested_verb(argv: Sequence[str]) -> str | None:
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token in VALUE_OPTIONS:
            skip = True
        elif not token.startswith("-"):
            return token
    return None


def client_verbs() -> set[str]:
    names = {info.name or (info.callback.__name__ if info.callback else "") for info in app.registered_commands}
    return names | {info.name or "" for info in app.registered_groups}


def load_plugins() -> None:
    """Verbs of other installed packages (``workspace.cli`` entry points: ``register(app)``)."""
    from importlib.metadata import entry_points

    for entry_point in entry_points(group="workspace.cli"):
        entry_point.load()(app)


def run(argv: Sequence[str]) -> None:
    # Entry points are looked up only for verbs that are not ours (and for --help), which
    # keeps `workspace exec` from scanning every installed distribution.
    if requested_verb(argv) not in client_verbs():
        load_plugins()
    app(args=list(argv), prog_name="workspace")
