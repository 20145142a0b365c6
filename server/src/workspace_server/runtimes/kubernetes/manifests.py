"""Pure builders of the objects the Kubernetes runtime creates (plain JSON-ready dicts).

A sandbox is a Pod and a Secret:
  - the Pod runs the template's image with the agent as PID 1; requests = limits (the
    Guaranteed QoS class: never overcommitted, last to be evicted), no service-account
    token, no host namespaces, the `restricted` Pod Security Standard's security context,
    an optional runtimeClassName (gVisor, Kata);
  - the Secret holds the agent's token and is owned by the Pod (ownerReference), so the
    garbage collector deletes it with the Pod, whoever deletes the Pod.

How the agent gets into the pod: an init container from the server's own image copies
`/opt/workspace-agent` (standard-library Python) into an emptyDir that the sandbox
container mounts read-only. The template image needs a python3 (>= 3.9) and nothing of
ours, the agent always matches the server that talks to it, and no image has to be
rebuilt when the server is upgraded. The alternatives were worse: baking the agent into
every template image couples image builds to server releases; an `image` volume (KEP-4639)
is not enabled on most clusters yet; `kubectl cp`/exec puts exec on the data path.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from workspace_server.domain.models import ResourceLimits
from workspace_server.runtimes.base import SandboxSpec
from workspace_server.runtimes.kubernetes import labels
from workspace_server.runtimes.kubernetes.settings import KubernetesSettings

Manifest = dict[str, Any]

AGENT_DIR = "/opt/workspace-agent"  # in the server image and, read-only, in the sandbox
AGENT_STAGING = "/agent"  # where the init container writes
IDENTITY_DIR = "/run/workspace-identity"  # the Secret: sandbox-id and token
SANDBOX_UID = 1000  # the sandbox user; the agent runs as it too (runAsNonRoot)
AGENT_MEMORY_RESERVE_MB = 48  # the agent's own share, on top of memory_mb (as in the local runtime)
AGENT_VOLUME_LIMIT = "16Mi"
SECRET_MODE = 0o440  # root:fsGroup — the agent (in the group) reads it, nothing is world-readable
TERMINATION_GRACE_SECONDS = 5
API_GROUP = "agents.x-k8s.io"  # agent-sandbox: Sandbox
EXTENSIONS_GROUP = "extensions.agents.x-k8s.io"  # SandboxTemplate, SandboxClaim, SandboxWarmPool
AGENT_SANDBOX_VERSION = "v1alpha1"
WRITABLE_DIRS = (
    ("workspace", "/workspace"),
    ("home", "/home/user"),
    ("tmp", "/tmp"),
    ("var-tmp", "/var/tmp"),
    ("agent-run", "/run/workspace"),  # the agent's own state (background processes' logs)
)


def pod_name(sandbox_id: str) -> str:
    return labels.dns_label(sandbox_id)


def secret_name(sandbox_id: str) -> str:
    return labels.dns_label(sandbox_id, labels.MAX_DNS_LABEL - len("-agent")) + "-agent"


def template_object_name(template: str) -> str:
    """The SandboxTemplate / SandboxWarmPool name of one of our templates."""
    return labels.dns_label("workspace-" + template)


def quantities(limits: ResourceLimits) -> dict[str, str]:
    """requests = limits: cpu in millicores, memory with the agent's reserve, the writable
    dirs' total as ephemeral storage (the kubelet evicts a pod that writes more)."""
    return {
        "cpu": f"{max(1, round(limits.cpu * 1000))}m",
        "memory": f"{limits.memory_mb + AGENT_MEMORY_RESERVE_MB}Mi",
        "ephemeral-storage": f"{limits.disk_mb}Mi",
    }


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def sandbox_labels(
    settings: KubernetesSettings, template: str, network: bool, sandbox_id: str | None
) -> dict[str, str]:
    found = {
        labels.MANAGED_BY: labels.MANAGER,
        labels.OWNER: settings.owner,
        labels.ROLE: "sandbox",
        labels.TEMPLATE: labels.label_value(template),
        labels.NETWORK: "egress" if network else "none",
    }
    if sandbox_id is not None:
        found[labels.SANDBOX_ID] = labels.label_value(sandbox_id)
    return found


