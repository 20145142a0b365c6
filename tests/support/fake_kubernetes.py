"""A fake Kubernetes API server for tier-2 tests: the part of the API the runtime uses,
served over HTTP on 127.0.0.1 by aiohttp in a thread of the test process.

Faithful where the runtime depends on it: label selectors (equality and set-based),
resourceVersion on every object and list, watches that resume from a resourceVersion (with
bookmarks, and `410 Gone` as an ERROR event once that version is compacted away), `409` on
a name taken, `422` with the reason for an object an API server would refuse (validated as in
the golden tests), `429` with Retry-After when told to throttle, deletion that waits for
finalizers and a grace period, the pods/status subresource, the garbage collector (objects
whose owner is gone are deleted), discovery (/apis), and the agent-sandbox resources.
Nodes are played by tests/support/fake_kubelet.py."""

from __future__ import annotations

import asyncio
import copy
import json
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.support import kubernetes_schemas

HISTORY_LIMIT = 100_000
BOOKMARK_SECONDS = 1.0
AGENT_SANDBOX_RESOURCES = {"sandboxclaims", "sandboxtemplates", "sandboxwarmpools"}
KINDS = {
    "pods": "Pod",
    "secrets": "Secret",
    "sandboxclaims": "SandboxClaim",
    "sandboxtemplates": "SandboxTemplate",
    "sandboxwarmpools": "SandboxWarmPool",
    "sandboxes": "Sandbox",
}
Key = tuple[str, str, str]  # resource, namespace, name


def now_stamp() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


# ---------------------------------------------------------------- label selectors
_REQUIREMENT = re.compile(
    r"^\s*(?:(?P<not>!)\s*(?P<nkey>[^\s!=,()]+)|(?P<key>[^\s!=,()]+)\s*"
    r"(?:(?P<op>==|=|!=)\s*(?P<value>[^\s,()]*)|\s+(?P<setop>in|notin)\s*\((?P<values>[^)]*)\))?)\s*$"
)


