"""Server settings: command-line flags and WORKSPACE_* environment variables."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from workspace_server.domain.models import ResourceLimits
from workspace_server.nfs.settings import NfsSettings


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8080
    api_key: str | None = None
    default_limits: ResourceLimits = field(default_factory=ResourceLimits)
    max_limits: ResourceLimits = field(
        default_factory=lambda: ResourceLimits(cpu=8.0, memory_mb=16384, pids=4096, disk_mb=65536)
    )
    max_sandboxes: int = 500
    # Of the data dir's file system, what sandbox disks never take (store/disk_space.py).
    disk_reserve_mb: int = 256
    # Keep sandbox disks sparse and admit creates beyond what is free (thin provisioning).
    disk_overcommit: bool = False
    # Allocate each sandbox disk's blocks in full when it is made (else its promise is accounted).
    disk_preallocate: bool = False
    pool_size: int = 2
    # Warm sandboxes of other templates, as (template name, count): `--pool TEMPLATE=N`.
    pool_templates: tuple[tuple[str, int], ...] = ()
    default_timeout: int | None = None
    max_json_body: int = 1024 * 1024
    max_upload_bytes: int = 64 * 1024 * 1024 * 1024
    # Each of a run's stdout and stderr, counted as JSON-encoded bytes (what is sent).
    max_run_output: int = 64 * 1024 * 1024
    # A directory listing is streamed; it stops (marked truncated) after this many entries.
    max_list_entries: int = 1_000_000
    # An image's upload and its unpacked content (each) may not exceed this.
    max_image_bytes: int = 16 * 1024 * 1024 * 1024
    keepalive_seconds: float = 15.0
    agent_connect_timeout: float = 20.0
    # A sandbox in `error` (its agent lost, a create cut short) is deleted after this long.
    error_retention_seconds: float = 3600.0
    shutdown_grace_seconds: float = 10.0
    # Background processes: each one's output log on the sandbox's disk keeps this many of
    # its most recent bytes; an exited one is remembered this long.
    process_log_bytes: int = 16 * 1024 * 1024
    process_retention_seconds: float = 600.0
    runc: str = "runc"
    # HTTP connection limits (api/http_limits.py); None: derived from the open-files limit.
    max_connections: int | None = None
    max_connections_per_peer: int | None = None
    request_head_timeout: float = 20.0
    request_body_idle_timeout: float = 60.0
    # How long a console sign-in lasts (the session cookie's Max-Age, enforced here too).
    session_seconds: float = 12 * 3600
    # Ranges sandboxes with network=true may reach although they are private or the host's
    # own (runtimes/egress.py); everything else non-public is rejected.
    network_allow: tuple[ipaddress.IPv4Network, ...] = ()
    # Serve running sandboxes' /workspace over NFSv4 (nfs/); None: off.
    nfs: NfsSettings | None = None
    # Preview URLs (api/previews.py): `{scheme}://{port}-{sandbox_id}.{domain}[:{port}]`; the
    # domain is a wildcard DNS name pointing here (browsers resolve *.localhost themselves).
    preview_domain: str = "localhost"
    preview_scheme: str = "http"
    preview_port: int | None = None  # in the URLs; None: the server's own port, 0: none (443/80)
    preview_response_timeout: float = 120.0  # for the head of a proxied response
    max_port_connections: int = 256  # open tunnels per sandbox (proxy, WebSockets, port-forward)

    @property
    def loopback_only(self) -> bool:
        return is_loopback(self.host)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
