"""Opt-in outbound network. Traffic only goes to a network namespace this test creates
(tests/support/network_peer.py); what networked sandboxes may *not* reach is attacked in
tests/e2e/security/test_attack_egress.py."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.live_server import LiveServer
from tests.support.network_peer import GREETING, Peer, probe


def test_network_is_opt_in(
    api: httpx.Client, workspace_server: LiveServer, peer: Peer, sandbox: dict[str, Any]
) -> None:
    assert probe(api, sandbox["id"], peer.public)[peer.public].startswith("failed")
    networked = api.post("/sandboxes", json={"network": True}).json()
    try:
        assert networked["network"] is True
        port = int(workspace_server.url.rsplit(":", 1)[1])
        seen = probe(api, networked["id"], peer.public, ("10.0.2.2", port))
        assert seen[peer.public] == f"answered {GREETING}"
        # The host's loopback services stay out of reach, the API's own port included.
        assert seen[("10.0.2.2", port)].startswith("failed")
    finally:
        api.delete(f"/sandboxes/{networked['id']}", params={"force": "true"})