def _restricted_container_context() -> Manifest:
    return {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": SANDBOX_UID,
        "runAsGroup": SANDBOX_UID,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _agent_args(settings: KubernetesSettings, identity: str) -> list[str]:
    return [
        settings.python,
        "-S",
        "-E",
        "-B",
        f"{AGENT_DIR}/agent.py",
        "--listen-tcp",
        f"0.0.0.0:{settings.agent_port}",
        identity,
    ]


def _pod_spec(
    settings: KubernetesSettings,
    image: str,
    limits: ResourceLimits,
    network: bool,
    identity_args: str,
    identity_volume: Manifest,
) -> Manifest:
    resources = quantities(limits)
    writable = [{"name": name, "emptyDir": {"sizeLimit": resources["ephemeral-storage"]}} for name, _ in WRITABLE_DIRS]
    spec: Manifest = {
        "restartPolicy": "Never",  # the agent is the sandbox: if it dies, the sandbox is over
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,  # no environment variables naming the cluster's services
        "hostNetwork": False,
        "hostPID": False,
        "hostIPC": False,
        "shareProcessNamespace": False,
        "hostname": "sandbox",
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": SANDBOX_UID,
            "runAsGroup": SANDBOX_UID,
            "fsGroup": SANDBOX_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "initContainers": [
            {
                "name": "install-agent",
                "image": settings.agent_image,
                "imagePullPolicy": settings.image_pull_policy,
                "command": ["cp", "-R", f"{AGENT_DIR}/.", AGENT_STAGING],
                # The same figures as the sandbox: an init container's requests count as the
                # pod's if they are higher, and Guaranteed QoS needs requests = limits here too.
                "resources": {"requests": dict(resources), "limits": dict(resources)},
                "securityContext": _restricted_container_context(),
                "volumeMounts": [{"name": "agent", "mountPath": AGENT_STAGING}],
            }
        ],
        "containers": [
            {
                "name": "sandbox",
                "image": image,
                "imagePullPolicy": settings.image_pull_policy,
                "command": _agent_args(settings, identity_args),
                "workingDir": "/",
                "env": [
                    {"name": "PATH", "value": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
                    {"name": "HOME", "value": "/home/user"},
                    {"name": "LANG", "value": "C.UTF-8"},
                ],
                "ports": [{"name": "agent", "containerPort": settings.agent_port, "protocol": "TCP"}],
                "resources": {"requests": dict(resources), "limits": dict(resources)},
                "securityContext": _restricted_container_context(),
                "volumeMounts": [
                    {"name": "agent", "mountPath": AGENT_DIR, "readOnly": True},
                    {"name": "identity", "mountPath": IDENTITY_DIR, "readOnly": True},
                    *({"name": name, "mountPath": path} for name, path in WRITABLE_DIRS),
                ],
            }
        ],
        "volumes": [
            {"name": "agent", "emptyDir": {"sizeLimit": AGENT_VOLUME_LIMIT}},
            identity_volume,
            *writable,
        ],
    }
    if not network:
        # No cluster DNS either: the NetworkPolicy drops all egress of these pods, and a
        # resolver that cannot be reached only makes programs wait for timeouts.
        spec["dnsPolicy"] = "None"
        spec["dnsConfig"] = {"nameservers": ["127.0.0.1"]}
    else:
        # Public resolvers, not the cluster's: cluster DNS would name the cluster's services.
        spec["dnsPolicy"] = "None"
        spec["dnsConfig"] = {"nameservers": ["1.1.1.1", "8.8.8.8"]}
    if settings.runtime_class:
        spec["runtimeClassName"] = settings.runtime_class
    return spec


def pod(spec: SandboxSpec, settings: KubernetesSettings, image: str, expires_at: float | None = None) -> Manifest:
    annotations = {
        labels.TEMPLATE_NAME: spec.template.name,
        labels.PIDS_LIMIT: str(spec.limits.pids),  # enforced per node (kubelet podPidsLimit)
    }
    if expires_at is not None:
        annotations[labels.EXPIRES_AT] = _iso(expires_at)
    pod_labels = sandbox_labels(settings, spec.template.name, spec.network, spec.sandbox_id)
    pod_labels[labels.SPEC_HASH] = labels.spec_hash(image, spec.limits, spec.network, settings.runtime_class)
    identity = {
        "name": "identity",
        "secret": {"secretName": secret_name(spec.sandbox_id), "defaultMode": SECRET_MODE, "optional": False},
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(spec.sandbox_id),
            "namespace": settings.namespace,
            "labels": pod_labels,
            "annotations": annotations,
        },
        "spec": _pod_spec(settings, image, spec.limits, spec.network, f"--identity-dir={IDENTITY_DIR}", identity),
    }


def agent_secret(sandbox_id: str, token: str, settings: KubernetesSettings, owner_pod: str, owner_uid: str) -> Manifest:
    """The agent's token, deleted with its pod (the ownerReference) by the garbage collector."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "immutable": True,
        "metadata": {
            "name": secret_name(sandbox_id),
            "namespace": settings.namespace,
            "labels": {
                labels.MANAGED_BY: labels.MANAGER,
                labels.OWNER: settings.owner,
                labels.ROLE: "agent-token",
                labels.SANDBOX_ID: labels.label_value(sandbox_id),
            },
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Pod", "name": owner_pod, "uid": owner_uid, "blockOwnerDeletion": False}
            ],
        },
        "data": {
            "sandbox-id": base64.b64encode(sandbox_id.encode()).decode(),
            "token": base64.b64encode(token.encode()).decode(),
        },
    }


# ---------------------------------------------------------------- agent-sandbox mode


def sandbox_template(template: str, settings: KubernetesSettings, image: str, limits: ResourceLimits) -> Manifest:
    """An agent-sandbox SandboxTemplate for one of our templates. Its pods are made before
    anyone claims them, so they cannot carry a per-sandbox Secret: the agent learns its pod's
    uid from the downward API and is bound to its sandbox by the server's first connection,
    which must name that uid (runtimes/kubernetes/claims.py)."""
    identity = {
        "name": "identity",
        "downwardAPI": {
            "defaultMode": SECRET_MODE,
            "items": [
                {"path": "pod-uid", "fieldRef": {"fieldPath": "metadata.uid"}},
                {"path": "pod-name", "fieldRef": {"fieldPath": "metadata.name"}},
            ],
        },
    }
    pod_labels = sandbox_labels(settings, template, False, None)
    return {
        "apiVersion": f"{EXTENSIONS_GROUP}/{AGENT_SANDBOX_VERSION}",
        "kind": "SandboxTemplate",
        "metadata": {
            "name": template_object_name(template),
            "namespace": settings.namespace,
            "labels": {labels.MANAGED_BY: labels.MANAGER, labels.OWNER: settings.owner},
            "annotations": {labels.TEMPLATE_NAME: template},
        },
        "spec": {
            # Our own NetworkPolicies (deploy/kubernetes) select these pods by label.
            "networkPolicyManagement": "Unmanaged",
            "podTemplate": {
                "metadata": {"labels": pod_labels, "annotations": {labels.TEMPLATE_NAME: template}},
                "spec": _pod_spec(settings, image, limits, False, f"--bind-dir={IDENTITY_DIR}", identity),
            },
        },
    }


def warm_pool(template: str, settings: KubernetesSettings, replicas: int) -> Manifest:
    return {
        "apiVersion": f"{EXTENSIONS_GROUP}/{AGENT_SANDBOX_VERSION}",
        "kind": "SandboxWarmPool",
        "metadata": {
            "name": template_object_name(template),
            "namespace": settings.namespace,
            "labels": {labels.MANAGED_BY: labels.MANAGER, labels.OWNER: settings.owner},
        },
        "spec": {"replicas": replicas, "sandboxTemplateRef": {"name": template_object_name(template)}},
    }


def sandbox_claim(sandbox_id: str, template: str, settings: KubernetesSettings) -> Manifest:
    """The one write of the claim path: the controller binds a warm Sandbox to it."""
    return {
        "apiVersion": f"{EXTENSIONS_GROUP}/{AGENT_SANDBOX_VERSION}",
        "kind": "SandboxClaim",
        "metadata": {
            "name": labels.dns_label(sandbox_id),
            "namespace": settings.namespace,
            "labels": {
                labels.MANAGED_BY: labels.MANAGER,
                labels.OWNER: settings.owner,
                labels.SANDBOX_ID: labels.label_value(sandbox_id),
                labels.TEMPLATE: labels.label_value(template),
            },
            "annotations": {labels.TEMPLATE_NAME: template},
        },
        "spec": {
            "sandboxTemplateRef": {"name": template_object_name(template)},
            "warmpool": template_object_name(template),
            "lifecycle": {"shutdownPolicy": "Delete"},
        },
    }


def selector(settings: KubernetesSettings, role: str = "sandbox") -> str:
    """The label selector of everything this server owns in its namespace."""
    return f"{labels.MANAGED_BY}={labels.MANAGER},{labels.OWNER}={settings.owner},{labels.ROLE}={role}"


def decoded_secret(data: Mapping[str, str]) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in data.items()}
