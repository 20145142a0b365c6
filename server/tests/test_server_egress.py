"""The egress filter of networked sandboxes: the ruleset, the operator's allow list, the
host's addresses, and nftables' own verdict on the ruleset."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from workspace_server.domain.errors import RuntimeFailure
from workspace_server.runtimes import egress

IPv4Network = ipaddress.IPv4Network
IP_JSON = json.dumps(
    [
        {"ifname": "lo", "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}]},
        {
            "ifname": "eth0",
            "addr_info": [
                {"family": "inet", "local": "203.0.113.9", "prefixlen": 24},
                {"family": "inet6", "local": "2001:db8::9", "prefixlen": 64},
            ],
        },
        {"ifname": "eth1", "addr_info": []},
    ]
)


def rule_lines(rules: str) -> list[str]:
    return [line.strip() for line in rules.splitlines()]


def test_private_link_local_and_host_networks_are_rejected_after_dns_and_allowed_ranges() -> None:
    rules = egress.ruleset([IPv4Network("203.0.113.0/24"), IPv4Network("203.0.113.9/32")], [IPv4Network("10.1.0.0/16")])
    lines = rule_lines(rules)
    dns = lines.index("ip daddr 10.0.2.3 meta l4proto { tcp, udp } th dport 53 accept")
    allowed = lines.index("ip daddr { 10.1.0.0/16 } accept")
    reject = next(i for i, line in enumerate(lines) if line.endswith("reject with icmpx admin-prohibited"))
    assert lines.index('oifname "lo" accept') < dns < allowed < reject
    blocked = lines[reject]
    for network in (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "169.254.0.0/16",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "203.0.113.0/24",
    ):
        assert network in blocked
    assert "203.0.113.9/32" not in blocked  # inside the host's network: collapsed into it
    assert lines[reject + 1] == "meta nfproto ipv6 reject with icmpx admin-prohibited"
    assert "policy accept" in rules  # what is not rejected is the internet


def test_without_allowed_ranges_there_is_no_accept_set() -> None:
    assert "} accept" not in egress.ruleset([])


def test_public_and_documentation_ranges_are_not_blocked() -> None:
    for address in ("8.8.8.8", "1.1.1.1", "198.51.100.77", "203.0.113.80"):
        assert not any(ipaddress.IPv4Address(address) in network for network in egress.BLOCKED_IPV4)


def test_allowed_ranges_are_parsed_collapsed_and_checked() -> None:
    assert egress.parse_allowed(["10.0.0.0/24,10.0.1.0/24", " 192.168.1.7 ", ""]) == (
        IPv4Network("10.0.0.0/23"),
        IPv4Network("192.168.1.7/32"),
    )
    assert egress.parse_allowed(["10.0.0.5/24"]) == (IPv4Network("10.0.0.0/24"),)  # host bits forgiven
    with pytest.raises(ValueError, match="not an IPv4 address or CIDR range"):
        egress.parse_allowed(["10.0.0.0/33"])
    with pytest.raises(ValueError, match="no IPv6 route"):
        egress.parse_allowed(["fd00::/8"])


def test_host_networks_are_the_networks_holding_the_host_addresses() -> None:
    assert egress.host_networks_from(IP_JSON) == [IPv4Network("127.0.0.0/8"), IPv4Network("203.0.113.0/24")]
    no_prefix = json.dumps([{"addr_info": [{"family": "inet", "local": "198.51.100.4"}]}])
    assert egress.host_networks_from(no_prefix) == [IPv4Network("198.51.100.4/32")]
    with pytest.raises(RuntimeFailure):
        egress.host_networks_from("not json")


def test_without_nftables_a_networked_sandbox_fails_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(egress.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeFailure, match="install Debian's nftables"):
        asyncio.run(egress.restrict(tmp_path, os.getpid(), ()))
    assert not (tmp_path / egress.RULES_FILE).exists()


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("nft") is None or shutil.which("unshare") is None,
    reason="loading nftables rules into a throwaway network namespace needs root and nft",
)
def test_nftables_loads_the_ruleset_as_written(tmp_path: Path) -> None:
    rules = tmp_path / "rules.nft"
    rules.write_text(egress.ruleset(egress.host_networks_from(IP_JSON), egress.parse_allowed(["10.9.0.0/16"])))
    loaded = subprocess.run(
        ["unshare", "--net", "sh", "-c", f"nft -f {rules} && nft list ruleset"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert "table inet workspace_egress" in loaded.stdout
    assert "10.9.0.0/16" in loaded.stdout
