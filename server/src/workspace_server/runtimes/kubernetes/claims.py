"""agent-sandbox mode: sandboxes are claimed from a SandboxWarmPool (kubernetes-sigs/agent-sandbox)
instead of being created as bare pods.

At start the runtime keeps one SandboxTemplate and one SandboxWarmPool per template, and
lists + watches its SandboxClaims as it does its pods. A create is ONE API write, the
SandboxClaim; the controller binds a warm pod to it and reports the pod in the claim's
status, which the watch brings. The warm pod's agent was made before its sandbox existed,
so it starts unbound: the server's first handshake binds it, naming the pod's uid (only the
API and the pod itself know it). Deleting the claim (shutdownPolicy Delete) deletes the pod.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from workspace_server.domain.models import ResourceLimits
from workspace_server.runtimes.kubernetes import labels, manifests
from workspace_server.runtimes.kubernetes.api import CLAIMS, TEMPLATES, WARM_POOLS, ApiError, Gone, KubernetesApi
from workspace_server.runtimes.kubernetes.settings import KubernetesSettings

log = logging.getLogger(__name__)

WATCH_RETRY_SECONDS = 1.0


class Claims:
    def __init__(self, api: KubernetesApi, settings: KubernetesSettings, changed: Callable[[str], None]) -> None:
        self.api = api
        self.settings = settings
        self.selector = f"{labels.MANAGED_BY}={labels.MANAGER},{labels.OWNER}={settings.owner}"
        self.claims: dict[str, dict[str, Any]] = {}  # sandbox id -> the latest SandboxClaim
        self._by_pod: dict[str, str] = {}  # bound pod name -> sandbox id
        self._changed = changed
        self._resource_version = ""
        self.lists = 0
        self.watches = 0

    async def prepare(self, replicas: int, default_limits: ResourceLimits) -> None:
        """One SandboxTemplate and SandboxWarmPool per template, as this server describes them."""
        for template, image in sorted(self.settings.template_images.items()):
            await self.api.ensure_custom(
                TEMPLATES, manifests.sandbox_template(template, self.settings, image, default_limits)
            )
            await self.api.ensure_custom(WARM_POOLS, manifests.warm_pool(template, self.settings, replicas))
        await self.relist()

    async def relist(self) -> None:
        self.lists += 1
        items, self._resource_version = await self.api.list_custom(CLAIMS, self.selector)
        seen = set()
        for claim in items:
            sandbox_id = (claim["metadata"].get("labels") or {}).get(labels.SANDBOX_ID)
            if sandbox_id:
                seen.add(sandbox_id)
                self._store(sandbox_id, claim)
        for sandbox_id in set(self.claims) - seen:
            self._forget(sandbox_id)

    async def watch_loop(self) -> None:
        while True:
            try:
                self.watches += 1
                async for event in self.api.watch_custom(CLAIMS, self.selector, self._resource_version):
                    self._apply(event)
            except Gone:
                await self._relist_with_retry()
            except ApiError as exc:
                log.warning("claim watch failed (%s); resuming", exc)
                await asyncio.sleep(WATCH_RETRY_SECONDS)

    async def _relist_with_retry(self) -> None:
        while True:
            try:
                await self.relist()
                return
            except ApiError as exc:
                log.warning("listing claims failed (%s); retrying", exc)
                await asyncio.sleep(WATCH_RETRY_SECONDS)

    def _apply(self, event: dict[str, Any]) -> None:
        claim = event["object"]
        version = (claim.get("metadata") or {}).get("resourceVersion")
        if version:
            self._resource_version = str(version)
        if event["type"] == "BOOKMARK":
            return
        sandbox_id = (claim["metadata"].get("labels") or {}).get(labels.SANDBOX_ID)
        if not sandbox_id:
            return
        if event["type"] == "DELETED":
            self._forget(sandbox_id)
        else:
            self._store(sandbox_id, claim)

    def _store(self, sandbox_id: str, claim: dict[str, Any]) -> None:
        self.claims[sandbox_id] = claim
        pod = self.pod_name(sandbox_id)
        if pod:
            self._by_pod[pod] = sandbox_id
        self._changed(sandbox_id)

    def _forget(self, sandbox_id: str) -> None:
        pod = self.pod_name(sandbox_id)
        self.claims.pop(sandbox_id, None)
        if pod:
            self._by_pod.pop(pod, None)
        self._changed(sandbox_id)

    # ------------------------------------------------------------------ the hot path
    async def claim(self, sandbox_id: str, template: str) -> None:
        """The one API write of a create."""
        created = await self.api.create_custom(CLAIMS, manifests.sandbox_claim(sandbox_id, template, self.settings))
        if sandbox_id not in self.claims:
            self._store(sandbox_id, created)

    async def release(self, sandbox_id: str) -> None:
        await self.api.delete_custom(CLAIMS, labels.dns_label(sandbox_id))

    def pod_name(self, sandbox_id: str) -> str | None:
        """The pod the controller bound to the claim (agent-sandbox names the pod as its Sandbox)."""
        claim = self.claims.get(sandbox_id)
        if claim is None:
            return None
        name = ((claim.get("status") or {}).get("sandbox") or {}).get("name")
        return str(name) if name else None

    def sandbox_of(self, pod_name: str) -> str | None:
        return self._by_pod.get(pod_name)

    def created(self, sandbox_id: str) -> float:
        stamp = (self.claims.get(sandbox_id) or {}).get("metadata", {}).get("creationTimestamp")
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if stamp else 0.0
