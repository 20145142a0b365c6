"""The ASGI application: wires settings, store, runtime and services to the routes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from workspace_server import __version__
from workspace_server.api.deps import Services
from workspace_server.api.errors import install_error_handlers
from workspace_server.api.middleware import GuardMiddleware
from workspace_server.api.previews import PortPathProxy, PreviewHosts
from workspace_server.api.routes import builds, files, health, lifecycle, ports, processes, pty, sandboxes, templates
from workspace_server.api.sessions import SessionStore
from workspace_server.config import Settings
from workspace_server.console import routes as console
from workspace_server.domain.errors import RuntimeFailure
from workspace_server.domain.previews import PreviewTokens
from workspace_server.domain.templates import TemplateRegistry
from workspace_server.e2b import control as e2b_control
from workspace_server.e2b import envd as e2b_envd
from workspace_server.metrics import Metrics
from workspace_server.nfs.exports import NfsExports
from workspace_server.runtimes.base import Runtime
from workspace_server.services.background import BackgroundProcessService
from workspace_server.services.builds import BuildService
from workspace_server.services.files import FileService
from workspace_server.services.lifecycle import LifecycleService
from workspace_server.services.ports import PortService, PreviewSite, load_preview_key
from workspace_server.services.processes import ProcessService
from workspace_server.services.ptys import PtyService
from workspace_server.services.sandboxes import SandboxService
from workspace_server.services.templates import TemplateService
from workspace_server.services.watches import WatchService
from workspace_server.store.disk_space import MIB, DataDirSpace
from workspace_server.store.sqlite import SandboxStore
from workspace_server.templates.build_store import BuildStore
from workspace_server.templates.store import TemplateStore

log = logging.getLogger("workspace")


def data_dir_space(settings: Settings) -> DataDirSpace:
    return DataDirSpace(
        settings.data_dir,
        settings.disk_reserve_mb * MIB,
        overcommit=settings.disk_overcommit,
        preallocate=settings.disk_preallocate,
    )


def default_runtime(settings: Settings, space: DataDirSpace | None = None) -> Runtime:
    from workspace_server.runtimes.runc import RuncRuntime

    return RuncRuntime(
        settings.data_dir,
        runc=settings.runc,
        network_allow=settings.network_allow,
        space=space or data_dir_space(settings),
    )


def nfs_exports(settings: Settings, runtime: Runtime) -> NfsExports | None:
    if settings.nfs is None:
        return None
    locate = getattr(runtime, "host_workspace", None)
    if locate is None:
        raise RuntimeFailure(
            f"--nfs needs sandboxes whose /workspace is on this host; the {runtime.name} runtime's is not"
        )
    return NfsExports(settings.nfs, settings.data_dir / "nfs", locate)


def create_app(
    settings: Settings, runtime: Runtime | None = None, checked: bool = False, space: DataDirSpace | None = None
) -> FastAPI:
    """`space`: the data dir's space (its ballast, sandbox disk admission), shared with the
    runtime; one is made if not given."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        data_space = space or data_dir_space(settings)
        chosen = runtime or default_runtime(settings, data_space)
        if not checked:
            chosen.check()
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        store = SandboxStore(settings.data_dir / "state.db", on_full=data_space.make_room)
        metrics = Metrics()
        template_store = TemplateStore(settings.data_dir / "templates")
        template_store.open()
        registry = TemplateRegistry(images=template_store)
        exports = nfs_exports(settings, chosen)
        if exports is not None:
            await exports.start()
            log.info("nfs: serving sandboxes' /workspace under %s", exports.settings.url("/sandboxes"))
        sandbox_service = SandboxService(settings, store, chosen, registry, metrics, exports, data_space)
        template_service = TemplateService(
            registry,
            template_store,
            settings.max_image_bytes,
            users_of=sandbox_service.users_of,
            layers_in_use=chosen.layers_in_use,
            on_changed=sandbox_service.pool_template_changed,
            admit_write=data_space.admit_write,
        )
        build_service = BuildService(template_service, sandbox_service, BuildStore(template_store.root / "builds"))
        metrics.track_states(sandbox_service.counts_by_state)
        lifecycle_service = LifecycleService(sandbox_service)
        process_service = ProcessService(sandbox_service, lifecycle_service)
        app.state.services = Services(
            settings=settings,
            sandboxes=sandbox_service,
            lifecycle=lifecycle_service,
            processes=process_service,
            background=BackgroundProcessService(sandbox_service, settings, lifecycle_service),
            files=FileService(sandbox_service),
            ptys=PtyService(sandbox_service, process_service),
            watches=WatchService(sandbox_service),
            templates=template_service,
            builds=build_service,
            ports=PortService(
                sandbox_service,
                lifecycle_service,
                store,
                PreviewTokens(load_preview_key(settings.data_dir / "preview.key")),
                PreviewSite(
                    settings.preview_domain,
                    settings.preview_scheme,
                    settings.port if settings.preview_port is None else settings.preview_port or None,
                ),
                settings.max_port_connections,
            ),
            metrics=metrics,
        )
        try:
            await sandbox_service.start()
        except BaseException:
            if exports is not None:
                await exports.close()
            raise
        await build_service.start()
        lifecycle_service.start_background()
        log.info(
            "runtime=%s data_dir=%s templates=%s pool_size=%d",
            chosen.name,
            settings.data_dir,
            ",".join(t.name for t in registry.all()),
            settings.pool_size,
        )
        log.info(
            "listening on http://%s:%d (auth %s)", settings.host, settings.port, "on" if settings.api_key else "off"
        )
        try:
            yield
        finally:
            await build_service.shutdown()
            await sandbox_service.shutdown()
            if exports is not None:
                await exports.close()
            store.close()

    app = FastAPI(
        title="Workspace API",
        version=__version__,
        lifespan=lifespan,
        description="Self-hosted sandboxes: create, run commands, stream output, files, PTYs.",
    )
    install_error_handlers(app)
    sessions = SessionStore(settings.session_seconds)
    app.state.settings = settings
    app.state.sessions = sessions
    for module in (health, sandboxes, templates, builds, lifecycle, processes, files, pty, ports):
        app.include_router(module.router)
    app.include_router(pty.socket_router)
    app.include_router(ports.socket_router)
    app.include_router(console.router)
    app.include_router(e2b_control.router)
    app.include_router(e2b_envd.router)

    def current() -> Services:
        services: Services = app.state.services
        return services

    app.add_middleware(PortPathProxy, services=current)  # inside the API's auth
    app.add_middleware(
        GuardMiddleware,
        api_key=settings.api_key,
        max_json_body=settings.max_json_body,
        max_upload=settings.max_upload_bytes,
        bind_host=settings.host,
        sessions=sessions,
    )
    app.add_middleware(PreviewHosts, domain=settings.preview_domain, services=current)  # before the auth
    return app
