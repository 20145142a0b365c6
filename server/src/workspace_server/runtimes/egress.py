"""What a sandbox with `network: true` may reach: the internet, not the host or its networks.

slirp4netns opens each of a sandbox's connections from the host itself. Unfiltered, a
sandbox could reach whatever the host can: services bound to the host's own addresses, the
LAN, other tenants' private networks, and cloud metadata endpoints (169.254.169.254, which
hand out the machine's credentials). An nftables ruleset in the sandbox's own network
namespace rejects all of those before a packet ever reaches slirp4netns. The sandbox cannot
change it: nothing in it holds CAP_NET_ADMIN.

Operators can let sandboxes reach chosen ranges (an internal package mirror, say) with
`--network-allow CIDR`; those take precedence over every rule here.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from workspace_server.domain.errors import RuntimeFailure
from workspace_server.runtimes.host_commands import run_host_command

IPv4Network = ipaddress.IPv4Network

# IPv4 special-purpose ranges (RFC 6890) that lead to someone's own machines: private,
# shared (carrier NAT), loopback, link-local (cloud metadata), "this network", IETF protocol
# assignments, multicast, reserved. The documentation and benchmarking ranges (TEST-NET-1/2/3,
# 198.18.0.0/15) are left alone: the internet never routes them, so blocking them guards
# nothing, and test networks use them to stand in for public hosts.
BLOCKED_IPV4 = tuple(
    IPv4Network(cidr)
    for cidr in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.168.0.0/16",
        "224.0.0.0/4",
        "240.0.0.0/4",
    )
)
SLIRP_DNS = "10.0.2.3"  # slirp4netns's DNS forwarder: name lookups go through it
TABLE = "workspace_egress"
RULES_FILE = "egress.nft"


def parse_allowed(values: Iterable[str]) -> tuple[IPv4Network, ...]:
    """Operator input (`--network-allow`) to networks; ValueError names the bad entry."""
    allowed = []
    for value in values:
        for item in (part.strip() for part in value.split(",")):
            if not item:
                continue
            try:
                network = ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IPv4 address or CIDR range") from None
            if not isinstance(network, IPv4Network):
                raise ValueError(f"{item!r}: sandboxes have no IPv6 route, so only IPv4 ranges can be allowed")
            allowed.append(network)
    return tuple(ipaddress.collapse_addresses(allowed))


def _nft_set(networks: Iterable[IPv4Network]) -> str:
    # Collapsed first: nftables refuses overlapping intervals in one set.
    return "{ " + ", ".join(str(n) for n in ipaddress.collapse_addresses(networks)) + " }"


def ruleset(host_networks: Sequence[IPv4Network], allowed: Sequence[IPv4Network] = ()) -> str:
    """The nftables ruleset for one sandbox's network namespace (pure). `host_networks`: the
    host's own addresses and the networks it is attached to (its LAN), public or not.

    Rejected, not dropped: a program gets "No route to host" at once instead of hanging
    until its own timeout."""
    blocked = list(BLOCKED_IPV4) + list(host_networks)
    lines = [
        f"table inet {TABLE} {{",
        "  chain output {",
        "    type filter hook output priority filter; policy accept;",
        '    oifname "lo" accept',
        f"    ip daddr {SLIRP_DNS} meta l4proto {{ tcp, udp }} th dport 53 accept",
    ]
    if allowed:
        lines.append(f"    ip daddr {_nft_set(allowed)} accept")
    lines += [
        f"    ip daddr {_nft_set(blocked)} reject with icmpx admin-prohibited",
        # slirp4netns is started without IPv6; should a route ever appear, it leads nowhere.
        "    meta nfproto ipv6 reject with icmpx admin-prohibited",
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def host_networks_from(ip_json: str) -> list[IPv4Network]:
    """The networks the host is attached to, from `ip -j -4 addr show` (pure): each holds one
    of the host's own addresses (a /32 when no prefix length is given)."""
    try:
        found: set[IPv4Network] = set()
        for interface in json.loads(ip_json):
            for info in interface.get("addr_info", []):
                if info.get("family") == "inet" and "local" in info:
                    found.add(ipaddress.IPv4Interface(f"{info['local']}/{info.get('prefixlen', 32)}").network)
        return sorted(found)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise RuntimeFailure(f"could not read the host's addresses from `ip -j addr`: {exc}") from None


async def host_networks() -> list[IPv4Network]:
    """Read each time a sandbox starts: the host's addresses can change (DHCP)."""
    code, out = await run_host_command("ip", "-j", "-4", "addr", "show")
    if code != 0:
        raise RuntimeFailure(f"could not list the host's addresses: {out}")
    return host_networks_from(out)


async def restrict(bundle: Path, host_pid: int, allowed: Sequence[IPv4Network]) -> None:
    """Load the ruleset into the network namespace of the sandbox whose init is `host_pid`.

    Called before slirp4netns starts, so no packet ever leaves unfiltered. The rules are
    kept in the bundle (for the operator to read) once they are loaded; nft applies the
    file atomically, replacing an older ruleset of ours. A warm pool sandbox has them
    loaded while it waits: a claim with network then only checks that the host's
    networks did not change meanwhile (one `ip`, no `nft`)."""
    if shutil.which("nft") is None:
        raise RuntimeFailure(
            "network=true needs nftables to keep sandboxes off the host's networks: install Debian's nftables package"
        )
    wanted = ruleset(await host_networks(), allowed)
    rules = bundle / RULES_FILE
    try:
        if rules.read_text() == wanted:
            return  # loaded already, and still right
    except FileNotFoundError:
        pass
    loading = bundle / (RULES_FILE + ".loading")
    # Declaring the table first makes the delete valid whether or not it exists yet.
    loading.write_text(f"table inet {TABLE} {{}}\ndelete table inet {TABLE}\n" + wanted)
    code, out = await run_host_command("nsenter", f"--net=/proc/{host_pid}/ns/net", "nft", "-f", str(loading))
    if code != 0:
        raise RuntimeFailure(f"could not restrict the sandbox's network (nftables): {out}")
    rules.write_text(wanted)
    loading.unlink()
