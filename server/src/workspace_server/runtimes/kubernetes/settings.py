"""What `workspace serve --runtime kubernetes` is told about the cluster."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from workspace_server.domain.models import ResourceLimits
from workspace_server.runtimes.kubernetes import labels

TYPE_CHECKING = False
if TYPE_CHECKING:
    from workspace_server.runtimes.kubernetes.runtime import KubernetesRuntime

MODES = ("pods", "agent-sandbox", "auto")
DEFAULT_AGENT_IMAGE = "ghcr.io/workspace/workspace-server:latest"
DEFAULT_AGENT_PORT = 7070
SERVER_KEY_BYTES = 32


@dataclass(frozen=True)
class KubernetesSettings:
    namespace: str = "workspace-sandboxes"
    kubeconfig: Path | None = None  # None: in-cluster config (the pod's service account)
    context: str | None = None
    # template name -> container image; a template without one cannot be created
    template_images: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    # The image whose /opt/workspace-agent the init container copies into the pod: the
    # server's own image, so the agent always matches the server that speaks to it.
    agent_image: str = DEFAULT_AGENT_IMAGE
    agent_port: int = DEFAULT_AGENT_PORT
    python: str = "python3"  # the template image's interpreter (>= 3.9) that runs the agent
    runtime_class: str | None = None  # e.g. "gvisor" or "kata" where the cluster has them
    image_pull_policy: str = "IfNotPresent"
    owner: str = "workspace"  # label value naming this server (several may share a namespace)
    server_key: bytes = b""
    orphan_grace_seconds: float = 120.0
    qps: float = 20.0  # client-side rate limit on API calls (client-go's defaults are 5/10)
    burst: int = 40
    mode: str = "pods"  # "agent-sandbox": SandboxClaims; "auto": that when the API group exists
    pod_start_timeout: float = 300.0  # image pulls can take minutes
    warm_pool_replicas: int = 2  # agent-sandbox mode: each SandboxWarmPool's size
    default_limits: ResourceLimits = field(default_factory=ResourceLimits)  # agent-sandbox templates' pods

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        if not labels.is_dns_label(self.namespace):
            raise ValueError(f"namespace {self.namespace!r} is not a valid Kubernetes namespace name")
        if not labels.is_label_value(self.owner) or not self.owner:
            raise ValueError(f"owner {self.owner!r} is not a valid label value (63 characters, [A-Za-z0-9-_.])")
        if self.runtime_class is not None and not labels.is_dns_subdomain(self.runtime_class):
            raise ValueError(f"runtime class {self.runtime_class!r} is not a valid name")
        if not 0 < self.agent_port < 65536:
            raise ValueError("agent port must be between 1 and 65535")
        if self.qps <= 0 or self.burst < 1:
            raise ValueError("qps must be positive and burst at least 1")


def parse_template_images(pairs: Iterable[str]) -> dict[str, str]:
    """`NAME=IMAGE` pairs (repeated, or comma-separated) into a mapping."""
    images: dict[str, str] = {}
    for item in pairs:
        for pair in filter(None, (p.strip() for p in item.split(","))):
            name, sep, image = pair.partition("=")
            if not sep or not name or not image:
                raise ValueError(f"{pair!r}: expected TEMPLATE=IMAGE")
            images[name] = image
    return images


def load_server_key(path: Path) -> bytes:
    """The key agent tokens are derived from. It must survive restarts (adopted sandboxes
    prove themselves with tokens made from it) and be the same for every replica, so it is
    read from a file (in the cluster: a Secret mounted into the server's pod); created, 0600,
    when missing."""
    try:
        key = path.read_bytes().strip()
    except FileNotFoundError:
        key = secrets.token_hex(SERVER_KEY_BYTES).encode()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key)
    if len(key) < 16:
        raise ValueError(f"{path}: the server key must hold at least 16 bytes")
    return key


def from_options(
    *,
    data_dir: Path,
    namespace: str,
    kubeconfig: Path | None,
    context: str | None,
    template_images: list[str],
    agent_image: str,
    runtime_class: str | None,
    owner: str,
    server_key_file: Path | None,
    mode: str,
    qps: float,
    burst: int,
    orphan_grace_seconds: float,
    warm_pool_replicas: int = 2,
    default_limits: ResourceLimits | None = None,
) -> KubernetesRuntime:
    """The runtime `workspace serve --runtime kubernetes ...` describes (ValueError if not valid)."""
    from workspace_server.runtimes.kubernetes.runtime import KubernetesRuntime

    if kubeconfig is not None and str(kubeconfig) == "":
        kubeconfig = None
    key = load_server_key(server_key_file or data_dir / "k8s-server.key")
    settings = KubernetesSettings(
        namespace=namespace,
        kubeconfig=kubeconfig,
        context=context,
        template_images=MappingProxyType(parse_template_images(template_images)),
        agent_image=agent_image,
        runtime_class=runtime_class or None,
        owner=owner,
        server_key=key,
        mode=mode,
        qps=qps,
        burst=burst,
        orphan_grace_seconds=orphan_grace_seconds,
        warm_pool_replicas=warm_pool_replicas,
        default_limits=default_limits or ResourceLimits(),
    )
    return KubernetesRuntime(settings)
