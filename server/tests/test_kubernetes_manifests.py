"""Tier 1 (offline golden tests): every object the Kubernetes runtime builds, and every
example manifest under deploy/kubernetes, is what an API server would accept (official
OpenAPI schemas, strict; agent-sandbox CRD schemas), and obeys our policy: no
service-account token, Guaranteed QoS, the restricted Pod Security Standard, labels within
Kubernetes' limits."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import kubernetes_schemas
from workspace_server.domain.models import ResourceLimits, Template
from workspace_server.runtimes.base import SandboxSpec
from workspace_server.runtimes.kubernetes import labels, manifests
from workspace_server.runtimes.kubernetes.settings import KubernetesSettings, parse_template_images

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "kubernetes"
LONG_TEMPLATE = "registry.example.com:5000/" + "team/" * 20 + "Python_3.12:Latest+build.7"
TEMPLATES = ["default", "workspace-test:latest", LONG_TEMPLATE]
LIMITS = [
    ResourceLimits(),
    ResourceLimits(cpu=0.05, memory_mb=32, pids=8, disk_mb=8),
    ResourceLimits(8.0, 16384, 4096, 65536),
]
SETTINGS = [KubernetesSettings(), KubernetesSettings(runtime_class="gvisor", owner="team-a.workspace_1")]


def pods() -> list[dict[str, Any]]:
    built = []
    for settings in SETTINGS:
        for template in TEMPLATES:
            for limits in LIMITS:
                for network in (False, True):
                    spec = SandboxSpec("sbx-0123456789abcdef", Template(template, ""), limits, network)
                    built.append(manifests.pod(spec, settings, "python:3.12-slim", expires_at=1.9e9))
    return built


def agent_sandbox_objects() -> list[dict[str, Any]]:
    built = []
    for settings in SETTINGS:
        for template in TEMPLATES:
            built.append(manifests.sandbox_template(template, settings, "python:3.12-slim", ResourceLimits()))
            built.append(manifests.warm_pool(template, settings, 3))
            built.append(manifests.sandbox_claim("sbx-0123456789abcdef", template, settings))
    return built


def secret() -> dict[str, Any]:
    return manifests.agent_secret(
        "sbx-0123456789abcdef", "t" * 64, KubernetesSettings(), "sbx-0123456789abcdef", "6f0e9c1e-uid"
    )


def deploy_objects() -> list[dict[str, Any]]:
    found = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        found += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def pod_specs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj["kind"] == "Pod":
        return [obj["spec"]]
    if obj["kind"] in ("Deployment",):
        return [obj["spec"]["template"]["spec"]]
    if obj["kind"] in ("SandboxTemplate", "Sandbox"):
        return [obj["spec"]["podTemplate"]["spec"]]
    return []


ALL = pods() + agent_sandbox_objects() + [secret()] + deploy_objects()


@pytest.mark.parametrize("obj", ALL, ids=lambda o: f"{o['kind']}-{o['metadata']['name'][:40]}")
def test_an_api_server_would_accept_it(obj: dict[str, Any]) -> None:
    kubernetes_schemas.validate(obj)


def test_the_deploy_examples_hold_every_kind_the_docs_promise() -> None:
    kinds = {obj["kind"] for obj in deploy_objects()}
    assert {"Deployment", "ServiceAccount", "Role", "RoleBinding", "NetworkPolicy", "Namespace"} <= kinds


@pytest.mark.parametrize(
    "breakage",
    [
        lambda o: o["metadata"]["labels"].__setitem__(labels.TEMPLATE, "x" * 64),
        lambda o: o["metadata"]["labels"].__setitem__(labels.TEMPLATE, "a:b"),
        lambda o: o["spec"].__setitem__("automountServiceAccountTokn", False),
        lambda o: o["spec"]["containers"][0].__setitem__("resources", {"limits": {"cpu": "lots"}}),
        lambda o: o["metadata"].__setitem__("name", "Sbx_Upper"),
    ],
)
def test_the_validator_refuses_what_an_api_server_refuses(breakage: Any) -> None:
    """The golden tests can fail: each breakage of a good pod is caught."""
    broken = copy.deepcopy(pods()[0])
    breakage(broken)
    with pytest.raises(kubernetes_schemas.Invalid):
        kubernetes_schemas.validate(broken)


def test_the_crd_validator_refuses_a_claim_without_its_template() -> None:
    claim = manifests.sandbox_claim("sbx-1", "default", KubernetesSettings())
    del claim["spec"]["sandboxTemplateRef"]
    with pytest.raises(kubernetes_schemas.Invalid):
        kubernetes_schemas.validate(claim)


# ---------------------------------------------------------------- policy

RESTRICTED_VOLUME_KINDS = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(spec: dict[str, Any]) -> list[str]:
    """The `restricted` Pod Security Standard (kubernetes.io/docs/concepts/security/pod-security-standards)."""
    problems = []
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            problems.append(key)
    pod_context = spec.get("securityContext", {})
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_KINDS:
            problems.append(f"volume {volume['name']}: {kinds}")
    for container in spec.get("initContainers", []) + spec["containers"]:
        context = container.get("securityContext", {})
        name = container["name"]
        if context.get("privileged"):
            problems.append(f"{name}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation")
        if "ALL" not in context.get("capabilities", {}).get("drop", []):
            problems.append(f"{name}: capabilities not dropped")
        if set(context.get("capabilities", {}).get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: capabilities added")
        if not (context.get("runAsNonRoot") or pod_context.get("runAsNonRoot")):
            problems.append(f"{name}: may run as root")
        if context.get("runAsUser", pod_context.get("runAsUser")) == 0:
            problems.append(f"{name}: runs as uid 0")
        seccomp = context.get("seccompProfile", pod_context.get("seccompProfile", {}))
        if seccomp.get("type") not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccomp")
        if any(port.get("hostPort") for port in container.get("ports", [])):
            problems.append(f"{name}: hostPort")
    return problems


@pytest.mark.parametrize(
    "obj", [o for o in ALL if pod_specs(o)], ids=lambda o: f"{o['kind']}-{o['metadata']['name'][:40]}"
)
def test_every_pod_meets_the_restricted_pod_security_standard(obj: dict[str, Any]) -> None:
    for spec in pod_specs(obj):
        assert restricted_violations(spec) == []


@pytest.mark.parametrize("obj", pods() + [o for o in agent_sandbox_objects() if o["kind"] == "SandboxTemplate"])
def test_sandbox_pods_get_no_token_and_guaranteed_qos(obj: dict[str, Any]) -> None:
    spec = pod_specs(obj)[0]
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    assert spec["restartPolicy"] == "Never"
    for container in spec["initContainers"] + spec["containers"]:
        resources = container["resources"]
        assert resources["requests"] == resources["limits"], container["name"]
        assert {"cpu", "memory", "ephemeral-storage"} <= set(resources["limits"])
        assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_limits_become_requests_and_limits() -> None:
    spec = SandboxSpec(
        "sbx-1", Template("default", ""), ResourceLimits(cpu=1.5, memory_mb=700, pids=64, disk_mb=2048), False
    )
    pod = manifests.pod(spec, KubernetesSettings(), "img")
    limits = pod["spec"]["containers"][0]["resources"]["limits"]
    assert limits == {
        "cpu": "1500m",
        "memory": f"{700 + manifests.AGENT_MEMORY_RESERVE_MB}Mi",
        "ephemeral-storage": "2048Mi",
    }
    assert pod["metadata"]["annotations"][labels.PIDS_LIMIT] == "64"


def test_runtime_class_only_when_asked() -> None:
    spec = SandboxSpec("sbx-1", Template("default", ""), ResourceLimits(), False)
    assert "runtimeClassName" not in manifests.pod(spec, KubernetesSettings(), "img")["spec"]
    assert manifests.pod(spec, KubernetesSettings(runtime_class="kata"), "img")["spec"]["runtimeClassName"] == "kata"


def test_the_agent_comes_from_an_init_container_not_the_template_image() -> None:
    spec = SandboxSpec("sbx-1", Template("default", ""), ResourceLimits(), False)
    pod_spec = manifests.pod(spec, KubernetesSettings(agent_image="server:1"), "python:3.12-slim")["spec"]
    (init,) = pod_spec["initContainers"]
    (sandbox,) = pod_spec["containers"]
    assert init["image"] == "server:1" and sandbox["image"] == "python:3.12-slim"
    agent_mount = next(m for m in sandbox["volumeMounts"] if m["name"] == "agent")
    assert agent_mount["readOnly"] is True and sandbox["command"][4] == f"{agent_mount['mountPath']}/agent.py"
    assert init["volumeMounts"] == [{"name": "agent", "mountPath": manifests.AGENT_STAGING}]


def test_labels_carry_identity_within_limits_and_stay_distinct() -> None:
    values = set()
    names = [*TEMPLATES, LONG_TEMPLATE + "2", "a:b", "a/b", "-x-", "ü"]
    for template in names:
        spec = SandboxSpec("sbx-1", Template(template, ""), ResourceLimits(), False)
        metadata = manifests.pod(spec, KubernetesSettings(), "img")["metadata"]
        value = metadata["labels"][labels.TEMPLATE]
        assert len(value) <= 63 and kubernetes_schemas.LABEL_VALUE.match(value), value
        assert metadata["annotations"][labels.TEMPLATE_NAME] == template  # the exact name, unclipped
        values.add(value)
    assert len(values) == len(names)
    metadata = manifests.pod(
        SandboxSpec("sbx-1", Template("default", ""), ResourceLimits(), False), KubernetesSettings(), "img", 1.9e9
    )["metadata"]
    assert metadata["labels"][labels.SANDBOX_ID] == "sbx-1"
    assert metadata["labels"][labels.OWNER] == "workspace"
    assert len(metadata["labels"][labels.SPEC_HASH]) == 16
    assert metadata["annotations"][labels.EXPIRES_AT] == "2030-03-17T17:46:40Z"


def test_the_spec_hash_changes_with_what_the_pod_is_made_of() -> None:
    def hashed(limits: ResourceLimits, network: bool) -> str:
        spec = SandboxSpec("sbx-1", Template("default", ""), limits, network)
        return str(manifests.pod(spec, KubernetesSettings(), "img")["metadata"]["labels"][labels.SPEC_HASH])

    assert hashed(ResourceLimits(), False) == hashed(ResourceLimits(), False)
    assert (
        len({hashed(ResourceLimits(), False), hashed(ResourceLimits(cpu=2), False), hashed(ResourceLimits(), True)})
        == 3
    )


def test_the_secret_belongs_to_its_pod_and_holds_the_token() -> None:
    built = secret()
    (owner,) = built["metadata"]["ownerReferences"]
    assert owner == {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": "sbx-0123456789abcdef",
        "uid": "6f0e9c1e-uid",
        "blockOwnerDeletion": False,
    }
    assert built["immutable"] is True
    assert manifests.decoded_secret(built["data"]) == {"sandbox-id": "sbx-0123456789abcdef", "token": "t" * 64}


def test_agent_tokens_depend_on_key_and_id() -> None:
    token = labels.agent_token(b"k" * 32, "sbx-1")
    assert token == labels.agent_token(b"k" * 32, "sbx-1")
    assert token != labels.agent_token(b"k" * 32, "sbx-2")
    assert token != labels.agent_token(b"j" * 32, "sbx-1")


def test_network_label_selects_the_egress_policy() -> None:
    policies = [o for o in deploy_objects() if o["kind"] == "NetworkPolicy"]
    egress = next(p for p in policies if p["metadata"]["name"] == "sandboxes-public-egress")
    selector = egress["spec"]["podSelector"]["matchLabels"]
    for network, selected in ((True, True), (False, False)):
        spec = SandboxSpec("sbx-1", Template("default", ""), ResourceLimits(), network)
        pod_labels = manifests.pod(spec, KubernetesSettings(), "img")["metadata"]["labels"]
        assert all(pod_labels.get(k) == v for k, v in selector.items()) is selected
    excepted = egress["spec"]["egress"][0]["to"][0]["ipBlock"]["except"]
    for private in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10"):
        assert private in excepted
    deny = next(p for p in policies if p["metadata"]["name"] == "sandboxes-deny-all")
    assert deny["spec"]["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny["spec"]


def test_rbac_is_namespaced_and_minimal() -> None:
    role = next(o for o in deploy_objects() if o["kind"] == "Role")
    assert role["metadata"]["namespace"] == "workspace-sandboxes"
    verbs = {
        (rule["apiGroups"][0], resource): set(rule["verbs"]) for rule in role["rules"] for resource in rule["resources"]
    }
    assert verbs[("", "pods")] == {"create", "delete", "list", "watch"}
    assert verbs[("", "secrets")] == {"create"}
    assert not any(r in ("pods/exec", "pods/attach", "pods/portforward", "*") for _, r in verbs)
    assert not any("*" in v for v in verbs.values())


def test_settings_refuse_bad_values() -> None:
    assert parse_template_images(["default=python:3.12", "a=b,c=d:1"]) == {
        "default": "python:3.12",
        "a": "b",
        "c": "d:1",
    }
    for bad in (["python"], ["=x"], ["x="]):
        with pytest.raises(ValueError):
            parse_template_images(bad)
    for kwargs in (
        {"namespace": "Bad_NS"},
        {"owner": "x" * 64},
        {"mode": "nope"},
        {"runtime_class": "A B"},
        {"qps": 0},
    ):
        with pytest.raises(ValueError):
            KubernetesSettings(**kwargs)  # type: ignore[arg-type]
