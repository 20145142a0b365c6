"""NFS settings and the parsing of their flags (--nfs-listen, --nfs-clients)."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
DEFAULT_PORT = 2049
DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_PORT}"
LOOPBACK_CLIENTS: tuple[IPNetwork, ...] = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


@dataclass(frozen=True)
class NfsSettings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    clients: tuple[IPNetwork, ...] = field(default_factory=lambda: LOOPBACK_CLIENTS)
    ganesha: str = "ganesha.nfsd"
    dbus_daemon: str = "dbus-daemon"

    @property
    def url_host(self) -> str:
        """The host name clients are given in nfs_url: the listen address, unless that is the
        wildcard (then this machine's name)."""
        if ipaddress.ip_address(self.host).is_unspecified:
            return socket.getfqdn()
        return f"[{self.host}]" if ":" in self.host else self.host

    def url(self, pseudo_path: str) -> str:
        return f"nfs://{self.url_host}:{self.port}{pseudo_path}"


def parse_listen(text: str) -> tuple[str, int]:
    """ADDR:PORT (IPv4, or [IPv6]:PORT) -> (address, port)."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} is not ADDR:PORT")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address (a host name is not accepted: say which address)") from None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{port_text!r} is not a port number")
    return str(address), int(port_text)


def parse_clients(values: list[str]) -> tuple[IPNetwork, ...]:
    """CIDR ranges, repeated or separated by commas; a bare address is one host."""
    ranges: list[IPNetwork] = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                ranges.append(ipaddress.ip_network(part, strict=True))
            except ValueError as exc:
                raise ValueError(f"{part!r} is not a CIDR range: {exc}") from None
    return tuple(ranges)


def check_exposure(host: str, explicit_clients: tuple[IPNetwork, ...]) -> None:
    """Refuse NFS beyond loopback unless the operator said which clients may use it: AUTH_SYS
    believes whatever uid a client claims, so the client's address is the only gate."""
    if not ipaddress.ip_address(host).is_loopback and not explicit_clients:
        raise ValueError(
            f"refusing to serve NFS on {host} without --nfs-clients: every host that can reach it could "
            "read and write every sandbox's /workspace (AUTH_SYS trusts the client). Name the client "
            "range, or listen on 127.0.0.1"
        )
