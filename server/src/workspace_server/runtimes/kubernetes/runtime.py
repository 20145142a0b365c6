"""The Kubernetes runtime: sandboxes are pods, and the cluster is the truth.

On first use it lists this server's pods by label (one request) and then keeps one watch on
the namespace, resuming from the last resourceVersion it saw (bookmarks included) and
listing again only when the API server answers 410 Gone. Everything it answers —
`running`, `list_ids`, a start's readiness — comes from that cache, so a restart with N
sandboxes costs one list and one watch, not N requests.

What the watch shows is reported to the service (SandboxEvents): a pod evicted, OOM-killed,
lost with its node or deleted by someone else turns its sandbox to `error` with that reason.
Pods nobody knows (a crash between create and record, a previous server's warm pool) are
deleted once older than the orphan grace period, so a create in flight elsewhere is never
mistaken for an orphan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workspace_server.agent_link.address import TcpAgentAddress
from workspace_server.domain.errors import InvalidRequest, RuntimeFailure
from workspace_server.domain.models import ResourceLimits
from workspace_server.runtimes.base import SandboxEvents, SandboxSpec, StartedSandbox, WorkloadSample
from workspace_server.runtimes.kubernetes import labels, manifests, podstate
from workspace_server.runtimes.kubernetes.api import ApiError, Gone, KubernetesApi
from workspace_server.runtimes.kubernetes.claims import Claims
from workspace_server.runtimes.kubernetes.settings import KubernetesSettings

log = logging.getLogger(__name__)

WATCH_RETRY_SECONDS = 1.0
NO_PAUSE = (
    "pause, and fork (which pauses its source), are not available on the kubernetes runtime: "
    "a pod cannot freeze its processes"
)
NO_KEPT_FILES = (
    "the kubernetes runtime keeps no files of a stopped sandbox (its disk is an emptyDir of "
    "its pod): create a new sandbox"
)
ORPHAN_SWEEP_SECONDS = 5.0


class KubernetesRuntime:
    name = "kubernetes"

    def __init__(self, settings: KubernetesSettings, api: KubernetesApi | None = None) -> None:
        self.settings = settings
        self.api = api or KubernetesApi(settings)
        self.selector = manifests.selector(settings)
        self._pods: dict[str, dict[str, Any]] = {}  # sandbox id -> the latest pod object
        self._pods_by_name: dict[str, dict[str, Any]] = {}  # every pod, warm-pool ones included
        self.claims: Claims | None = None  # agent-sandbox mode
        self._changed: dict[str, asyncio.Event] = {}  # sandbox id -> set on each change of its pod
        self._resource_version = ""
        self._opened: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._starting: set[str] = set()
        self._destroying: set[str] = set()
        self._reported: set[str] = set()  # sandboxes whose loss was reported already
        self._events: SandboxEvents | None = None
        self.lists = 0  # full lists of the namespace (1 at start; +1 per 410 Gone)
        self.watches = 0  # watch requests (1 at start; +1 each time one ends and is resumed)
        self.clock: Callable[[], float] = time.time

    # ------------------------------------------------------------------ setup
    def check(self) -> None:
        try:
            import kubernetes_asyncio  # noqa: F401
        except ImportError:
            raise RuntimeFailure(
                "the kubernetes runtime needs kubernetes_asyncio: pip install 'workspace-server[kubernetes]'"
            ) from None
        if self.settings.kubeconfig is not None and not self.settings.kubeconfig.is_file():
            raise RuntimeFailure(f"kubeconfig {self.settings.kubeconfig} does not exist")
        if len(self.settings.server_key) < 16:
            raise RuntimeFailure("the kubernetes runtime needs a server key of at least 16 bytes")

    def attach(self, events: SandboxEvents) -> None:
        self._events = events

    async def _ensure_open(self) -> None:
        if self._opened is None:
            self._opened = asyncio.get_running_loop().create_task(self._open())
        await asyncio.shield(self._opened)

    async def _open(self) -> None:
        await self.api.open()
        mode = self.settings.mode
        if mode == "auto":
            mode = "agent-sandbox" if await self.api.has_api_group(manifests.EXTENSIONS_GROUP) else "pods"
            log.info("kubernetes runtime: %s mode (discovery)", mode)
        if mode == "agent-sandbox":
            self.claims = Claims(self.api, self.settings, self._notify)
            await self.claims.prepare(self.settings.warm_pool_replicas, self.settings.default_limits)
        await self._relist()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._watch_loop()))
        if self.claims is not None:
            self._tasks.append(loop.create_task(self.claims.watch_loop()))
        self._tasks.append(loop.create_task(self._orphan_loop()))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self._tasks.clear()
        await self.api.close()

    # ------------------------------------------------------------------ the cache
    async def _relist(self) -> None:
        self.lists += 1
        items, self._resource_version = await self.api.list_pods(self.selector)
        seen = set()
        names = set()
        for pod in items:
            names.add(pod["metadata"]["name"])
            sandbox_id = self._sandbox_of(pod)
            self._pods_by_name[pod["metadata"]["name"]] = pod
            if sandbox_id:
                seen.add(sandbox_id)
                self._store(sandbox_id, pod)
        for name in set(self._pods_by_name) - names:
            del self._pods_by_name[name]
        for sandbox_id in set(self._pods) - seen:  # deleted while we were not watching
            self._forget(sandbox_id, "the sandbox's pod was deleted")

    def _sandbox_of(self, pod: dict[str, Any]) -> str | None:
        """Our label on pods of our own; the claim that bound it for a warm-pool pod."""
        sandbox_id = podstate.view(pod).sandbox_id
        if sandbox_id is None and self.claims is not None:
            sandbox_id = self.claims.sandbox_of(pod["metadata"]["name"])
        return sandbox_id

    async def _watch_loop(self) -> None:
        while True:
            try:
                self.watches += 1
                async for event in self.api.watch_pods(self.selector, self._resource_version):
                    self._apply(event)
            except Gone:
                log.info("pod watch: resourceVersion %s expired (410 Gone); listing again", self._resource_version)
                await self._relist_with_retry()
            except ApiError as exc:
                log.warning("pod watch failed (%s); resuming in %.0fs", exc, WATCH_RETRY_SECONDS)
                await asyncio.sleep(WATCH_RETRY_SECONDS)

    async def _relist_with_retry(self) -> None:
        while True:
            try:
                await self._relist()
                return
            except ApiError as exc:
                log.warning("listing pods failed (%s); retrying", exc)
                await asyncio.sleep(WATCH_RETRY_SECONDS)

    def _apply(self, event: dict[str, Any]) -> None:
        obj = event["object"]
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if version:
            self._resource_version = str(version)
        if event["type"] == "BOOKMARK":
            return
        name = obj["metadata"]["name"]
        if event["type"] == "DELETED":
            self._pods_by_name.pop(name, None)
        else:
            self._pods_by_name[name] = obj
        sandbox_id = self._sandbox_of(obj)
        if not sandbox_id:
            return
        if event["type"] == "DELETED":
            self._forget(sandbox_id, "the sandbox's pod was deleted")
        else:
            self._store(sandbox_id, obj)

    def _store(self, sandbox_id: str, pod: dict[str, Any]) -> None:
        self._pods[sandbox_id] = pod
        self._notify(sandbox_id)
        view = podstate.view(pod)
        if view.failure:
            self._report(sandbox_id, view.failure)
        elif view.deleting:
            self._report(sandbox_id, "the sandbox's pod is being deleted by the cluster")

    def _forget(self, sandbox_id: str, reason: str) -> None:
        self._pods.pop(sandbox_id, None)
        self._notify(sandbox_id)
        self._report(sandbox_id, reason)
        self._reported.discard(sandbox_id)

    def _notify(self, sandbox_id: str) -> None:
        event = self._changed.pop(sandbox_id, None)
        if event is not None:
            event.set()

    def _report(self, sandbox_id: str, reason: str) -> None:
        if sandbox_id in self._destroying or sandbox_id in self._starting or sandbox_id in self._reported:
            return
        self._reported.add(sandbox_id)
        if self._events is not None:
            log.warning("sandbox %s: %s", sandbox_id, reason)
            self._events.sandbox_lost(sandbox_id, reason)

    async def _changes(self, sandbox_id: str, timeout: float) -> None:
        event = self._changed.setdefault(sandbox_id, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await event.wait()

    # ------------------------------------------------------------------ orphans
    async def _orphan_loop(self) -> None:
        while True:
            await asyncio.sleep(min(ORPHAN_SWEEP_SECONDS, self.settings.orphan_grace_seconds))
            try:
                await self.sweep_orphans()
            except ApiError as exc:
                log.warning("orphan sweep failed: %s", exc)

    async def sweep_orphans(self) -> list[str]:
        """Delete pods nobody knows that are older than the grace period."""
        if self._events is None:
            return []
        now = self.clock()
        swept = []
        for sandbox_id, pod in list(self._pods.items()):
            view = podstate.view(pod)
            if sandbox_id in self._starting or sandbox_id in self._destroying or view.deleting:
                continue
            if now - view.created < self.settings.orphan_grace_seconds or self._events.sandbox_known(sandbox_id):
                continue
            log.info("deleting orphaned pod %s (no sandbox of this server owns it)", view.name)
            swept.append(sandbox_id)
            await self.destroy(sandbox_id)
        if self.claims is not None:
            for sandbox_id in list(self.claims.claims):
                if sandbox_id in swept or sandbox_id in self._starting or sandbox_id in self._destroying:
                    continue
                if now - self.claims.created(sandbox_id) < self.settings.orphan_grace_seconds:
                    continue
                if not self._events.sandbox_known(sandbox_id):
                    log.info("releasing orphaned claim %s (no sandbox of this server owns it)", sandbox_id)
                    swept.append(sandbox_id)
                    await self.destroy(sandbox_id)
        return swept

    # ------------------------------------------------------------------ Runtime
    def _address(self, sandbox_id: str, view: podstate.PodView) -> TcpAgentAddress:
        token = labels.agent_token(self.settings.server_key, sandbox_id)
        claimed = self.claims is not None and sandbox_id in self.claims.claims
        return TcpAgentAddress(
            view.pod_ip or "", self.settings.agent_port, sandbox_id, token, bind_pod_uid=view.uid if claimed else None
        )

    async def _claim(self, spec: SandboxSpec) -> StartedSandbox:
        """agent-sandbox mode: one write (the SandboxClaim); the watches bring the rest."""
        assert self.claims is not None
        sandbox_id = spec.sandbox_id
        self._starting.add(sandbox_id)
        try:
            try:
                await self.claims.claim(sandbox_id, spec.template.name)
            except ApiError as exc:
                raise RuntimeFailure(f"the cluster refused the sandbox's claim: {exc.message}") from None
            view = await self._wait_running(sandbox_id)
        except BaseException:
            self._starting.discard(sandbox_id)
            await asyncio.shield(self.destroy(sandbox_id))
            raise
        self._starting.discard(sandbox_id)
        return StartedSandbox(sandbox_id, self._address(sandbox_id, view), 0)

    async def start(self, spec: SandboxSpec) -> StartedSandbox:
        image = self.settings.template_images.get(spec.template.name)
        if image is None:
            raise InvalidRequest(
                f"template {spec.template.name!r} has no container image on this server "
                "(workspace serve --k8s-template-image NAME=IMAGE)",
                field="template",
            )
        if spec.existing_disk:
            raise InvalidRequest(NO_KEPT_FILES)
        await self._ensure_open()
        if self.claims is not None and not spec.network and spec.limits == self.settings.default_limits:
            return await self._claim(spec)  # a warm pool's pods have the default limits and no network
        sandbox_id = spec.sandbox_id
        self._starting.add(sandbox_id)
        try:
            try:
                created = await self.api.create_pod(manifests.pod(spec, self.settings, image))
            except ApiError as exc:
                raise RuntimeFailure(f"the cluster refused the sandbox's pod: {exc.message}") from None
            if sandbox_id not in self._pods:  # the watch may have brought a newer version already
                self._pods[sandbox_id] = created
            metadata = created["metadata"]
            token = labels.agent_token(self.settings.server_key, sandbox_id)
            secret = manifests.agent_secret(sandbox_id, token, self.settings, metadata["name"], metadata["uid"])
            try:
                await self.api.create_secret(secret)
            except ApiError as exc:
                if exc.status != 409:  # 409: a retried request made it already
                    raise RuntimeFailure(f"the cluster refused the sandbox's secret: {exc.message}") from None
            view = await self._wait_running(sandbox_id)
        except BaseException:
            self._starting.discard(sandbox_id)
            await asyncio.shield(self.destroy(sandbox_id))
            raise
        self._starting.discard(sandbox_id)
        return StartedSandbox(sandbox_id, self._address(sandbox_id, view), 0)

    async def _wait_running(self, sandbox_id: str) -> podstate.PodView:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.pod_start_timeout
        while True:
            pod = self._pod_of(sandbox_id)
            if pod is None:
                if self.claims is not None and sandbox_id in self.claims.claims:  # not bound yet
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        raise RuntimeFailure(f"no warm pod was bound to the claim of sandbox {sandbox_id} in time")
                    await self._changes(sandbox_id, remaining)
                    continue
                raise RuntimeFailure(f"the pod of sandbox {sandbox_id} was deleted while it started")
            view = podstate.view(pod)
            if view.failure:
                raise RuntimeFailure(f"sandbox {sandbox_id} could not start: {view.failure}")
            if view.reachable:
                return view
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise RuntimeFailure(
                    f"the pod of sandbox {sandbox_id} was not running after {self.settings.pod_start_timeout:.0f}s "
                    f"(phase {view.phase}): the cluster may lack capacity"
                )
            await self._changes(sandbox_id, remaining)

    def _pod_of(self, sandbox_id: str) -> dict[str, Any] | None:
        if self.claims is not None:
            name = self.claims.pod_name(sandbox_id)
            if name is not None:
                return self._pods_by_name.get(name)
        return self._pods.get(sandbox_id)

    async def destroy(self, sandbox_id: str) -> None:
        await self._ensure_open()
        self._destroying.add(sandbox_id)
        try:
            if self.claims is not None and sandbox_id in self.claims.claims:
                await self.claims.release(sandbox_id)  # shutdownPolicy Delete: the pod goes with it
            else:
                await self.api.delete_pod(manifests.pod_name(sandbox_id))
        except ApiError as exc:
            raise RuntimeFailure(f"could not delete the pod of sandbox {sandbox_id}: {exc.message}") from None
        finally:
            self._destroying.discard(sandbox_id)
            self._reported.add(sandbox_id)  # its pod's last events are ours, not a loss

    async def running(self, sandbox_id: str) -> StartedSandbox | None:
        await self._ensure_open()
        pod = self._pod_of(sandbox_id)
        if pod is None:
            return None
        view = podstate.view(pod)
        if not view.reachable or view.failure:
            return None
        return StartedSandbox(sandbox_id, self._address(sandbox_id, view), 0)

    def lost_reason(self, sandbox_id: str) -> str | None:
        """Why the sandbox's pod is gone or dead, if the cluster has said so."""
        pod = self._pod_of(sandbox_id)
        if pod is None:
            return "the sandbox's pod no longer exists" if self._opened is not None else None
        view = podstate.view(pod)
        return view.failure or ("the sandbox's pod is being deleted" if view.deleting else None)

    async def list_ids(self) -> list[str]:
        """Sandboxes with a pod, except pods younger than the orphan grace period (another
        create may still be recording them; the orphan sweep looks at them later)."""
        await self._ensure_open()
        now = self.clock()
        grace = self.settings.orphan_grace_seconds
        found = {sandbox_id for sandbox_id, pod in self._pods.items() if now - podstate.view(pod).created >= grace}
        if self.claims is not None:
            found.update(s for s in self.claims.claims if now - self.claims.created(s) >= grace)
        return sorted(found)

    @property
    def adjustable_limits(self) -> bool:
        return False  # in-place pod resize is beta and not everywhere; claims with other limits start cold

    async def apply_limits(self, sandbox_id: str, current: ResourceLimits, wanted: ResourceLimits) -> None:
        raise RuntimeFailure("the kubernetes runtime cannot change a running sandbox's limits")

    @property
    def attachable_network(self) -> bool:
        return False  # a pod's egress is its NetworkPolicy, chosen when it is made: network creates start cold

    async def attach_network(self, sandbox_id: str, host_pid: int) -> None:
        raise RuntimeFailure("the kubernetes runtime cannot give a running sandbox a network")

    def oom_kills(self, sandbox_id: str) -> int:
        pod = self._pod_of(sandbox_id)
        return podstate.view(pod).oom_kills if pod is not None else 0

    def layers_in_use(self) -> list[str]:
        return []  # image templates (docs/templates.md) are the local runtime's for now

    async def pack_changes(self, sandbox_id: str, target: Path) -> None:
        raise InvalidRequest("snapshots are not available with the kubernetes runtime")

    # ------------------------------------------------------------------ lifecycle: what pods cannot do
    async def freeze(self, sandbox_id: str) -> None:
        raise InvalidRequest(NO_PAUSE)

    async def thaw(self, sandbox_id: str) -> None:
        """Nothing is ever frozen here (freeze refuses), so there is nothing to undo."""

    def frozen(self, sandbox_id: str) -> bool:
        return False

    async def stop(self, sandbox_id: str) -> None:
        """Its processes end and its resources go back to the cluster: the pod is deleted.
        Its files go with it (has_disk is False), so a later start is refused clearly."""
        await self.destroy(sandbox_id)

    def has_disk(self, sandbox_id: str) -> bool:
        return False  # the writable dirs are emptyDirs: they never outlive the pod

    async def copy_disk(self, source_id: str, target_id: str) -> None:
        raise InvalidRequest(NO_PAUSE)

    def workload_sample(self, sandbox_id: str) -> WorkloadSample | None:
        """Unknown from outside the pod: idle timeouts count API activity only."""
        return None
