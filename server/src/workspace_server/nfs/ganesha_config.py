"""nfs-ganesha's configuration: the server's own block and one EXPORT block per sandbox.

NFSv4 over TCP only (no rpcbind, NLM, rquota or UDP needed), no Kerberos, numeric owners
(no idmapd), no grace period (clients get no NFS4ERR_GRACE for 90 s after each start; the
price is that state held before a restart cannot be reclaimed, see docs/reliability.md).
The pseudo root only shows the export paths (MDONLY_RO) and only to the allowed clients.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from workspace_server.nfs.settings import IPNetwork, NfsSettings

PSEUDO_ROOT = "/sandboxes"


@dataclass(frozen=True)
class Export:
    """One sandbox's /workspace as ganesha serves it."""

    export_id: int  # 1..65535 (0 is the pseudo root)
    sandbox_id: str
    path: Path  # the host directory
    uid: int  # every access is squashed to this host uid/gid
    gid: int

    @property
    def pseudo(self) -> str:
        return f"{PSEUDO_ROOT}/{self.sandbox_id}"


def quoted(value: str) -> str:
    if any(c in value for c in '"\\\n\r\0;{}#'):
        raise ValueError(f"{value!r} cannot be written into ganesha's configuration")
    return f'"{value}"'


def client_list(clients: tuple[IPNetwork, ...]) -> str:
    """Ganesha matches single hosts by address and ranges by CIDR (unquoted: a quoted
    string is taken for a host name). ip_network() made these, so they are plain."""
    return ", ".join(str(c.network_address) if c.num_addresses == 1 else str(c) for c in clients)


def server_config(settings: NfsSettings, recovery_dir: Path, exports: list[Export]) -> str:
    bind = ipaddress.ip_address(settings.host)
    blocks = [
        "NFS_CORE_PARAM {\n"
        "  Protocols = 4;\n"
        f"  NFS_Port = {settings.port};\n"
        f"  Bind_Addr = {bind};\n"
        "  Enable_NLM = false;\n"
        "  Enable_RQUOTA = false;\n"
        "  Enable_UDP = false;\n"
        "  Enable_NFSACL = false;\n"
        "}\n",
        "NFS_KRB5 { Active_krb5 = false; }\n",
        "NFSV4 {\n"
        "  Graceless = true;\n"
        "  Allow_Numeric_Owners = true;\n"
        "  Only_Numeric_Owners = true;\n"
        "  RecoveryBackend = fs;\n"
        f"  RecoveryRoot = {quoted(str(recovery_dir))};\n"
        "}\n",
        # Connection resets are logged at EVENT, once per client connection.
        "LOG { Default_Log_Level = WARN; }\n",
        # Anyone not in a CLIENT block below gets nothing.
        "EXPORT_DEFAULTS {\n"
        "  Access_Type = None;\n"
        "  Squash = All_Squash;\n"
        "  SecType = sys;\n"
        "  Protocols = 4;\n"
        "  Transports = TCP;\n"
        "}\n",
        "EXPORT {\n"
        "  Export_Id = 0;\n"
        '  Path = "/";\n'
        '  Pseudo = "/";\n'
        "  Protocols = 4;\n"
        "  Transports = TCP;\n"
        "  Anonymous_Uid = 65534;\n"
        "  Anonymous_Gid = 65534;\n"
        f"  CLIENT {{ Clients = {client_list(settings.clients)}; Access_Type = MDONLY_RO; }}\n"
        "  FSAL { Name = PSEUDO; }\n"
        "}\n",
    ]
    blocks += [export_block(export, settings.clients) for export in exports]
    return "".join(blocks)


def export_block(export: Export, clients: tuple[IPNetwork, ...]) -> str:
    return (
        "EXPORT {\n"
        f"  Export_Id = {export.export_id};\n"
        f"  Path = {quoted(str(export.path))};\n"
        f"  Pseudo = {quoted(export.pseudo)};\n"
        "  Access_Type = None;\n"
        "  Squash = All_Squash;\n"
        f"  Anonymous_Uid = {export.uid};\n"
        f"  Anonymous_Gid = {export.gid};\n"
        "  SecType = sys;\n"
        "  Protocols = 4;\n"
        "  Transports = TCP;\n"
        "  Disable_ACL = true;\n"
        f"  CLIENT {{ Clients = {client_list(clients)}; Access_Type = RW; }}\n"
        "  FSAL { Name = VFS; }\n"
        "}\n"
    )
