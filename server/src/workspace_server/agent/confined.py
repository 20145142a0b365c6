"""Path resolution for the files API, which acts as sandbox root for its client.

Code inside the sandbox must not turn that authority into its own (a confused deputy): a
symlink planted by the sandbox user (`/workspace/out -> /root`) would otherwise make an
API write land where the user cannot write. The rule: **a symlink lends the files API only
its owner's authority**. Following a link owned by uid U, the operation must be one U could
do itself at the place it leads to (write and search permission on the directory the
operation changes, and the sticky bit's owner rule); links owned by root lend everything,
as root in the sandbox could write there anyway. Paths without links owned by others
behave exactly as before.

The walk opens every directory with O_NOFOLLOW relative to the previous one and keeps the
last one open, and the operation then names its target through that descriptor
(`/proc/self/fd/N/NAME`): swapping a checked directory for a link afterwards changes
nothing. Standard library only (python3 >= 3.9 inside sandboxes).
"""

from __future__ import annotations

import errno
import os
import pwd
import stat

from .errors import OpError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import FrozenSet, List, Optional, Set, Tuple

MAX_LINKS = 40  # like the kernel's ELOOP limit
WRITE = 2
READ = 4


class Place:
    """A resolved location: an open directory and one name in it (never followed).

    `path` names it for the operating system; `delegates` are the owners (not root) of the
    links followed to get here: the operation must be allowed to each of them."""

    def __init__(self, dir_fd: int, name: str, shown: str, delegates: Set[Tuple[int, str]]) -> None:
        self.dir_fd = dir_fd
        self.name = name
        self.shown = shown
        self.delegates = delegates

    @property
    def parent(self) -> str:
        """The directory, named through its descriptor (no walk again)."""
        return "/proc/self/fd/%d" % self.dir_fd

    @property
    def path(self) -> str:
        return self.parent + "/" + self.name if self.name else self.parent

    def close(self) -> None:
        if self.dir_fd >= 0:
            os.close(self.dir_fd)
            self.dir_fd = -1

    def __enter__(self) -> "Place":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def enter(self, name: str, shown: str) -> "Place":
        """The directory `name` of this one (never a link), as a Place of its own; closes this one."""
        inner = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.dir_fd)
        self.close()
        entered = Place(inner, "", shown, self.delegates)
        try:
            searchable(inner, self.delegates, [shown.strip("/")])
        except BaseException:
            entered.close()
            raise
        return entered

    def lstat(self) -> Optional[os.stat_result]:
        try:
            return os.lstat(self.path)
        except FileNotFoundError:
            return None

    def check_change(self) -> None:
        """The operation creates, replaces or removes `name` in the directory: each delegate
        must be able to do that itself."""
        if not self.delegates:
            return
        directory = os.fstat(self.dir_fd)
        existing = self.lstat() if self.name else None
        for uid, link in sorted(self.delegates):
            if not allowed(directory, uid, WRITE) or (
                existing is not None
                and directory.st_mode & stat.S_ISVTX
                and uid not in (directory.st_uid, existing.st_uid)
            ):
                refuse(self.shown, link, uid, "write")

    def check_read(self, tree: bool = False) -> None:
        """The operation reads `name` (a file's contents; with `tree`, a directory's whole
        tree): each delegate must be able to."""
        if not self.delegates:
            return
        entries = [(self.shown, os.stat(self.path))]
        if tree:
            for root, dirs, files in os.walk(self.path):
                for name in dirs + files:
                    full = os.path.join(root, name)
                    entries.append((self.shown + full[len(self.path) :], os.lstat(full)))
        for shown, st in entries:
            if stat.S_ISLNK(st.st_mode):
                continue  # copied as a link, not read
            for uid, link in sorted(self.delegates):
                if not allowed(st, uid, READ):
                    refuse(shown, link, uid, "read")


def refuse(shown: str, link: str, uid: int, verb: str) -> None:
    raise OpError(
        "PERMISSION_DENIED",
        "%s: the symlink %s belongs to uid %d, which may not %s where it leads; the files API does not "
        "follow it there" % (shown, link, uid, verb),
        path=shown,
    )