def _split_selector(selector: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in selector:
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += char == "("
        depth -= char == ")"
        current += char
    if current.strip():
        parts.append(current)
    return parts


def parse_selector(selector: str) -> Callable[[dict[str, str]], bool]:
    """A predicate on labels; ValueError on bad syntax (the API server answers 400)."""
    checks: list[Callable[[dict[str, str]], bool]] = []
    for part in _split_selector(selector or ""):
        match = _REQUIREMENT.match(part)
        if not match:
            raise ValueError(f"unable to parse requirement: {part!r}")
        if match["not"]:
            checks.append(lambda labels, k=match["nkey"]: k not in labels)
        elif match["op"] in ("=", "=="):
            checks.append(lambda labels, k=match["key"], v=match["value"]: labels.get(k) == v)
        elif match["op"] == "!=":
            checks.append(lambda labels, k=match["key"], v=match["value"]: labels.get(k) != v)
        elif match["setop"]:
            values = {v.strip() for v in match["values"].split(",") if v.strip()}
            if match["setop"] == "in":
                checks.append(lambda labels, k=match["key"], vs=values: labels.get(k) in vs)
            else:
                checks.append(lambda labels, k=match["key"], vs=values: labels.get(k) not in vs)
        else:
            checks.append(lambda labels, k=match["key"]: k in labels)
    return lambda labels: all(check(labels) for check in checks)


def status(code: int, reason: str, message: str, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
        **extra,
    }


class ApiFailure(Exception):
    def __init__(self, code: int, reason: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.body = status(code, reason, message)
        self.code = code
        self.headers = headers or {}


# ---------------------------------------------------------------- the store
class Store:
    """Objects, the event history watches replay, and the watchers."""

    def __init__(self) -> None:
        self.objects: dict[Key, dict[str, Any]] = {}
        self.revision = 1
        self.history: list[tuple[int, str, str, str, dict[str, Any]]] = []
        self.compacted = 0  # events at or below this revision are gone: older watches get 410
        self.watchers: list[tuple[str, str, asyncio.Queue[tuple[int, str, dict[str, Any]]]]] = []
        self.listeners: list[Callable[[str, str, dict[str, Any]], None]] = []  # the kubelet, the GC

    def _emit(self, resource: str, namespace: str, kind: str, obj: dict[str, Any]) -> None:
        self.revision += 1
        obj["metadata"]["resourceVersion"] = str(self.revision)
        snapshot = copy.deepcopy(obj)
        self.history.append((self.revision, resource, namespace, kind, snapshot))
        if len(self.history) > HISTORY_LIMIT:
            dropped = self.history[: len(self.history) - HISTORY_LIMIT]
            self.compacted = dropped[-1][0]
            del self.history[: len(dropped)]
        for watched, watched_ns, queue in list(self.watchers):
            if watched == resource and watched_ns == namespace:
                queue.put_nowait((self.revision, kind, snapshot))
        for listener in list(self.listeners):
            listener(resource, kind, snapshot)

    def create(self, resource: str, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        metadata = obj.setdefault("metadata", {})
        if not metadata.get("name") and metadata.get("generateName"):
            metadata["name"] = metadata["generateName"] + uuid.uuid4().hex[:5]
        key = (resource, namespace, metadata.get("name", ""))
        if key in self.objects:
            raise ApiFailure(409, "AlreadyExists", f'{resource} "{key[2]}" already exists')
        metadata.setdefault("namespace", namespace)
        if metadata.get("namespace") != namespace:
            raise ApiFailure(400, "BadRequest", "the namespace of the object does not match the request")
        try:
            kubernetes_schemas.validate(obj)
        except kubernetes_schemas.Invalid as exc:
            raise ApiFailure(422, "Invalid", str(exc)) from None
        metadata.update(uid=str(uuid.uuid4()), creationTimestamp=now_stamp(), generation=1)
        if resource == "pods":
            obj["status"] = {"phase": "Pending", "qosClass": "Guaranteed"}
        self.objects[key] = obj
        self._emit(resource, namespace, "ADDED", obj)
        return obj

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any]:
        obj = self.objects.get((resource, namespace, name))
        if obj is None:
            raise ApiFailure(404, "NotFound", f'{resource} "{name}" not found')
        return obj

    def replace(
        self, resource: str, namespace: str, name: str, new: dict[str, Any], subresource: str = ""
    ) -> dict[str, Any]:
        current = self.get(resource, namespace, name)
        wanted_version = (new.get("metadata") or {}).get("resourceVersion")
        if wanted_version and wanted_version != current["metadata"]["resourceVersion"]:
            raise ApiFailure(
                409, "Conflict", f'Operation cannot be fulfilled on {resource} "{name}": the object has been modified'
            )
        updated = copy.deepcopy(current)
        if subresource == "status":
            updated["status"] = copy.deepcopy(new.get("status") or {})
        else:
            for field in ("labels", "annotations", "finalizers"):
                if field in (new.get("metadata") or {}):
                    updated["metadata"][field] = copy.deepcopy(new["metadata"][field])
            if "spec" in new:
                updated["spec"] = copy.deepcopy(new["spec"])
            try:
                kubernetes_schemas.validate(updated)
            except kubernetes_schemas.Invalid as exc:
                raise ApiFailure(422, "Invalid", str(exc)) from None
        self.objects[(resource, namespace, name)] = updated
        self._emit(resource, namespace, "MODIFIED", updated)
        if updated["metadata"].get("deletionTimestamp") and not updated["metadata"].get("finalizers"):
            self._finish_delete(resource, namespace, name, graceful=resource != "pods")
        return updated

    def delete(self, resource: str, namespace: str, name: str, grace: int | None = None) -> dict[str, Any]:
        obj = self.get(resource, namespace, name)
        if obj["metadata"].get("deletionTimestamp"):
            return obj
        graceful = (
            resource == "pods" and (grace is None or grace > 0) and obj["status"].get("phase") in ("Running", "Pending")
        )
        if obj["metadata"].get("finalizers") or graceful:
            obj = copy.deepcopy(obj)
            obj["metadata"]["deletionTimestamp"] = now_stamp()
            obj["metadata"]["deletionGracePeriodSeconds"] = grace if grace is not None else 30
            self.objects[(resource, namespace, name)] = obj
            self._emit(resource, namespace, "MODIFIED", obj)  # the kubelet stops it, then finishes the delete
            return obj
        self._finish_delete(resource, namespace, name, graceful=False)
        return obj

    def _finish_delete(self, resource: str, namespace: str, name: str, graceful: bool) -> None:
        obj = self.objects.get((resource, namespace, name))
        if obj is None or (graceful and resource == "pods"):
            return
        if obj["metadata"].get("finalizers"):
            return
        del self.objects[(resource, namespace, name)]
        self._emit(resource, namespace, "DELETED", obj)
        # The garbage collector: dependents of a deleted owner go too (background propagation).
        uid = obj["metadata"]["uid"]
        for key, dependent in list(self.objects.items()):
            if any(ref.get("uid") == uid for ref in dependent["metadata"].get("ownerReferences") or []):
                self.delete(key[0], key[1], key[2], grace=0)

    def remove_pod(self, namespace: str, name: str) -> None:
        """The kubelet has stopped the pod's containers: the delete completes."""
        obj = self.objects.get(("pods", namespace, name))
        if obj is not None and not obj["metadata"].get("finalizers"):
            self._finish_delete("pods", namespace, name, graceful=False)

    def list(
        self, resource: str, namespace: str, selector: str, limit: int = 0, continue_token: str = ""
    ) -> dict[str, Any]:
        """A list, paged as the API server pages one: `limit` items a page, `continue` for the
        next, all pages at the first page's resourceVersion (names after the last one sent)."""
        matches = parse_selector(selector)
        revision, after = self.revision, ""
        if continue_token:
            revision_text, _, after = continue_token.partition(":")
            revision = int(revision_text)
        items = [
            copy.deepcopy(obj)
            for (res, ns, name), obj in sorted(self.objects.items())
            if res == resource and ns == namespace and name > after and matches(obj["metadata"].get("labels") or {})
        ]
        metadata: dict[str, Any] = {"resourceVersion": str(revision)}
        if limit and len(items) > limit:
            items = items[:limit]
            metadata["continue"] = f"{revision}:{items[-1]['metadata']['name']}"
        return {
            "kind": KINDS.get(resource, "Object") + "List",
            "apiVersion": "v1",
            "metadata": metadata,
            "items": items,
        }


# ---------------------------------------------------------------- the HTTP API
class FakeKubernetes:
    def __init__(self, agent_sandbox: bool = False) -> None:
        self.store = Store()
        self.agent_sandbox = agent_sandbox
        self.requests: Counter[str] = Counter()  # "list pods", "watch pods", "create pods", ...
        self.request_times: list[tuple[float, str]] = []  # (time.monotonic(), "create pods")
        self.throttled = 0  # 429s answered
        self.throttle_next = 0
        self.retry_after = 1
        self.url = ""
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._watch_tasks: set[asyncio.Task[Any]] = set()

    # -- lifecycle (from the test's thread)
    def start(self) -> FakeKubernetes:
        self._thread = threading.Thread(target=self._run, name="fake-kubernetes", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fake Kubernetes API did not start")
        return self

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())
        self._ready.set()
        self.loop.run_forever()

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        if self.loop is None:
            return

        async def shutdown() -> None:
            for task in list(self._watch_tasks):
                task.cancel()
            if self._runner is not None:
                await self._runner.cleanup()

        self.call(shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def call(self, coroutine: Any, timeout: float = 30) -> Any:
        """Run a coroutine on the fake's loop (the store is only touched there)."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def run(self, function: Callable[[], Any]) -> Any:
        async def wrapper() -> Any:
            return function()

        return self.call(wrapper())

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": "fake", "user": {"token": "fake-token"}}],
                    "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                    "current-context": "fake",
                }
            )
        )
        return path

    # -- test controls
    def throttle(self, requests: int, retry_after: int = 1) -> None:
        def apply() -> None:
            self.throttle_next = requests
            self.retry_after = retry_after

        self.run(apply)

    def expire_history(self) -> None:
        """Compact: every resourceVersion so far is too old to resume a watch from, and the
        open watches are ended with 410 (as after an etcd compaction)."""

        def apply() -> None:
            self.store.compacted = self.store.revision
            self.store.history.clear()
            for _, _, queue in self.store.watchers:
                queue.put_nowait((0, "EXPIRED", {}))

        self.run(apply)

    def pods(self, namespace: str) -> list[dict[str, Any]]:
        return list(self.run(lambda: self.store.list("pods", namespace, "")["items"]))

    # -- HTTP
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._route(request)
        except ApiFailure as exc:
            return web.json_response(exc.body, status=exc.code, headers=exc.headers)

    async def _route(self, request: web.Request) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if parts == ["api"]:
            return web.json_response({"kind": "APIVersions", "versions": ["v1"]})
        if parts == ["apis"]:
            groups = []
            if self.agent_sandbox:
                for group in kubernetes_schemas.AGENT_SANDBOX_GROUPS:
                    version = {"groupVersion": f"{group}/v1alpha1", "version": "v1alpha1"}
                    groups.append({"name": group, "versions": [version], "preferredVersion": version})
            return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        # /api/v1/namespaces/{ns}/{resource}[/{name}[/{sub}]]  or  /apis/{group}/{version}/namespaces/...
        if parts[:2] == ["api", "v1"]:
            rest = parts[2:]
        elif (
            parts[:1] == ["apis"]
            and len(parts) > 3
            and parts[1] in kubernetes_schemas.AGENT_SANDBOX_GROUPS
            and self.agent_sandbox
        ):
            rest = parts[3:]
        else:
            raise ApiFailure(404, "NotFound", f"the server could not find the requested resource ({request.path})")
        if len(rest) < 3 or rest[0] != "namespaces":
            raise ApiFailure(404, "NotFound", "only namespaced resources are served")
        namespace, resource = rest[1], rest[2]
        name = rest[3] if len(rest) > 3 else None
        subresource = rest[4] if len(rest) > 4 else ""
        if resource not in KINDS or (resource in AGENT_SANDBOX_RESOURCES and not self.agent_sandbox):
            raise ApiFailure(404, "NotFound", f"no resource {resource}")
        watch = request.query.get("watch", "").lower() in ("true", "1")
        verb = {
            "GET": "watch" if watch else ("get" if name else "list"),
            "POST": "create",
            "PUT": "update",
            "DELETE": "delete",
        }.get(request.method, request.method)
        what = f"{verb} {resource}{'/' + subresource if subresource else ''}"
        self.requests[what] += 1
        self.request_times.append((time.monotonic(), what))
        if self.throttle_next > 0:
            self.throttle_next -= 1
            self.throttled += 1
            raise ApiFailure(
                429,
                "TooManyRequests",
                "too many requests, please try again later",
                {"Retry-After": str(self.retry_after)},
            )
        if verb == "watch":
            return await self._watch(request, resource, namespace)
        if verb == "list":
            try:
                query = request.query
                listed = self.store.list(
                    resource,
                    namespace,
                    query.get("labelSelector", ""),
                    int(query.get("limit", "0")),
                    query.get("continue", ""),
                )
                return web.json_response(listed)
            except ValueError as exc:
                raise ApiFailure(400, "BadRequest", str(exc)) from None
        if verb == "get" and name:
            return web.json_response(self.store.get(resource, namespace, name))
        if verb == "create" and not name:
            body = await self._body(request)
            return web.json_response(self.store.create(resource, namespace, body), status=201)
        if verb == "update" and name:
            body = await self._body(request)
            return web.json_response(self.store.replace(resource, namespace, name, body, subresource))
        if verb == "delete" and name:
            grace = None
            if "gracePeriodSeconds" in request.query:
                grace = int(request.query["gracePeriodSeconds"])
            elif request.can_read_body:
                options = await self._body(request)
                grace = options.get("gracePeriodSeconds")
            return web.json_response(self.store.delete(resource, namespace, name, grace))
        raise ApiFailure(405, "MethodNotAllowed", f"{request.method} is not supported here")

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise ApiFailure(400, "BadRequest", "the body is not JSON") from None
        if not isinstance(body, dict):
            raise ApiFailure(400, "BadRequest", "the body must be an object")
        return body

    async def _watch(self, request: web.Request, resource: str, namespace: str) -> web.StreamResponse:
        try:
            matches = parse_selector(request.query.get("labelSelector", ""))
        except ValueError as exc:
            raise ApiFailure(400, "BadRequest", str(exc)) from None
        since = int(request.query.get("resourceVersion") or self.store.revision)
        timeout = float(request.query.get("timeoutSeconds") or 1800)
        bookmarks = request.query.get("allowWatchBookmarks", "").lower() in ("true", "1")
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)

        async def send(event: dict[str, Any]) -> None:
            await response.write(json.dumps(event).encode() + b"\n")

        if since < self.store.compacted:
            await send(
                {
                    "type": "ERROR",
                    "object": status(410, "Expired", f"too old resource version: {since} ({self.store.compacted})"),
                }
            )
            return response
        queue: asyncio.Queue[tuple[int, str, dict[str, Any]]] = asyncio.Queue()
        for revision, res, ns, kind, obj in self.store.history:
            if revision > since and res == resource and ns == namespace:
                queue.put_nowait((revision, kind, obj))
        watcher = (resource, namespace, queue)
        self.store.watchers.append(watcher)
        task = asyncio.current_task()
        if task is not None:
            self._watch_tasks.add(task)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while loop.time() < deadline:
                try:
                    revision, kind, obj = await asyncio.wait_for(
                        queue.get(), min(BOOKMARK_SECONDS, deadline - loop.time())
                    )
                except TimeoutError:
                    if bookmarks:
                        await send(
                            {
                                "type": "BOOKMARK",
                                "object": {
                                    "kind": KINDS[resource],
                                    "apiVersion": "v1",
                                    "metadata": {"resourceVersion": str(self.store.revision)},
                                },
                            }
                        )
                    continue
                if kind == "EXPIRED":
                    await send({"type": "ERROR", "object": status(410, "Expired", "too old resource version")})
                    break
                if revision <= since:
                    continue
                if matches(obj["metadata"].get("labels") or {}):
                    await send({"type": kind, "object": obj})
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.store.watchers.remove(watcher)
            if task is not None:
                self._watch_tasks.discard(task)
        return response
