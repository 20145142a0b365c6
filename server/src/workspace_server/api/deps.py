"""The services the routes call, bundled on the app."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection

from workspace_server.config import Settings
from workspace_server.metrics import Metrics
from workspace_server.services.background import BackgroundProcessService
from workspace_server.services.builds import BuildService
from workspace_server.services.files import FileService
from workspace_server.services.lifecycle import LifecycleService
from workspace_server.services.ports import PortService
from workspace_server.services.processes import ProcessService
from workspace_server.services.ptys import PtyService
from workspace_server.services.sandboxes import SandboxService
from workspace_server.services.templates import TemplateService
from workspace_server.services.watches import WatchService


@dataclass
class Services:
    settings: Settings
    sandboxes: SandboxService
    lifecycle: LifecycleService
    processes: ProcessService
    background: BackgroundProcessService
    files: FileService
    ptys: PtyService
    watches: WatchService
    templates: TemplateService
    builds: BuildService
    ports: PortService
    metrics: Metrics


async def services(connection: HTTPConnection) -> Services:
    # async on purpose: FastAPI runs sync dependencies in a worker thread, a costly hop
    # on every request.
    return current_services(connection)


def current_services(connection: HTTPConnection) -> Services:
    found: Services = connection.app.state.services
    return found