def groups_of(uid: int) -> FrozenSet[int]:
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return frozenset()
    try:
        return frozenset(os.getgrouplist(entry.pw_name, entry.pw_gid))
    except OSError:
        return frozenset((entry.pw_gid,))


def allowed(st: os.stat_result, uid: int, want: int) -> bool:
    """Would `uid` have `want` (READ or WRITE; directories also need search) on this inode?"""
    if uid == 0:
        return True
    need = want | (1 if stat.S_ISDIR(st.st_mode) else 0)
    if st.st_uid == uid:
        bits = (st.st_mode >> 6) & 7
    elif st.st_gid in groups_of(uid):
        bits = (st.st_mode >> 3) & 7
    else:
        bits = st.st_mode & 7
    return bits & need == need


def searchable(fd: int, delegates: Set[Tuple[int, str]], walked: List[str]) -> None:
    """Each delegate must be able to pass through this directory (search permission)."""
    if delegates:
        st = os.fstat(fd)
        for uid, link in sorted(delegates):
            if not allowed(st, uid, 0):
                refuse("/" + "/".join(walked), link, uid, "reach")


def directory(path: str) -> Place:
    """`mkdir -p path` through the confined walk: the directory itself (name ""), each new
    directory owned like the one that holds it. The delegates must be allowed each mkdir."""
    missing: List[str] = []
    current = path
    while True:
        try:
            place = resolve(current, follow_last=True)
            break
        except FileNotFoundError:  # a directory on the way is missing: make it too
            missing.append(os.path.basename(current.rstrip("/")))
            current = os.path.dirname(current.rstrip("/")) or "/"
    try:
        if place.name:
            st = place.lstat()
            if st is None:
                missing.append(place.name)  # made in the directory the walk ended in
            elif not stat.S_ISDIR(st.st_mode):
                raise OpError("NOT_A_DIRECTORY", "%s is not a directory" % place.shown, path=place.shown)
            else:
                place = place.enter(place.name, place.shown)
        for name in reversed(missing):
            place.name = name
            place.check_change()
            owner = os.fstat(place.dir_fd)
            try:
                os.mkdir(name, 0o755, dir_fd=place.dir_fd)
                os.chown(name, owner.st_uid, owner.st_gid, dir_fd=place.dir_fd, follow_symlinks=False)
            except FileExistsError:
                pass  # made meanwhile: entered below like any directory (O_NOFOLLOW)
            place = place.enter(name, place.shown.rstrip("/") + "/" + name)
        place.name = ""
        return place
    except BaseException:
        place.close()
        raise


def resolve(path: str, follow_last: bool = False) -> Place:
    """Walk `path` from the sandbox's root as the kernel would, noting whose links were
    followed; the last component is followed only with `follow_last` (and only if it is a
    link). Missing directories raise FileNotFoundError, like the kernel's walk."""
    delegates: Set[Tuple[int, str]] = set()
    pending: List[str] = [part for part in path.split("/") if part and part != "."]
    walked: List[str] = []  # the path as resolved so far, for messages
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    links = 0
    try:
        while pending:
            part = pending.pop(0)
            last = not pending
            if part == "..":
                parent = os.open("..", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
                os.close(fd)
                fd = parent
                if walked:
                    walked.pop()
                searchable(fd, delegates, walked)
                continue
            if last and not follow_last:
                return Place(fd, part, "/" + "/".join([*walked, part]), delegates)
            try:
                st = os.stat(part, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                if last:
                    return Place(fd, part, "/" + "/".join([*walked, part]), delegates)
                raise
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > MAX_LINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                target = os.readlink(part, dir_fd=fd)
                if st.st_uid != 0:
                    delegates.add((st.st_uid, "/" + "/".join([*walked, part])))
                pending[:0] = [p for p in target.split("/") if p and p != "."]
                if target.startswith("/"):
                    os.close(fd)
                    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                    walked = []
                searchable(fd, delegates, walked)
                if not pending:  # a link to "/" itself
                    return Place(fd, "", "/" + "/".join(walked), delegates)
                continue
            if last:
                return Place(fd, part, "/" + "/".join([*walked, part]), delegates)
            child = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = child
            walked.append(part)
            searchable(fd, delegates, walked)
        return Place(fd, "", "/" + "/".join(walked), delegates)
    except BaseException:
        os.close(fd)
        raise
