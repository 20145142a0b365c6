"""The server's verbs of the `workspace` command: `serve` and `openapi`.

The `workspace` command itself belongs to the SDK's CLI (`workspace-sdk[cli]`, which also
has the client verbs); this package adds its verbs through the `workspace.cli` entry point
(`register`). `python -m workspace_server` runs them without the client verbs.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from workspace_server import logs
from workspace_server.api import http_limits
from workspace_server.config import Settings
from workspace_server.domain.errors import WorkspaceError
from workspace_server.domain.models import ResourceLimits
from workspace_server.domain.templates import canonical_name
from workspace_server.nfs import settings as nfs_settings
from workspace_server.runtimes.base import Runtime
from workspace_server.runtimes.egress import parse_allowed

log = logging.getLogger("workspace")
app = typer.Typer(help="Workspace: self-hosted sandboxes.", no_args_is_help=True, add_completion=False)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind")] = 8080,
    data_dir: Annotated[Path, typer.Option(envvar="WORKSPACE_DATA_DIR", help="State and sandboxes")] = Path(
        "/var/lib/workspace"
    ),
    api_key: Annotated[str | None, typer.Option(envvar="WORKSPACE_API_KEY", help="Required API key")] = None,
    pool_size: Annotated[int, typer.Option(envvar="WORKSPACE_POOL_SIZE", help="Warm sandboxes per template")] = 2,
    max_sandboxes: Annotated[int, typer.Option(envvar="WORKSPACE_MAX_SANDBOXES")] = 500,
    default_cpu: Annotated[float, typer.Option(envvar="WORKSPACE_DEFAULT_CPU")] = 1.0,
    default_memory_mb: Annotated[int, typer.Option(envvar="WORKSPACE_DEFAULT_MEMORY_MB")] = 512,
    default_pids: Annotated[int, typer.Option(envvar="WORKSPACE_DEFAULT_PIDS")] = 256,
    default_disk_mb: Annotated[int, typer.Option(envvar="WORKSPACE_DEFAULT_DISK_MB")] = 1024,
    disk_reserve_mb: Annotated[
        int,
        typer.Option(
            envvar="WORKSPACE_DISK_RESERVE_MB",
            min=0,
            help="Space of the data dir's file system that sandbox disks never take (the server's state, "
            "template imports); half of it is held by a ballast file, released when the file system fills",
        ),
    ] = 256,
    disk_overcommit: Annotated[
        bool,
        typer.Option(
            envvar="WORKSPACE_DISK_OVERCOMMIT",
            help="Keep sandbox disks sparse and admit creates beyond the free space (thin provisioning: "
            "sandboxes filling their disks can then fill the host's)",
        ),
    ] = False,
    disk_preallocate: Annotated[
        bool,
        typer.Option(
            envvar="WORKSPACE_DISK_PREALLOCATE",
            help="Allocate every sandbox disk's blocks when it is made (fallocate), so that other programs on "
            "the data dir's file system cannot take them; by default disks stay sparse and their promises are "
            "accounted",
        ),
    ] = False,
    process_log_bytes: Annotated[
        int,
        typer.Option(
            envvar="WORKSPACE_PROCESS_LOG_BYTES",
            min=64 * 1024,
            max=1 << 30,
            help="Output kept per background process (its most recent bytes), unless its start asks otherwise",
        ),
    ] = 16 * 1024 * 1024,
    process_retention: Annotated[
        float,
        typer.Option(
            envvar="WORKSPACE_PROCESS_RETENTION",
            min=0,
            help="Seconds an exited background process (exit status and output) stays available",
        ),
    ] = 600.0,
    log_level: Annotated[str, typer.Option(envvar="WORKSPACE_LOG_LEVEL")] = "INFO",
    error_retention: Annotated[
        float,
        typer.Option(
            envvar="WORKSPACE_ERROR_RETENTION",
            min=0,
            help="Seconds a sandbox in error (agent lost, create cut short) is kept, listed by state, before "
            "it is deleted",
        ),
    ] = 3600.0,
    max_connections: Annotated[
        int | None,
        typer.Option(
            envvar="WORKSPACE_MAX_CONNECTIONS",
            min=1,
            help="Client connections held at once (default: what the open-files limit leaves beside "
            "max-sandboxes, at most 4096); more are answered 429 and closed",
        ),
    ] = None,
    max_connections_per_peer: Annotated[
        int | None,
        typer.Option(
            envvar="WORKSPACE_MAX_CONNECTIONS_PER_PEER",
            min=1,
            help="Per client address (default: a quarter of the total)",
        ),
    ] = None,
    request_head_timeout: Annotated[
        float,
        typer.Option(
            envvar="WORKSPACE_REQUEST_HEAD_TIMEOUT", min=0.1, help="Seconds a connection has to send a request head"
        ),
    ] = 20.0,
    request_body_idle_timeout: Annotated[
        float,
        typer.Option(
            envvar="WORKSPACE_REQUEST_BODY_IDLE_TIMEOUT",
            min=0.1,
            help="Seconds a request body may stop arriving before the connection is closed",
        ),
    ] = 60.0,
    pool: Annotated[
        list[str] | None,
        typer.Option(
            envvar="WORKSPACE_POOL",
            help="Keep N warm sandboxes of TEMPLATE too (TEMPLATE=N; repeat it, or separate with commas), "
            "e.g. an imported image's name",
        ),
    ] = None,
    max_image_mb: Annotated[
        int,
        typer.Option(envvar="WORKSPACE_MAX_IMAGE_MB", help="Largest image archive, and largest unpacked image, in MiB"),
    ] = 16384,
    max_run_output_mb: Annotated[
        int,
        typer.Option(
            envvar="WORKSPACE_MAX_RUN_OUTPUT_MB",
            min=1,
            help="A run's stdout and its stderr are each cut (and marked truncated) at this many MiB of their "
            "JSON encoding, which is what the response carries",
        ),
    ] = 64,
    max_list_entries: Annotated[
        int,
        typer.Option(
            envvar="WORKSPACE_MAX_LIST_ENTRIES",
            min=1,
            help="A directory listing stops (and is marked truncated) after this many entries",
        ),
    ] = 1_000_000,
    session_ttl: Annotated[
        int, typer.Option(envvar="WORKSPACE_SESSION_TTL", min=1, help="Seconds a web console sign-in lasts")
    ] = 12 * 3600,
    network_allow: Annotated[
        list[str] | None,
        typer.Option(
            envvar="WORKSPACE_NETWORK_ALLOW",
            help="An IPv4 range (CIDR) that sandboxes with network=true may reach although it is private, "
            "link-local or the host's own; repeat it, or separate ranges with commas. Without it they "
            "reach public addresses only",
        ),
    ] = None,
    preview_domain: Annotated[
        str,
        typer.Option(
            envvar="WORKSPACE_PREVIEW_DOMAIN",
            help="Preview URLs are {port}-{sandbox id}.DOMAIN: a wildcard DNS name pointing at this server "
            "(localhost works on this machine: browsers resolve *.localhost themselves)",
        ),
    ] = "localhost",
    preview_scheme: Annotated[
        str, typer.Option(envvar="WORKSPACE_PREVIEW_SCHEME", help="http, or https behind a TLS proxy")
    ] = "http",
    preview_port: Annotated[
        int | None,
        typer.Option(envvar="WORKSPACE_PREVIEW_PORT", help="Port in preview URLs (default: --port; 0: none)"),
    ] = None,
    max_port_connections: Annotated[
        int, typer.Option(envvar="WORKSPACE_MAX_PORT_CONNECTIONS", help="Open proxied connections per sandbox")
    ] = 256,
    runtime_name: Annotated[
        str,
        typer.Option(
            "--runtime", envvar="WORKSPACE_RUNTIME", help="Where sandboxes run: local (runc) or kubernetes (pods)"
        ),
    ] = "local",
    k8s_namespace: Annotated[
        str, typer.Option(envvar="WORKSPACE_K8S_NAMESPACE", help="kubernetes: the sandboxes' namespace")
    ] = "workspace-sandboxes",
    k8s_kubeconfig: Annotated[
        Path | None,
        typer.Option(envvar="KUBECONFIG", help="kubernetes: a kubeconfig; without it, the in-cluster service account"),
    ] = None,
    k8s_context: Annotated[str | None, typer.Option(envvar="WORKSPACE_K8S_CONTEXT")] = None,
    k8s_template_image: Annotated[
        list[str] | None,
        typer.Option(envvar="WORKSPACE_K8S_TEMPLATE_IMAGES", help="kubernetes: TEMPLATE=IMAGE (repeat, or commas)"),
    ] = None,
    k8s_agent_image: Annotated[
        str,
        typer.Option(envvar="WORKSPACE_K8S_AGENT_IMAGE", help="kubernetes: the image with /opt/workspace-agent"),
    ] = "ghcr.io/workspace/workspace-server:latest",
    k8s_runtime_class: Annotated[
        str | None, typer.Option(envvar="WORKSPACE_K8S_RUNTIME_CLASS", help="kubernetes: e.g. gvisor or kata")
    ] = None,
    k8s_owner: Annotated[
        str, typer.Option(envvar="WORKSPACE_K8S_OWNER", help="kubernetes: this server's label value")
    ] = "workspace",
    k8s_server_key_file: Annotated[
        Path | None,
        typer.Option(
            envvar="WORKSPACE_K8S_SERVER_KEY_FILE",
            help="kubernetes: agent tokens' key (default DATA_DIR/k8s-server.key)",
        ),
    ] = None,
    k8s_mode: Annotated[
        str, typer.Option(envvar="WORKSPACE_K8S_MODE", help="kubernetes: pods, agent-sandbox or auto")
    ] = "pods",
    k8s_qps: Annotated[float, typer.Option(envvar="WORKSPACE_K8S_QPS")] = 20.0,
    k8s_burst: Annotated[int, typer.Option(envvar="WORKSPACE_K8S_BURST")] = 40,
    k8s_orphan_grace: Annotated[float, typer.Option(envvar="WORKSPACE_K8S_ORPHAN_GRACE_SECONDS")] = 120.0,
    k8s_warm_pool: Annotated[
        int, typer.Option(envvar="WORKSPACE_K8S_WARM_POOL", help="kubernetes, agent-sandbox mode: SandboxWarmPool size")
    ] = 2,
    nfs: Annotated[
        bool, typer.Option(envvar="WORKSPACE_NFS", help="Serve running sandboxes' /workspace over NFSv4 (nfs-ganesha)")
    ] = False,
    nfs_listen: Annotated[
        str, typer.Option(envvar="WORKSPACE_NFS_LISTEN", help="ADDR:PORT the NFS server listens on")
    ] = nfs_settings.DEFAULT_LISTEN,
    nfs_clients: Annotated[
        list[str] | None,
        typer.Option(
            envvar="WORKSPACE_NFS_CLIENTS",
            help="A client range (CIDR) allowed to use NFS; repeat it, or separate ranges with commas. "
            "Default: loopback only. Required to listen beyond loopback",
        ),
    ] = None,
) -> None:
    """Run the Workspace service (sandboxes on this host, or as pods in a Kubernetes cluster)."""
    from workspace_server.api import uvicorn_server
    from workspace_server.api.app import create_app, data_dir_space, default_runtime

    logs.configure(log_level.upper())
    try:
        allowed = parse_allowed(network_allow or [])
    except ValueError as exc:
        typer.echo(f"error: --network-allow: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        pool_templates = parse_pools(pool or [])
    except ValueError as exc:
        typer.echo(f"error: --pool: {exc}", err=True)
        raise typer.Exit(2) from None
    nfs_config = None
    if nfs and runtime_name != "local":
        typer.echo("error: --nfs serves sandboxes' disks from this host: it needs --runtime local", err=True)
        raise typer.Exit(2)
    if nfs:
        try:
            nfs_host, nfs_port = nfs_settings.parse_listen(nfs_listen)
            clients = nfs_settings.parse_clients(nfs_clients or [])
            nfs_settings.check_exposure(nfs_host, clients)
        except ValueError as exc:
            typer.echo(f"error: --nfs: {exc}", err=True)
            raise typer.Exit(2) from None
        nfs_config = nfs_settings.NfsSettings(nfs_host, nfs_port, clients or nfs_settings.LOOPBACK_CLIENTS)
    settings = Settings(
        data_dir=data_dir.resolve(),
        host=host,
        port=port,
        api_key=api_key or None,
        pool_size=pool_size,
        max_sandboxes=max_sandboxes,
        disk_reserve_mb=disk_reserve_mb,
        disk_overcommit=disk_overcommit,
        disk_preallocate=disk_preallocate,
        network_allow=allowed,
        preview_domain=preview_domain.lower().strip("."),
        preview_scheme=preview_scheme,
        preview_port=preview_port,
        max_port_connections=max_port_connections,
        process_log_bytes=process_log_bytes,
        process_retention_seconds=process_retention,
        max_connections=max_connections,
        error_retention_seconds=error_retention,
        max_connections_per_peer=max_connections_per_peer,
        request_head_timeout=request_head_timeout,
        request_body_idle_timeout=request_body_idle_timeout,
        max_image_bytes=max_image_mb * 1024 * 1024,
        max_run_output=max_run_output_mb * 1024 * 1024,
        max_list_entries=max_list_entries,
        pool_templates=pool_templates,
        session_seconds=float(session_ttl),
        nfs=nfs_config,
        default_limits=ResourceLimits(
            cpu=default_cpu, memory_mb=default_memory_mb, pids=default_pids, disk_mb=default_disk_mb
        ),
    )
    if not settings.loopback_only and not settings.api_key:
        typer.echo(
            f"error: refusing to listen on {host} without an API key: anyone who can reach it could run "
            "code. Set --api-key or WORKSPACE_API_KEY, or bind 127.0.0.1.",
            err=True,
        )
        raise typer.Exit(2)
    space = data_dir_space(settings)
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        space.make_room()  # a full file system: the ballast goes, so the server can start
        probe = settings.data_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        typer.echo(f"error: data dir {settings.data_dir} is not writable: {exc}", err=True)
        raise typer.Exit(2) from None
    open_files = http_limits.raise_open_files_limit()
    connection_limits = http_limits.limits_for(
        open_files,
        settings.max_sandboxes,
        settings.max_connections,
        settings.max_connections_per_peer,
        settings.request_head_timeout,
        settings.request_body_idle_timeout,
    )
    for level, line in http_limits.describe(connection_limits, open_files, settings.max_sandboxes):
        log.log(level, "%s", line)
    runtime: Runtime
    if runtime_name == "kubernetes":
        from workspace_server.runtimes.kubernetes.settings import from_options

        try:
            runtime = from_options(
                data_dir=settings.data_dir,
                namespace=k8s_namespace,
                kubeconfig=k8s_kubeconfig,
                context=k8s_context,
                template_images=k8s_template_image or [],
                agent_image=k8s_agent_image,
                runtime_class=k8s_runtime_class,
                owner=k8s_owner,
                server_key_file=k8s_server_key_file,
                mode=k8s_mode,
                qps=k8s_qps,
                burst=k8s_burst,
                orphan_grace_seconds=k8s_orphan_grace,
                warm_pool_replicas=k8s_warm_pool,
                default_limits=settings.default_limits,
            )
        except (ValueError, OSError) as exc:
            typer.echo(f"error: --runtime kubernetes: {exc}", err=True)
            raise typer.Exit(2) from None
    elif runtime_name == "local":
        runtime = default_runtime(settings, space)
    else:
        typer.echo(f"error: --runtime must be local or kubernetes, not {runtime_name!r}", err=True)
        raise typer.Exit(2)
    try:
        runtime.check()
    except WorkspaceError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from None
    started = uvicorn_server.serve(
        create_app(settings, runtime, checked=True, space=space),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
        ws_max_size=1 << 20,
        # Longer than clients' own idle expiry (httpx: 5 s), so a client never reuses a
        # connection the server is closing at that very moment.
        timeout_keep_alive=75,
        **http_limits.uvicorn_protocols(connection_limits),
    )
    if not started:
        raise typer.Exit(3)  # as uvicorn.run: the server could not start


def parse_pools(values: list[str]) -> tuple[tuple[str, int], ...]:
    """`TEMPLATE=N` items (comma-separated too) as (canonical template name, N)."""
    pools: dict[str, int] = {}
    for item in (part.strip() for value in values for part in value.split(",")):
        if not item:
            continue
        name, sep, count = item.rpartition("=")
        if not sep or not count.isdigit() or not name:
            raise ValueError(f"{item!r} is not TEMPLATE=N")
        try:
            canonical = name if name == "default" else canonical_name(name)
        except WorkspaceError as exc:
            raise ValueError(exc.message) from None
        pools[canonical] = int(count)
    return tuple(pools.items())


@app.command()
def openapi(output: Annotated[Path | None, typer.Option(help="Write here instead of stdout")] = None) -> None:
    """Print the OpenAPI document of the REST API."""
    from workspace_server.api.app import create_app

    document = create_app(Settings(data_dir=Path(os.devnull))).openapi()
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)


def register(cli: typer.Typer) -> None:
    """Entry point of the `workspace.cli` group: add `serve` and `openapi` to `workspace`."""
    for info in app.registered_commands:
        cli.registered_commands.append(info)
