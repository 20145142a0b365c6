"""A small NFSv4.0 client in Python (RFC 7530/7531 over ONC RPC, AUTH_SYS), for tests and
benchmarks.

Debian bookworm's libnfs 4.0 cannot write more than ~2 KiB per NFSv4 WRITE (its COMPOUND
encoder has a fixed 4 KiB buffer: "ZDR error: Failed to encode COMPOUND4args"; later libnfs
versions send the data zero-copy), and this kernel has no NFS client. This one speaks just
the operations the tests need, and lets a test claim any uid/gid in its AUTH_SYS credential
and send raw operations (LOOKUPP above an export, OPEN of a symlink) that a friendly client
never would.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

# Operations
OP_CLOSE, OP_COMMIT, OP_CREATE, OP_GETATTR, OP_GETFH = 4, 5, 6, 9, 10
OP_LOOKUP, OP_LOOKUPP, OP_OPEN, OP_OPEN_CONFIRM, OP_PUTFH, OP_PUTROOTFH = 15, 16, 18, 20, 22, 24
OP_READ, OP_READDIR, OP_READLINK, OP_REMOVE, OP_SETATTR = 25, 26, 27, 28, 34
OP_SETCLIENTID, OP_SETCLIENTID_CONFIRM, OP_WRITE = 35, 36, 38

STATUS_NAMES = {
    0: "NFS4_OK",
    1: "NFS4ERR_PERM",
    2: "NFS4ERR_NOENT",
    5: "NFS4ERR_IO",
    13: "NFS4ERR_ACCESS",
    17: "NFS4ERR_EXIST",
    18: "NFS4ERR_XDEV",
    20: "NFS4ERR_NOTDIR",
    21: "NFS4ERR_ISDIR",
    22: "NFS4ERR_INVAL",
    27: "NFS4ERR_FBIG",
    28: "NFS4ERR_NOSPC",
    30: "NFS4ERR_ROFS",
    69: "NFS4ERR_DQUOT",
    70: "NFS4ERR_STALE",
    10001: "NFS4ERR_BADHANDLE",
    10006: "NFS4ERR_SERVERFAULT",
    10008: "NFS4ERR_DELAY",
    10016: "NFS4ERR_WRONGSEC",
    10020: "NFS4ERR_NOFILEHANDLE",
    10029: "NFS4ERR_SYMLINK",
    10036: "NFS4ERR_BADXDR",
    10039: "NFS4ERR_BADOWNER",
}
FTYPES = {1: "file", 2: "dir", 5: "symlink"}
# GETATTR: type(1), size(4) | mode(33), owner(36), owner_group(37)
ATTR_BITMAP = [(1 << 1) | (1 << 4), (1 << 1) | (1 << 4) | (1 << 5)]
CHUNK = 1 << 20
PIPELINE = 8


class NfsError(Exception):
    def __init__(self, op: int, status: int) -> None:
        self.op, self.status = op, status
        self.name = STATUS_NAMES.get(status, f"status {status}")
        super().__init__(f"NFSv4 op {op} failed: {self.name}")


@dataclass(frozen=True)
class Attrs:
    type: str
    size: int
    mode: int
    owner: str
    group: str


class Packer:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def u32(self, value: int) -> None:
        self.parts.append(struct.pack(">I", value))

    def u64(self, value: int) -> None:
        self.parts.append(struct.pack(">Q", value))

    def fixed(self, data: bytes) -> None:
        self.parts.append(data + b"\0" * (-len(data) % 4))

    def opaque(self, data: bytes) -> None:
        self.u32(len(data))
        self.fixed(data)

    def string(self, text: str) -> None:
        self.opaque(text.encode())

    def bitmap(self, words: list[int]) -> None:
        self.u32(len(words))
        for word in words:
            self.u32(word)

    def data(self) -> bytes:
        return b"".join(self.parts)


class Unpacker:
    def __init__(self, data: bytes | bytearray) -> None:
        self.data, self.pos = memoryview(data), 0

    def u32(self) -> int:
        (value,) = struct.unpack_from(">I", self.data, self.pos)
        self.pos += 4
        return int(value)

    def u64(self) -> int:
        (value,) = struct.unpack_from(">Q", self.data, self.pos)
        self.pos += 8
        return int(value)

    def fixed(self, size: int) -> bytes:
        value = bytes(self.data[self.pos : self.pos + size])
        self.pos += size + (-size % 4)
        return value

    def opaque(self) -> bytes:
        return self.fixed(self.u32())

    def string(self) -> str:
        return self.opaque().decode(errors="replace")

    def bitmap(self) -> list[int]:
        return [self.u32() for _ in range(self.u32())]


def parse_attrs(bitmap: list[int], raw: bytes) -> Attrs:
    words = [*bitmap, 0, 0]
    u = Unpacker(raw)
    kind = FTYPES.get(u.u32(), "other") if words[0] & (1 << 1) else "?"
    size = u.u64() if words[0] & (1 << 4) else 0
    mode = u.u32() if words[1] & (1 << 1) else 0
    owner = u.string() if words[1] & (1 << 4) else ""
    group = u.string() if words[1] & (1 << 5) else ""
    return Attrs(kind, size, mode, owner, group)


@dataclass
class Opened:
    fh: bytes
    stateid: bytes  # seqid(4) + other(12)
    owner: bytes
    seqid: int


class Nfs4Client:
    """One TCP connection, NFSv4.0, AUTH_SYS as (uid, gid)."""

    def __init__(self, host: str, port: int, uid: int = 0, gid: int = 0, timeout: float = 60.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.uid, self.gid = uid, gid
        self.xid = int.from_bytes(os.urandom(4), "big") & 0x7FFFFFFF
        self.clientid: int | None = None

    @classmethod
    def for_url(cls, nfs_url: str, **options: Any) -> tuple[Nfs4Client, str]:
        """A client for nfs://HOST:PORT/PATH, and that PATH."""
        parts = urlsplit(nfs_url)
        assert parts.scheme == "nfs" and parts.hostname and parts.port, nfs_url
        return cls(parts.hostname, parts.port, **options), parts.path

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Nfs4Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ RPC
    def _credential(self) -> bytes:
        body = Packer()
        body.u32(0)  # stamp
        body.string("workspace-tests")
        body.u32(self.uid)
        body.u32(self.gid)
        body.u32(1)
        body.u32(self.gid)
        return body.data()

    def _send(self, ops: bytes, count: int, payload: bytes | memoryview = b"") -> int:
        """One COMPOUND of `count` ops; `payload` (a WRITE's data, already counted in the
        ops' encoding) goes out as is, not copied into the message."""
        self.xid = (self.xid + 1) & 0xFFFFFFFF
        call = Packer()
        for value in (self.xid, 0, 2, 100003, 4, 1):  # CALL, RPC v2, NFS, v4, COMPOUND
            call.u32(value)
        call.u32(1)  # AUTH_SYS
        call.opaque(self._credential())
        call.u32(0)
        call.u32(0)  # verifier: AUTH_NONE
        call.string("")  # tag
        call.u32(0)  # minor version
        call.u32(count)
        head = call.data() + ops
        padding = b"\0" * (-len(payload) % 4)
        size = len(head) + len(payload) + len(padding)
        self.sock.sendall(struct.pack(">I", 0x80000000 | size) + head)
        if payload:
            self.sock.sendall(payload)
            self.sock.sendall(padding)
        return self.xid

    def _receive(self) -> tuple[int, Unpacker]:
        chunks = []
        while True:
            (mark,) = struct.unpack(">I", self._exactly(4))
            chunks.append(self._exactly(mark & 0x7FFFFFFF))
            if mark & 0x80000000:
                break
        u = Unpacker(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        xid = u.u32()
        if u.u32() != 1:
            raise ConnectionError("not an RPC reply")
        if u.u32() != 0:
            raise PermissionError("RPC call denied (MSG_DENIED)")
        u.u32()
        u.opaque()  # verifier
        accept = u.u32()
        if accept != 0:
            raise ConnectionError(f"RPC call not accepted (accept_stat {accept})")
        return xid, u

    def _exactly(self, size: int) -> bytearray:
        buffer = bytearray(size)
        view, got = memoryview(buffer), 0
        while got < size:
            count = self.sock.recv_into(view[got:])
            if not count:
                raise ConnectionError("the NFS server closed the connection")
            got += count
        return buffer

    def compound(self, ops: list[tuple[int, bytes]]) -> list[tuple[int, dict[str, Any]]]:
        """Send one COMPOUND; returns (op, unpacker positioned after its status) for each op
        that succeeded, or raises NfsError for the first that failed."""
        xid = self._send(b"".join(args for _, args in ops), len(ops))
        got, u = self._receive()
        assert got == xid
        return self._results(u)

    def _results(self, u: Unpacker) -> list[tuple[int, dict[str, Any]]]:
        u.u32()  # compound status (the failing op's, repeated below)
        u.string()  # tag
        results = []
        for _ in range(u.u32()):
            op, status = u.u32(), u.u32()
            if status != 0:
                raise NfsError(op, status)
            results.append((op, self._result(op, u)))
        return results

    @staticmethod
    def _result(op: int, u: Unpacker) -> dict[str, Any]:
        """Read an op's result body; the values callers want."""
        values: dict[str, Any] = {}
        if op == OP_GETFH:
            values["fh"] = u.opaque()
        elif op == OP_GETATTR:
            values["attrs"] = parse_attrs(u.bitmap(), u.opaque())
        elif op == OP_SETCLIENTID:
            values["clientid"], values["verifier"] = u.u64(), u.fixed(8)
        elif op == OP_OPEN:
            values["stateid"] = u.fixed(16)
            u.u32()
            u.u64()
            u.u64()  # change_info4
            values["rflags"] = u.u32()
            u.bitmap()
            delegation = u.u32()
            if delegation != 0:
                raise NotImplementedError("the server granted a delegation")
        elif op in (OP_OPEN_CONFIRM, OP_CLOSE):
            values["stateid"] = u.fixed(16)
        elif op == OP_WRITE:
            values["count"], _, _ = u.u32(), u.u32(), u.fixed(8)
        elif op == OP_READ:
            values["eof"], values["data"] = bool(u.u32()), u.opaque()
        elif op == OP_COMMIT:
            u.fixed(8)
        elif op == OP_READLINK:
            values["link"] = u.string()
        elif op in (OP_REMOVE, OP_CREATE):
            u.u32()
            u.u64()
            u.u64()
            if op == OP_CREATE:
                u.bitmap()
        elif op == OP_SETATTR:
            u.bitmap()
        elif op == OP_READDIR:
            u.fixed(8)
            names = []
            while u.u32():
                u.u64()
                names.append(u.string())
                u.bitmap()
                u.opaque()
            values["names"], values["eof"] = names, bool(u.u32())
        return values

    # ------------------------------------------------------------------ op builders
    @staticmethod
    def op(code: int, build: Packer | None = None) -> tuple[int, bytes]:
        head = struct.pack(">I", code)
        return code, head + (build.data() if build else b"")

    def lookup_ops(self, path: str) -> list[tuple[int, bytes]]:
        ops = [self.op(OP_PUTROOTFH)]
        for part in [p for p in path.split("/") if p]:
            if part == "..":
                ops.append(self.op(OP_LOOKUPP))
                continue
            p = Packer()
            p.string(part)
            ops.append(self.op(OP_LOOKUP, p))
        return ops

    def putfh(self, fh: bytes) -> tuple[int, bytes]:
        p = Packer()
        p.opaque(fh)
        return self.op(OP_PUTFH, p)

    @staticmethod
    def _values(results: list[tuple[int, dict[str, Any]]], op: int) -> dict[str, Any]:
        for code, values in reversed(results):
            if code == op:
                return values
        raise KeyError(op)

    # ------------------------------------------------------------------ file system calls
    def lookup(self, path: str) -> bytes:
        results = self.compound([*self.lookup_ops(path), self.op(OP_GETFH)])
        fh: bytes = self._values(results, OP_GETFH)["fh"]
        return fh

    def stat(self, path: str) -> Attrs:
        p = Packer()
        p.bitmap(ATTR_BITMAP)
        attrs: Attrs = self._values(self.compound([*self.lookup_ops(path), self.op(OP_GETATTR, p)]), OP_GETATTR)[
            "attrs"
        ]
        return attrs

    def readlink(self, path: str) -> str:
        link: str = self._values(self.compound([*self.lookup_ops(path), self.op(OP_READLINK)]), OP_READLINK)["link"]
        return link

    def listdir(self, path: str) -> list[str]:
        p = Packer()
        p.u64(0)
        p.fixed(b"\0" * 8)
        p.u32(8192)
        p.u32(65536)
        p.bitmap([])
        values = self._values(self.compound([*self.lookup_ops(path), self.op(OP_READDIR, p)]), OP_READDIR)
        return sorted(values["names"])

    def remove(self, path: str) -> None:
        parent, _, name = path.rstrip("/").rpartition("/")
        p = Packer()
        p.string(name)
        self.compound([*self.lookup_ops(parent), self.op(OP_REMOVE, p)])

    def mkdir(self, path: str, mode: int = 0o755) -> None:
        parent, _, name = path.rstrip("/").rpartition("/")
        p = Packer()
        p.u32(2)  # NF4DIR
        p.string(name)
        p.bitmap([0, 1 << 1])  # mode
        p.opaque(struct.pack(">I", mode))
        self.compound([*self.lookup_ops(parent), self.op(OP_CREATE, p)])

    def chown(self, path: str, owner: str) -> None:
        p = Packer()
        p.fixed(b"\0" * 16)  # the anonymous stateid
        p.bitmap([0, 1 << 4])
        attr = Packer()
        attr.string(owner)
        p.opaque(attr.data())
        self.compound([*self.lookup_ops(path), self.op(OP_SETATTR, p)])

    def _ensure_client(self) -> int:
        if self.clientid is not None:
            return self.clientid
        p = Packer()
        p.fixed(os.urandom(8))
        p.opaque(b"workspace-tests-" + os.urandom(8).hex().encode())
        p.u32(0x40000000)  # callback program: none will be served
        p.string("tcp")
        p.string("127.0.0.1.0.0")
        p.u32(1)
        values = self._values(self.compound([self.op(OP_SETCLIENTID, p)]), OP_SETCLIENTID)
        c = Packer()
        c.u64(values["clientid"])
        c.fixed(values["verifier"])
        self.compound([self.op(OP_SETCLIENTID_CONFIRM, c)])
        self.clientid = int(values["clientid"])
        return self.clientid

    def open(self, path: str, write: bool = False, create: bool = False, mode: int = 0o644) -> Opened:
        clientid = self._ensure_client()
        parent, _, name = path.rstrip("/").rpartition("/")
        owner = os.urandom(12)
        p = Packer()
        p.u32(0)  # seqid of a new open-owner
        p.u32(3 if write else 1)  # share_access: BOTH or READ
        p.u32(0)  # share_deny
        p.u64(clientid)
        p.opaque(owner)
        if create:
            p.u32(1)  # OPEN4_CREATE
            p.u32(0)  # UNCHECKED4 (truncates with size 0)
            p.bitmap([1 << 4, 1 << 1])  # size, mode
            attrs = Packer()
            attrs.u64(0)
            attrs.u32(mode)
            p.opaque(attrs.data())
        else:
            p.u32(0)  # OPEN4_NOCREATE
        p.u32(0)  # CLAIM_NULL
        p.string(name)
        results = self.compound([*self.lookup_ops(parent), self.op(OP_OPEN, p), self.op(OP_GETFH)])
        opened = self._values(results, OP_OPEN)
        handle = Opened(self._values(results, OP_GETFH)["fh"], opened["stateid"], owner, 1)
        if opened["rflags"] & 2:  # OPEN4_RESULT_CONFIRM
            c = Packer()
            c.fixed(handle.stateid)
            c.u32(handle.seqid)
            confirmed = self.compound([self.putfh(handle.fh), self.op(OP_OPEN_CONFIRM, c)])
            handle.stateid = self._values(confirmed, OP_OPEN_CONFIRM)["stateid"]
            handle.seqid += 1
        return handle

    def close_file(self, handle: Opened) -> None:
        p = Packer()
        p.u32(handle.seqid)
        p.fixed(handle.stateid)
        self.compound([self.putfh(handle.fh), self.op(OP_CLOSE, p)])

    def _write_head(self, handle: Opened, offset: int, size: int) -> bytes:
        """PUTFH + WRITE up to the data's length: the data itself follows on the wire."""
        p = Packer()
        p.fixed(handle.stateid)
        p.u64(offset)
        p.u32(0)  # UNSTABLE4: COMMIT at the end
        p.u32(size)
        return self.putfh(handle.fh)[1] + self.op(OP_WRITE, p)[1]

    def write_file(self, path: str, chunks: Iterator[bytes] | bytes, mode: int = 0o644) -> int:
        """Create or truncate `path` and write the data, PIPELINE writes in flight."""
        if isinstance(chunks, bytes):
            chunks = iter([chunks[i : i + CHUNK] for i in range(0, len(chunks), CHUNK)] or [b""])
        handle = self.open(path, write=True, create=True, mode=mode)
        offset, in_flight, failed = 0, 0, True
        try:
            for chunk in chunks:
                if not chunk:
                    continue
                self._send(self._write_head(handle, offset, len(chunk)), 2, chunk)
                offset += len(chunk)
                in_flight += 1
                if in_flight >= PIPELINE:
                    in_flight -= 1
                    self._results(self._receive()[1])
            while in_flight:
                in_flight -= 1
                self._results(self._receive()[1])
            c = Packer()
            c.u64(0)
            c.u32(0)
            self.compound([self.putfh(handle.fh), self.op(OP_COMMIT, c)])
            failed = False
        finally:
            # Always CLOSE, as a real client does (a write refused midway included): an open
            # the server keeps holds the file, and its blocks, until the lease runs out.
            while in_flight:
                in_flight -= 1
                try:
                    self._results(self._receive()[1])
                except NfsError:
                    pass
            try:
                self.close_file(handle)
            except NfsError:
                if not failed:
                    raise
        return offset

    def read_file(self, path: str) -> Iterator[bytes]:
        """The file's bytes in order, CHUNK at a time, PIPELINE reads in flight (the server
        answers them in any order)."""
        handle = self.open(path)
        try:
            sent: dict[int, int] = {}  # xid -> offset
            done: dict[int, bytes] = {}  # offset -> data
            next_offset, wanted, end = 0, 0, None
            while True:
                while (end is None or next_offset < end) and len(sent) < PIPELINE:
                    p = Packer()
                    p.fixed(handle.stateid)
                    p.u64(next_offset)
                    p.u32(CHUNK)
                    sent[self._send(self.putfh(handle.fh)[1] + self.op(OP_READ, p)[1], 2)] = next_offset
                    next_offset += CHUNK
                if not sent:
                    break
                xid, u = self._receive()
                offset = sent.pop(xid)
                values = self._values(self._results(u), OP_READ)
                done[offset] = values["data"]
                if values["eof"] or len(values["data"]) < CHUNK:
                    end = min(end if end is not None else offset + CHUNK, offset + len(values["data"]))
                while wanted in done:
                    data = done.pop(wanted)
                    if data:
                        yield data
                    wanted += CHUNK
                    if end is not None and wanted >= end:
                        break
                if end is not None and wanted >= end and not sent:
                    break
        finally:
            self.close_file(handle)

    def read_bytes(self, path: str) -> bytes:
        return b"".join(self.read_file(path))
