"""Request descriptions and strict JSON readers shared by the per-resource protocol modules."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from .._exceptions import WorkspaceError

__all__ = [
    "ApiRequest",
    "WebSocketRequest",
    "drop_none",
    "expect_object",
    "invalid_response",
    "optional_bool",
    "optional_float",
    "optional_int",
    "optional_str",
    "optional_str_dict",
    "optional_str_list",
    "path_segment",
    "query_bool",
    "require_int",
    "require_str",
]


@dataclass(frozen=True)
class ApiRequest:
    """An HTTP call described as data; the I/O layers turn it into an httpx request.

    ``path`` is relative to ``/api/v1``. ``error_context`` is what the SDK knows about the call
    (sandbox id, path, ...) and is merged under the server's error details.
    """

    method: str
    path: str
    params: Mapping[str, str | list[str]] = field(default_factory=dict)  # a list: the key repeated
    json: Any = None
    error_context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WebSocketRequest:
    """A WebSocket route (relative to ``/api/v1``) and its query parameters."""

    path: str
    params: Mapping[str, str] = field(default_factory=dict)
    error_context: Mapping[str, Any] = field(default_factory=dict)


def path_segment(value: str | int) -> str:
    """Quote an id for use as one URL path segment (``/`` included)."""
    return quote(str(value), safe="")


def query_bool(value: bool) -> str:
    return "true" if value else "false"


def invalid_response(message: str) -> WorkspaceError:
    """The server answered 2xx with a body that does not match docs/api.md."""
    return WorkspaceError(f"unexpected response from server: {message}", code="INVALID_RESPONSE")


def expect_object(data: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise invalid_response(f"expected a {what} object, got {type(data).__name__}")
    return data


def require_str(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise invalid_response(f"field {key!r} must be a string, got {value!r}")
    return value


def require_int(obj: Mapping[str, Any], key: str) -> int:
    value = obj.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise invalid_response(f"field {key!r} must be an integer, got {value!r}")
    return value


def optional_str(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid_response(f"field {key!r} must be a string or null, got {value!r}")
    return value


def optional_int(obj: Mapping[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise invalid_response(f"field {key!r} must be an integer or null, got {value!r}")
    return value


def optional_float(obj: Mapping[str, Any], key: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise invalid_response(f"field {key!r} must be a number or null, got {value!r}")
    return float(value)


def optional_bool(obj: Mapping[str, Any], key: str) -> bool | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise invalid_response(f"field {key!r} must be a boolean or null, got {value!r}")
    return value


def optional_str_dict(obj: Mapping[str, Any], key: str) -> dict[str, str] | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise invalid_response(f"field {key!r} must map strings to strings, got {value!r}")
    return dict(value)


def optional_str_list(obj: Mapping[str, Any], key: str) -> list[str] | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise invalid_response(f"field {key!r} must be a list of strings, got {value!r}")
    return list(value)


def drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    """JSON body without the fields the caller left unset, so server defaults apply."""
    return {key: value for key, value in values.items() if value is not None}
