"""The wire protocol of docs/api.md as pure functions, one module per resource.

Each module builds ``ApiRequest``/``WebSocketRequest`` values and parses response JSON into
the public dataclasses. Nothing here performs I/O, so the async client and the generated sync
client share it unchanged.
"""

from ._common import ApiRequest, WebSocketRequest

__all__ = ["ApiRequest", "WebSocketRequest"]
