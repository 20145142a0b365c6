"""Validation of Kubernetes objects as an API server would: the official OpenAPI schemas
(kubernetes-validate, strict: unknown fields are errors) for built-in kinds, and the
agent-sandbox CRDs' structural schemas (kubernetes-sigs/agent-sandbox, v1alpha1) for
Sandbox, SandboxTemplate, SandboxClaim and SandboxWarmPool, with the pod template inside them
checked against the official PodSpec. Used by the golden tests and by the fake API server
(which answers 422 with the reason, like a real one)."""

from __future__ import annotations

import functools
import re
from typing import Any

import jsonschema
import referencing
from kubernetes_validate import utils as kubernetes_validate_utils

KUBERNETES_VERSION = "1.33"  # the oldest release still supported upstream when this was written
AGENT_SANDBOX_GROUPS = ("agents.x-k8s.io", "extensions.agents.x-k8s.io")

# Kubernetes' own syntax rules for names and labels (apimachinery/pkg/util/validation).
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# resource.Quantity's syntax (the schemas only say "string")
QUANTITY = re.compile(
    r"^[+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)

_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_REF = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}
_POD_TEMPLATE = {
    "type": "object",
    "required": ["spec"],
    "properties": {
        "metadata": {"type": "object", "properties": {"labels": _STRING_MAP, "annotations": _STRING_MAP}},
        "spec": {"type": "object", "required": ["containers"]},  # the PodSpec itself: checked officially
    },
}
_CONDITIONS = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["lastTransitionTime", "message", "reason", "status", "type"],
        "properties": {
            "status": {"enum": ["True", "False", "Unknown"]},
            "reason": {"type": "string", "minLength": 1, "maxLength": 1024},
            "message": {"type": "string", "maxLength": 32768},
            "type": {"type": "string", "maxLength": 316},
            "lastTransitionTime": {"type": "string"},
            "observedGeneration": {"type": "integer", "minimum": 0},
        },
    },
}


def _crd(spec: dict[str, Any], status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status or {"type": "object"},
        },
    }


# Written from the CRDs' openAPIV3Schema (bundle/manifests/*.yaml of agent-sandbox):
# the fields and constraints a client can get wrong; unknown fields are refused, as the API
# server's structural-schema pruning would silently drop them.
AGENT_SANDBOX_SCHEMAS: dict[tuple[str, str], dict[str, Any]] = {
    ("agents.x-k8s.io/v1alpha1", "Sandbox"): _crd(
        {
            "type": "object",
            "required": ["podTemplate"],
            "properties": {
                "podTemplate": _POD_TEMPLATE,
                "replicas": {"type": "integer", "minimum": 0, "maximum": 1},
                "shutdownTime": {"type": "string", "format": "date-time"},
                "shutdownPolicy": {"enum": ["Delete", "Retain"]},
                "volumeClaimTemplates": {"type": "array"},
            },
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {
                "conditions": _CONDITIONS,
                "podIPs": {"type": "array", "items": {"type": "string"}},
                "replicas": {"type": "integer", "minimum": 0},
                "selector": {"type": "string"},
                "service": {"type": "string"},
                "serviceFQDN": {"type": "string"},
            },
        },
    ),
    ("extensions.agents.x-k8s.io/v1alpha1", "SandboxTemplate"): _crd(
        {
            "type": "object",
            "required": ["podTemplate"],
            "properties": {
                "podTemplate": _POD_TEMPLATE,
                "networkPolicy": {"type": "object"},
                "networkPolicyManagement": {"enum": ["Managed", "Unmanaged"]},
            },
            "additionalProperties": False,
        }
    ),
    ("extensions.agents.x-k8s.io/v1alpha1", "SandboxClaim"): _crd(
        {
            "type": "object",
            "required": ["sandboxTemplateRef"],
            "properties": {
                "sandboxTemplateRef": _REF,
                "warmpool": {"type": "string"},
                "lifecycle": {
                    "type": "object",
                    "properties": {
                        "shutdownPolicy": {"enum": ["Delete", "DeleteForeground", "Retain"]},
                        "shutdownTime": {"type": "string", "format": "date-time"},
                    },
                    "additionalProperties": False,
                },
            },
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {
                "conditions": _CONDITIONS,
                "sandbox": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "podIPs": {"type": "array", "items": {"type": "string"}},
                    },
                },
            },
        },
    ),
    ("extensions.agents.x-k8s.io/v1alpha1", "SandboxWarmPool"): _crd(
        {
            "type": "object",
            "required": ["replicas", "sandboxTemplateRef"],
            "properties": {
                "replicas": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
                "sandboxTemplateRef": _REF,
            },
            "additionalProperties": False,
        },
        {"type": "object", "properties": {"replicas": {"type": "integer"}, "readyReplicas": {"type": "integer"}}},
    ),
}


