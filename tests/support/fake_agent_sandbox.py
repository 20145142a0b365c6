"""A fake agent-sandbox controller for the fake API server: keeps each SandboxWarmPool's
replicas of warm pods (made from its SandboxTemplate's podTemplate; the fake kubelet runs
them), binds a Running warm pod to each new SandboxClaim (status.sandbox: name and podIPs),
refills the pool, and deletes the bound pod with its claim (shutdownPolicy Delete)."""

from __future__ import annotations

import asyncio
import copy
import uuid
from typing import Any

from tests.support.fake_kubernetes import FakeKubernetes, now_stamp

POOL_LABEL = "agents.x-k8s.io/warm-pool"


class FakeAgentSandboxController:
    def __init__(self, api: FakeKubernetes, namespace: str) -> None:
        self.api = api
        self.namespace = namespace
        self.bound: dict[str, str] = {}  # claim name -> pod name
        self.claimed: set[str] = set()  # pod names
        api.run(lambda: api.store.listeners.append(self._on_event))

    def _on_event(self, resource: str, kind: str, obj: dict[str, Any]) -> None:
        if obj["metadata"].get("namespace") != self.namespace:
            return
        loop = asyncio.get_running_loop()
        if resource == "sandboxwarmpools" and kind != "DELETED":
            loop.call_soon(self._reconcile, obj["metadata"]["name"])
        elif resource == "sandboxclaims" and kind == "ADDED":
            loop.call_soon(self._bind_pending)
        elif resource == "sandboxclaims" and kind == "DELETED":
            pod = self.bound.pop(obj["metadata"]["name"], None)
            if pod is not None and ("pods", self.namespace, pod) in self.api.store.objects:
                loop.call_soon(lambda: self.api.store.delete("pods", self.namespace, pod, grace=5))
        elif resource == "pods" and kind == "MODIFIED" and obj.get("status", {}).get("phase") == "Running":
            loop.call_soon(self._bind_pending)

    def _pool_pods(self, pool: str) -> list[dict[str, Any]]:
        return [
            pod
            for (resource, ns, name), pod in sorted(self.api.store.objects.items())
            if resource == "pods"
            and ns == self.namespace
            and (pod["metadata"].get("labels") or {}).get(POOL_LABEL) == pool
            and name not in self.claimed
            and not pod["metadata"].get("deletionTimestamp")
        ]

    def _reconcile(self, pool_name: str) -> None:
        store = self.api.store
        pool = store.objects.get(("sandboxwarmpools", self.namespace, pool_name))
        if pool is None:
            return
        template = store.objects.get(("sandboxtemplates", self.namespace, pool["spec"]["sandboxTemplateRef"]["name"]))
        if template is None:
            return
        for _ in range(pool["spec"]["replicas"] - len(self._pool_pods(pool_name))):
            pod_template = copy.deepcopy(template["spec"]["podTemplate"])
            metadata = pod_template.get("metadata") or {}
            labels = {**(metadata.get("labels") or {}), POOL_LABEL: pool_name}
            name = f"{pool_name}-{uuid.uuid4().hex[:5]}"
            store.create(
                "pods",
                self.namespace,
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": name, "labels": labels, "annotations": metadata.get("annotations") or {}},
                    "spec": pod_template["spec"],
                },
            )

    def _bind_pending(self) -> None:
        store = self.api.store
        for (resource, ns, name), claim in sorted(store.objects.items()):
            if resource != "sandboxclaims" or ns != self.namespace or name in self.bound:
                continue
            pool = claim["spec"].get("warmpool") or "default"
            ready = [p for p in self._pool_pods(pool) if p.get("status", {}).get("phase") == "Running"]
            if not ready:
                continue
            pod = ready[0]
            pod_name = pod["metadata"]["name"]
            self.claimed.add(pod_name)
            self.bound[name] = pod_name
            updated = copy.deepcopy(claim)
            updated["status"] = {
                "sandbox": {"name": pod_name, "podIPs": [pod["status"]["podIP"]]},
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "SandboxReady",
                        "message": "",
                        "lastTransitionTime": now_stamp(),
                    }
                ],
            }
            store.replace("sandboxclaims", ns, name, updated, subresource="status")
            self._reconcile(pool)
