"""The templates a sandbox can be made from."""

from __future__ import annotations

from workspace_server.domain.errors import TemplateNotFound
from workspace_server.domain.models import Template

DEFAULT_TEMPLATE = "default"

BUILTIN_TEMPLATES = (
    Template(DEFAULT_TEMPLATE, "Debian userland of the host, read-only; private /workspace, /tmp and home"),
    Template("workspace-test:latest", "The default image under the name the SDK's examples and tests use"),
)


class TemplateRegistry:
    def __init__(self, templates: tuple[Template, ...] = BUILTIN_TEMPLATES) -> None:
        self._templates = {template.name: template for template in templates}

    def get(self, name: str | None) -> Template:
        template = self._templates.get(name or DEFAULT_TEMPLATE)
        if template is None:
            raise TemplateNotFound(str(name), self.names())
        return template

    def names(self) -> list[str]:
        return list(self._templates)

    def all(self) -> list[Template]:
        return list(self._templates.values())
