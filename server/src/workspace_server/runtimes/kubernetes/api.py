"""The part of the Kubernetes API the runtime uses, through kubernetes_asyncio.

Objects stay plain JSON dicts (the client's transport, auth and config loading, without
its model classes: a list of thousands of pods is parsed once, by json). Every call goes
through the client-side rate limit and honours 429 + Retry-After."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from workspace_server.domain.errors import RuntimeFailure
from workspace_server.runtimes.kubernetes import manifests
from workspace_server.runtimes.kubernetes.ratelimit import TokenBucket, retry_after_seconds
from workspace_server.runtimes.kubernetes.settings import KubernetesSettings

log = logging.getLogger(__name__)

WATCH_SECONDS = 290  # the API server ends watches after 5-10 min anyway; resume before it does
MAX_THROTTLED_RETRIES = 8
REQUEST_TIMEOUT = 30.0
CLAIMS = "sandboxclaims"
TEMPLATES = "sandboxtemplates"
WARM_POOLS = "sandboxwarmpools"


class ApiError(Exception):
    def __init__(self, status: int, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.body = body or {}


class Gone(ApiError):
    """410: the resourceVersion a watch resumes from is older than the API server keeps."""


LIST_PAGE = 500  # pods per page of a list


class KubernetesApi:
    def __init__(self, settings: KubernetesSettings) -> None:
        self.settings = settings
        self.namespace = settings.namespace
        self.bucket = TokenBucket(settings.qps, settings.burst)
        self.throttled = 0  # 429s answered by the API server
        self.requests = 0  # calls sent (lists, watches and writes)
        self._client: Any = None
        self._core: Any = None
        self._custom: Any = None

    async def open(self) -> None:
        try:
            from kubernetes_asyncio import client, config
        except ImportError:
            raise RuntimeFailure(
                "the kubernetes runtime needs kubernetes_asyncio: pip install 'workspace-server[kubernetes]'"
            ) from None
        configuration = client.Configuration()
        try:
            if self.settings.kubeconfig is not None:
                await config.load_kube_config(
                    config_file=str(self.settings.kubeconfig),
                    context=self.settings.context,
                    client_configuration=configuration,
                )
            else:
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except (config.ConfigException, OSError, ValueError) as exc:
            where = self.settings.kubeconfig or "the in-cluster service account"
            raise RuntimeFailure(f"cannot load the Kubernetes configuration from {where}: {exc}") from None
        self._client = client.ApiClient(configuration)
        self._core = client.CoreV1Api(self._client)
        self._custom = client.CustomObjectsApi(self._client)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    # ------------------------------------------------------------------ transport
    async def _call(self, method: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        """One API call as JSON, rate-limited, retried after 429 as Retry-After says."""
        from kubernetes_asyncio.client.exceptions import ApiException

        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
        for attempt in range(MAX_THROTTLED_RETRIES + 1):
            await self.bucket.acquire()
            self.requests += 1
            try:
                response = await method(*args, _preload_content=False, **kwargs)
            except ApiException as exc:  # the client's own errors (e.g. status 0: no connection)
                raise ApiError(int(exc.status or 0), str(exc.reason)) from None
            except (OSError, asyncio.TimeoutError) as exc:
                raise ApiError(0, f"cannot reach the Kubernetes API: {exc!r}") from None
            try:
                raw = await response.read()
                status = response.status
                headers = dict(response.headers)
            finally:
                response.release()
            body = _json(raw)
            if status == 429 and attempt < MAX_THROTTLED_RETRIES:
                self.throttled += 1
                wait = retry_after_seconds(headers)
                log.info("Kubernetes API throttled a request (429); retrying in %.1fs", wait)
                await asyncio.sleep(wait)
                continue
            if not 200 <= status < 300:
                message = str(body.get("message") or raw[:200].decode(errors="replace"))
                raise (Gone if status == 410 else ApiError)(status, message, body)
            return body
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ pods and secrets
    async def create_pod(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(await self._call(self._core.create_namespaced_pod, self.namespace, body))

    async def delete_pod(self, name: str, grace_seconds: int = manifests.TERMINATION_GRACE_SECONDS) -> None:
        """Delete; a pod that is already gone is fine. Background propagation: the Secret it
        owns is the garbage collector's to delete."""
        try:
            await self._call(
                self._core.delete_namespaced_pod,
                name,
                self.namespace,
                grace_period_seconds=grace_seconds,
                propagation_policy="Background",
            )
        except ApiError as exc:
            if exc.status != 404:
                raise

    async def create_secret(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(await self._call(self._core.create_namespaced_secret, self.namespace, body))

    async def list_pods(self, selector: str) -> tuple[list[dict[str, Any]], str]:
        """Every matching pod and the list's resourceVersion (where a watch resumes), read in
        pages of LIST_PAGE: one response for 10k pods would hold the API server (and us) to
        a body of hundreds of MiB. The pages are one snapshot, at the first page's version."""
        pods: list[dict[str, Any]] = []
        continue_token: str | None = None
        version = ""
        while True:
            page = {"_continue": continue_token} if continue_token else {}
            try:
                body = await self._call(
                    self._core.list_namespaced_pod, self.namespace, label_selector=selector, limit=LIST_PAGE, **page
                )
            except ApiError as exc:
                if exc.status != 410 or not continue_token:
                    raise
                pods, continue_token, version = [], None, ""  # the snapshot expired mid-list: again
                continue
            pods += body.get("items") or []
            metadata = body["metadata"]
            version = version or str(metadata["resourceVersion"])
            continue_token = metadata.get("continue")
            if not continue_token:
                return pods, version

    async def watch_pods(self, selector: str, resource_version: str) -> AsyncIterator[dict[str, Any]]:
        async for event in self._watch(self._core.list_namespaced_pod, selector, resource_version):
            yield event

    async def _watch(
        self, method: Callable[..., Awaitable[Any]], selector: str, resource_version: str, *args: Any
    ) -> AsyncIterator[dict[str, Any]]:
        """Events after `resource_version` ({"type", "object"}, BOOKMARKs included: they move
        the resume point without any change). Raises Gone when that version has expired."""
        await self.bucket.acquire()
        self.requests += 1
        try:
            response = await method(
                *args,
                self.namespace,
                label_selector=selector,
                watch=True,
                resource_version=resource_version,
                allow_watch_bookmarks=True,
                timeout_seconds=WATCH_SECONDS,
                _preload_content=False,
                _request_timeout=WATCH_SECONDS + 30,
            )
        except (OSError, asyncio.TimeoutError) as exc:
            raise ApiError(0, f"cannot reach the Kubernetes API: {exc!r}") from None
        try:
            if response.status != 200:
                body = _json(await response.read())
                raise (Gone if response.status == 410 else ApiError)(response.status, str(body.get("message")), body)
            while True:
                line = await response.content.readline()
                if not line:
                    return
                event = _json(line)
                if event.get("type") == "ERROR":
                    status = event.get("object") or {}
                    code = int(status.get("code") or 500)
                    raise (Gone if code == 410 else ApiError)(code, str(status.get("message")), status)
                if "type" in event and isinstance(event.get("object"), dict):
                    yield event
        finally:
            response.release()

    # ------------------------------------------------------------------ discovery and agent-sandbox
    async def has_api_group(self, group: str) -> bool:
        from kubernetes_asyncio import client

        body = await self._call(client.ApisApi(self._client).get_api_versions)
        return any(item.get("name") == group for item in body.get("groups") or [])

    def _custom_args(self, plural: str) -> tuple[str, str, str, str]:
        return (manifests.EXTENSIONS_GROUP, manifests.AGENT_SANDBOX_VERSION, self.namespace, plural)

    async def create_custom(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(await self._call(self._custom.create_namespaced_custom_object, *self._custom_args(plural), body))

    async def delete_custom(self, plural: str, name: str) -> None:
        try:
            await self._call(self._custom.delete_namespaced_custom_object, *self._custom_args(plural), name)
        except ApiError as exc:
            if exc.status != 404:
                raise

    async def ensure_custom(self, plural: str, body: dict[str, Any]) -> None:
        """Create, or bring an existing object's spec up to date (one replace, on a conflict
        retried with the newer resourceVersion)."""
        group, version, namespace, _ = self._custom_args(plural)
        name = body["metadata"]["name"]
        try:
            await self.create_custom(plural, body)
            return
        except ApiError as exc:
            if exc.status != 409:
                raise
        for _ in range(3):
            current = await self._call(
                self._custom.get_namespaced_custom_object, group, version, namespace, plural, name
            )
            if current.get("spec") == body["spec"]:
                return
            updated = {
                **body,
                "metadata": {**body["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]},
            }
            try:
                await self._call(
                    self._custom.replace_namespaced_custom_object, group, version, namespace, plural, name, updated
                )
                return
            except ApiError as exc:
                if exc.status != 409:
                    raise
        raise RuntimeFailure(f"could not update {plural}/{name}: it kept changing")

    async def list_custom(self, plural: str, selector: str) -> tuple[list[dict[str, Any]], str]:
        body = await self._call(
            self._custom.list_namespaced_custom_object, *self._custom_args(plural), label_selector=selector
        )
        return list(body.get("items") or []), str(body["metadata"]["resourceVersion"])

    async def watch_custom(self, plural: str, selector: str, resource_version: str) -> AsyncIterator[dict[str, Any]]:
        group, version, _, _ = self._custom_args(plural)

        async def method(*args: Any, **kwargs: Any) -> Any:
            namespace = args[-1]
            return await self._custom.list_namespaced_custom_object(group, version, namespace, plural, **kwargs)

        async for event in self._watch(method, selector, resource_version):
            yield event


def _json(raw: bytes) -> dict[str, Any]:
    try:
        loaded = json.loads(raw)
    except ValueError:
        return {}
    return loaded if isinstance(loaded, dict) else {}
