"""The templates a sandbox can be made from: the built-in ones (the host's userland) and
images from the template store; and the rules for template names."""

from __future__ import annotations

import re
from typing import Protocol

from workspace_server.domain.errors import InvalidRequest, TemplateNotFound
from workspace_server.domain.models import Template

DEFAULT_TEMPLATE = "default"
DEFAULT_TAG = "latest"
MAX_NAME_LENGTH = 200

BUILTIN_TEMPLATES = (
    Template(DEFAULT_TEMPLATE, "Debian userland of the host, read-only; private /workspace, /tmp and home"),
    Template("workspace-test:latest", "The default image under the name the SDK's examples and tests use"),
)

# Docker's reference grammar, without a registry host: lowercase path components, a tag.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
NAME_PATTERN = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
TAG_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def canonical_name(reference: str) -> str:
    """`name:tag`; a bare `name` means `name:latest`. INVALID_REQUEST for anything else."""
    name, _, tag = reference.rpartition(":") if ":" in reference.rsplit("/", 1)[-1] else (reference, "", DEFAULT_TAG)
    if len(reference) > MAX_NAME_LENGTH or not NAME_PATTERN.match(name) or not TAG_PATTERN.match(tag):
        raise InvalidRequest(
            f"invalid template name {reference[:MAX_NAME_LENGTH]!r}: use name[:tag], lowercase letters, digits, "
            "'.', '_', '-' and '/' in the name, at most 128 characters of letters, digits, '_', '.', '-' in the tag",
            field="name",
        )
    return f"{name}:{tag}"


class ImageTemplates(Protocol):
    """Where image templates live (templates/store.py)."""

    def get(self, name: str) -> Template | None: ...

    def all(self) -> list[Template]: ...


class TemplateRegistry:
    """The templates sandboxes can be made from, by name."""

    def __init__(
        self, templates: tuple[Template, ...] = BUILTIN_TEMPLATES, images: ImageTemplates | None = None
    ) -> None:
        self._templates = {template.name: template for template in templates}
        self.images = images

    def builtin(self, name: str) -> Template | None:
        found = self._templates.get(name)
        if found is None and name not in ("", DEFAULT_TEMPLATE):
            try:
                found = self._templates.get(canonical_name(name))
            except InvalidRequest:
                return None
        return found

    def get(self, name: str | None) -> Template:
        reference = name or DEFAULT_TEMPLATE
        template = self.builtin(reference)
        if template is None and self.images is not None:
            try:
                template = self.images.get(canonical_name(reference))
            except InvalidRequest:
                template = None
        if template is None:
            raise TemplateNotFound(str(name), [t.name for t in self.all()][:50])
        return template

    def names(self) -> list[str]:
        """The built-in templates' names (what the warm pool serves by default)."""
        return list(self._templates)

    def all(self) -> list[Template]:
        images = self.images.all() if self.images is not None else []
        return list(self._templates.values()) + images
