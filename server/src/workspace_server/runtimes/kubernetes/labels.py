"""Labels and annotations within Kubernetes' limits, and the per-sandbox agent token.

Label values: at most 63 characters, empty or alphanumeric at both ends with `-_.` inside
(k8s.io/apimachinery validation.IsValidLabelValue). Keys: an optional DNS-subdomain prefix of
at most 253 characters, a `/`, and a name like a value but non-empty. Names of objects the
runtime creates are DNS-1123 labels (pods) or subdomains (secrets and the agent-sandbox
resources)."""

from __future__ import annotations

import hashlib
import hmac
import re

PREFIX = "workspace.dev"
MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "workspace"
SANDBOX_ID = f"{PREFIX}/sandbox-id"
TEMPLATE = f"{PREFIX}/template"  # sanitized: template names may hold `:` or `/`
OWNER = f"{PREFIX}/owner"
SPEC_HASH = f"{PREFIX}/spec-hash"
NETWORK = f"{PREFIX}/network"  # "none" or "egress": what the NetworkPolicies select on
ROLE = f"{PREFIX}/role"  # "sandbox" for pods, "agent-token" for secrets

# Annotations: free text, no length limit per value (256 KiB in total per object).
TEMPLATE_NAME = f"{PREFIX}/template-name"
EXPIRES_AT = f"{PREFIX}/expires-at"
PIDS_LIMIT = f"{PREFIX}/pids-limit"

MAX_LABEL_VALUE = 63
MAX_DNS_LABEL = 63
MAX_DNS_SUBDOMAIN = 253
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def is_label_value(value: str) -> bool:
    return len(value) <= MAX_LABEL_VALUE and bool(_LABEL_VALUE.match(value))


def is_label_key(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > MAX_DNS_SUBDOMAIN or not _DNS_SUBDOMAIN.match(prefix)):
        return False
    return 0 < len(name) <= MAX_LABEL_VALUE and bool(_LABEL_NAME.match(name))


def is_dns_label(name: str) -> bool:
    return len(name) <= MAX_DNS_LABEL and bool(_DNS_LABEL.match(name))


def is_dns_subdomain(name: str) -> bool:
    return len(name) <= MAX_DNS_SUBDOMAIN and bool(_DNS_SUBDOMAIN.match(name))


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def label_value(text: str) -> str:
    """`text` as a valid label value: kept when it is one already; otherwise the invalid
    characters become `-`, it is cut to fit, and a hash of the original is appended, so two
    different names never collapse into the same value."""
    if is_label_value(text):
        return text
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", text)
    cleaned = cleaned[: MAX_LABEL_VALUE - 9].strip("-_.")
    return f"{cleaned}-{_digest(text, 8)}" if cleaned else _digest(text, 8)


def dns_label(text: str, limit: int = MAX_DNS_LABEL) -> str:
    """`text` as a DNS-1123 label (object names): lower case, `-` for anything else, a hash
    suffix when anything had to change."""
    if len(text) <= limit and is_dns_label(text):
        return text
    cleaned = re.sub(r"[^a-z0-9-]", "-", text.lower())[: limit - 9].strip("-")
    return f"{cleaned}-{_digest(text, 8)}" if cleaned else f"x{_digest(text, 8)}"


def agent_token(server_key: bytes, sandbox_id: str) -> str:
    """The secret an agent proves its identity with: HMAC-SHA256 of the sandbox id under the
    server's key. The server recomputes it from the id alone, so it stores no token."""
    return hmac.new(server_key, b"workspace-agent-token\0" + sandbox_id.encode(), hashlib.sha256).hexdigest()


def spec_hash(*parts: object) -> str:
    """A short, stable fingerprint of what a pod was built from (a label value)."""
    return _digest(repr(parts), 16)