class Invalid(Exception):
    """What an API server would answer 422 for."""


def _metadata_errors(metadata: dict[str, Any], name_rule: re.Pattern[str]) -> list[str]:
    errors = []
    name = metadata.get("name", "")
    if not (name_rule.match(name) and len(name) <= (63 if name_rule is DNS_LABEL else 253)):
        errors.append(f"metadata.name {name!r} is not a valid name")
    for key, value in (metadata.get("labels") or {}).items():
        prefix, _, short = key.rpartition("/")
        if prefix and not (DNS_SUBDOMAIN.match(prefix) and len(prefix) <= 253):
            errors.append(f"label key {key!r}: bad prefix")
        if not (LABEL_NAME.match(short) and len(short) <= 63):
            errors.append(f"label key {key!r}: bad name")
        if not (isinstance(value, str) and LABEL_VALUE.match(value) and len(value) <= 63):
            errors.append(f"label {key}={value!r}: not a valid label value")
    annotations = metadata.get("annotations") or {}
    if sum(len(k) + len(v) for k, v in annotations.items()) > 256 * 1024:
        errors.append("annotations exceed 256 KiB")
    return errors


def _pod_spec_errors(spec: dict[str, Any]) -> list[str]:
    errors = []
    for container in spec.get("initContainers", []) + spec.get("containers", []):
        for section in ("requests", "limits"):
            for resource, quantity in (container.get("resources", {}).get(section) or {}).items():
                if not QUANTITY.match(str(quantity)):
                    errors.append(f"{container.get('name')}: {section}.{resource}: invalid quantity {quantity!r}")
    for volume in spec.get("volumes", []):
        limit = (volume.get("emptyDir") or {}).get("sizeLimit")
        if limit is not None and not QUANTITY.match(str(limit)):
            errors.append(f"volume {volume.get('name')}: invalid sizeLimit {limit!r}")
    return errors


@functools.cache
def _official_validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    """kubernetes-validate's strict schema for the kind, loaded once (its own validate()
    reads the 2 MB definitions file on every call; the fake API server validates every write)."""
    version = [v for v in kubernetes_validate_utils.all_versions() if v.startswith(KUBERNETES_VERSION)][-1]
    schema_dir = f"kubernetes-json-schema/v{version}-local-strict"
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    schema = kubernetes_validate_utils.schema_contents(f"{schema_dir}/{kind.lower()}-{group_version}.json", version)
    definitions = kubernetes_validate_utils.schema_contents(f"{schema_dir}/_definitions.json", version)
    registry: referencing.Registry[Any] = referencing.Resource.from_contents(schema) @ referencing.Registry()
    registry = referencing.Resource.from_contents(definitions) @ registry
    return jsonschema.Draft202012Validator(schema, registry=registry)


def validate(obj: dict[str, Any]) -> None:
    """Raise Invalid with the reason if an API server would refuse `obj`."""
    api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
    group = api_version.rpartition("/")[0]
    metadata = obj.get("metadata") or {}
    if group in AGENT_SANDBOX_GROUPS:
        schema = AGENT_SANDBOX_SCHEMAS.get((api_version, kind))
        if schema is None:
            raise Invalid(f"no kind {kind} in {api_version}")
        try:
            jsonschema.validate(obj, schema)
        except jsonschema.ValidationError as exc:
            raise Invalid(f"{kind}: {'.'.join(map(str, exc.path))}: {exc.message}") from None
        template = obj["spec"].get("podTemplate")
        if template is not None:
            validate(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": "template", **(template.get("metadata") or {})},
                    "spec": template["spec"],
                }
            )
        errors = _metadata_errors(metadata, DNS_SUBDOMAIN)
    else:
        try:
            _official_validator(api_version, kind).validate(obj)
        except FileNotFoundError:
            raise Invalid(f"no kind {kind} in {api_version}") from None
        except jsonschema.ValidationError as exc:
            raise Invalid(f"{kind}: {'.'.join(map(str, exc.path))}: {exc.message}") from None
        errors = _metadata_errors(metadata, DNS_LABEL if kind in ("Pod", "Namespace", "Service") else DNS_SUBDOMAIN)
        if kind == "Pod":
            errors += _pod_spec_errors(obj.get("spec") or {})
        elif kind == "Deployment":
            errors += _pod_spec_errors(obj["spec"]["template"]["spec"])
    if errors:
        raise Invalid(f"{kind} {metadata.get('name')!r}: " + "; ".join(errors))
