"""NFSv4 access to sandboxes' /workspace: an nfs-ganesha supervised by the server, one export
per running sandbox (see docs/security.md, "NFS")."""
