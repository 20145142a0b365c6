"""Failures an operation reports to the host (a stable error code), and the agent's log."""

from __future__ import annotations

import errno
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Optional

ERRNO_CODES = {
    errno.ENOENT: "FILE_NOT_FOUND",
    errno.EACCES: "PERMISSION_DENIED",
    errno.EPERM: "PERMISSION_DENIED",
    errno.EROFS: "PERMISSION_DENIED",
    errno.EEXIST: "FILE_EXISTS",
    errno.ENOTDIR: "NOT_A_DIRECTORY",
    errno.EISDIR: "IS_A_DIRECTORY",
    errno.ENOTEMPTY: "DIRECTORY_NOT_EMPTY",
    errno.ENAMETOOLONG: "INVALID_REQUEST",
    errno.ELOOP: "INVALID_REQUEST",
    errno.EINVAL: "INVALID_REQUEST",
    errno.ENXIO: "INVALID_REQUEST",  # a socket, or a device with nothing behind it
    errno.ENODEV: "INVALID_REQUEST",
    errno.EOPNOTSUPP: "INVALID_REQUEST",
    errno.EBUSY: "INVALID_REQUEST",  # a mount point, say: the caller's mistake, not ours
    errno.EXDEV: "INVALID_REQUEST",
    errno.EMLINK: "INVALID_REQUEST",
    errno.ETXTBSY: "INVALID_REQUEST",
    errno.ENOSPC: "DISK_QUOTA_EXCEEDED",
    errno.EDQUOT: "DISK_QUOTA_EXCEEDED",
    errno.EFBIG: "DISK_QUOTA_EXCEEDED",
}


class OpError(Exception):
    """An operation failed in a way the caller should hear about."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


def os_error(exc: OSError, path: Optional[str] = None) -> OpError:
    code = ERRNO_CODES.get(exc.errno or 0, "INTERNAL")
    where = path or exc.filename or ""
    return OpError(code, "%s: %s" % (where, exc.strerror or exc), path=str(where))


def log(message: str) -> None:
    sys.stderr.write("agent: %s\n" % message)
    sys.stderr.flush()
