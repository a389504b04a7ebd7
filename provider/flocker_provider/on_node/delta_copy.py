"""The copy rounds of a move after the first: runs on the nodes, in the move's helper containers.

    delta_copy.py receive --root DIR --port PORT           (destination; FLOCKER_SECRET, FLOCKER_ALLOWED)
    delta_copy.py send --root DIR --to ADDR:PORT --state F [--armed] [--final]   (source; FLOCKER_SECRET)
    delta_copy.py verify --root DIR --to ADDR:PORT --state F [--armed]

The source keeps, per file, the digests of the blocks it sent (the state file, in the source
helper) and the file's stat when it read it: it knows what the destination holds because
it put it there. A round rereads only files whose inode, size, mtime or ctime moved since,
hashes them (XXH3 over an mmap: about one `cat` of the file), and sends only blocks whose
digest changed, written in place. On btrfs a changed file of 1 MiB or more is reread only
where its extents changed since the last read (btrfs_extents). rsync instead read and
checksummed every changed file on both sides (a 1 GiB file with 2,000 pages rewritten: 4.8 s
against 0.26 s for one read).
The first round into a copy this program did not write asks the destination for the digests
of what it holds.

The destination keeps its own table of what it wrote, from its own disk: at the end of each
round it rereads the blocks it wrote and checks them against the source's digests. The
verification compares every entry's metadata and block digests, the destination's taken
from its disk (a file whose stat changed since it was written is hashed again), so a change
behind the copy's back is caught without reading the whole volume again.

Standard library only (plus python3-xxhash where installed): this file is put into the
helper containers and run with the image's python3.
"""

from __future__ import annotations

import argparse
import array
import base64
import contextlib
import errno
import hashlib
import hmac
import json
import mmap
import multiprocessing
import os
import pickle
import shutil
import socket
import stat
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

from . import btrfs_extents

try:
    import xxhash

    ALGORITHM = "xxh3_64"
    _hash = xxhash.xxh3_64_intdigest
except ImportError:  # an image without python3-xxhash: slower, same protocol
    ALGORITHM = "blake2b_64"

    def _hash(data: Any) -> int:
        return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


# Two levels of digests. A block of 64 KiB is what a round hashes to find what changed:
# hashing 1 GiB through mmap took 0.25 s here in 64 KiB blocks, 0.37 s in 8 KiB ones (the
# calls cost more than the hashing). A changed block is hashed again by page (8 KiB, a
# database's page) and only the changed pages are sent: a checkpoint that writes scattered
# pages would otherwise send 8 times what it wrote (45 of 67 MB of a table, for 16 MB of
# PostgreSQL's buffers).
BLOCK = 64 * 1024
PAGE = 8 * 1024
PAGES = BLOCK // PAGE
WINDOW = 1024 * BLOCK  # mmap'ed at once: 64 MiB
ZERO = bytes(BLOCK)
# On btrfs, files from this size are reread where their extents changed: below it, a map (an
# fsync and a search, ~0.1 ms) costs about what reading the whole file does.
MAPPED_FROM = 16 * BLOCK
ZERO_PAGE = _hash(ZERO[:PAGE])
# A file modified this close to when its stat was taken may change again within the same
# timestamp tick without its stat showing it ("racy clean" in git's words): reread it anyway.
RACY_NS = 1_000_000_000
TIMEOUT = 60.0
# How long the other side may leave a connect, or what we sent, unanswered before the copy
# counts as stalled (a cut link): the host passes its stall timeout (`--stall`). The kernel
# watches it (TCP_USER_TIMEOUT, and keepalive probes while we wait for an answer), so a link
# cut while the destination works on an answer is seen as well as one cut mid-send.
STALL = 30.0
PROGRESS_EVERY = 2.0
RESULT = "flocker-delta-result"
PROGRESS = "flocker-delta-progress"
READY = "flocker-delta listening"


class CopyError(Exception):
    """Something this program can say in one line."""


class Stalled(CopyError):
    """The other side did not answer in time: said apart from other failures, so that the host
    can tell a stalled copy from a failed one."""


def stalled(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) is the other side not answering in time."""
    current: BaseException | None = exc
    while current is not None:
        if isinstance(current, (Stalled, TimeoutError)) or getattr(current, "errno", None) == errno.ETIMEDOUT:
            return True
        current = current.__cause__
    return False


def watch_liveness(conn: socket.socket, stall: float) -> None:
    """The connection fails once the other side has acknowledged nothing for ``stall`` seconds,
    also while it is idle (probed every second)."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(stall * 1000))


# --- the wire: one byte of kind, four of length, then the payload -------------------


class Wire:
    """Messages over a connection, buffered both ways: a round sends thousands of 8 KiB
    pages, and a syscall for each header and each page cost more than the page. What is
    sent is kept as the buffers it was given (a page is a view of the mapping it was hashed
    from) and goes out with one ``sendmsg`` per many of them: copying 100 MB of pages into
    one buffer first cost the reader as much as its hashing."""

    FLUSH_AT = 1 << 20
    IOV_MAX = 1024  # buffers one sendmsg takes (Linux's IOV_MAX)
    # Headers and small messages are read through this buffer; the bulk of a bigger payload
    # goes straight from the socket into the payload's own (one copy, not two).
    READ_BUFFER = 64 << 10

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self._reader = conn.makefile("rb", buffering=self.READ_BUFFER)
        self._out: list[Any] = []
        self._size = 0

    def write(self, kind: bytes, *parts: Any) -> None:
        """A message of ``parts`` (bytes-like), sent at the next flush or once enough is waiting."""
        size = sum(len(part) for part in parts)
        self._out.append(struct.pack(">cI", kind, size))
        self._out += [part for part in parts if len(part)]
        self._size += 5 + size
        if self._size >= self.FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        """Everything written so far, sent: after it the buffers written may change or go."""
        buffers, self._out, self._size = self._out, [], 0
        first = 0
        while first < len(buffers):
            sent = self.conn.sendmsg(buffers[first : first + self.IOV_MAX])
            while sent:
                size = len(buffers[first])
                if sent < size:  # sent in part: the rest goes next
                    buffers[first] = memoryview(buffers[first])[sent:]
                    break
                sent -= size
                first += 1

    def close(self) -> None:
        self._reader.close()
        self.conn.close()

    def read_exactly(self, size: int) -> bytes:
        return self._reader.read(size)

    def read(self) -> tuple[bytes, bytearray]:
        header = self._reader.read(5)
        if len(header) < 5:
            raise CopyError("the other side closed the connection")
        kind, size = struct.unpack(">cI", header)
        payload = bytearray(size)
        if self._reader.readinto(payload) < size:
            raise CopyError("the other side closed the connection inside a message")
        return kind, payload


def Digests(values: Any = ()) -> array.array:  # noqa: N802 (a type's name, as it reads)
    return array.array("Q", values)


def little_endian(digests: array.array) -> bytes:
    """Digests as they travel, whatever this node's byte order."""
    if sys.byteorder == "little":
        return digests.tobytes()
    swapped = array.array(digests.typecode, digests)
    swapped.byteswap()
    return swapped.tobytes()


def from_little_endian(data: Any, typecode: str = "Q") -> array.array:
    numbers = array.array(typecode)
    numbers.frombytes(data)
    if sys.byteorder != "little":
        numbers.byteswap()
    return numbers


def _encode(value: Any) -> Any:
    """Digest arrays travel as little-endian bytes in base64: a list of a million numbers is
    slow to write and read as JSON."""
    if isinstance(value, array.array):
        return {"b64": base64.b64encode(little_endian(value)).decode()}
    raise TypeError(type(value))


def _decode(value: dict[str, Any]) -> Any:
    if len(value) == 1 and isinstance(value.get("b64"), str):
        return from_little_endian(base64.b64decode(value["b64"]))
    return value


def packed(value: Any) -> bytes:
    return zlib.compress(json.dumps(value, separators=(",", ":"), default=_encode).encode(), 1)


def unpacked(payload: bytes | bytearray) -> Any:
    return json.loads(zlib.decompress(payload), object_hook=_decode)


# --- reading a tree ------------------------------------------------------------------


def kind_of(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "f"
    if stat.S_ISDIR(mode):
        return "d"
    if stat.S_ISLNK(mode):
        return "l"
    return "s"  # fifos, sockets, devices


def walk(root: str) -> Iterator[tuple[str, os.stat_result]]:
    """Every entry under ``root`` as (relative path, lstat), the root itself as ".", parents
    before children, in sorted order (the first path of a hard-link set is the same on both sides)."""
    yield ".", os.lstat(root)
    stack = [""]
    while stack:
        relative = stack.pop()
        directory = os.path.join(root, relative) if relative else root
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:  # removed since it was listed: the next round sees it gone
            continue
        subdirectories = []
        for name in names:
            path = f"{relative}/{name}" if relative else name
            try:
                info = os.lstat(os.path.join(root, path))
            except FileNotFoundError:
                continue
            yield path, info
            if stat.S_ISDIR(info.st_mode):
                subdirectories.append(path)
        stack.extend(reversed(subdirectories))


def stat_key(info: os.stat_result) -> list[int]:
    return [info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]


def blocks(path: str, size: int, start: int = 0, unmapping: Callable[[], None] | None = None) -> Iterator[tuple[int, memoryview]]:
    """(offset, block) of each block of the file from ``start`` (a multiple of BLOCK) up to
    ``size``, read through mmap windows; ``unmapping`` is called before a window is
    unmapped, to let go of views of it kept meanwhile (pages waiting to be sent)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        size = min(size, os.fstat(fd).st_size)  # shrunk since its stat: the rest is gone
        for window_start in range(start, size, WINDOW):
            length = min(WINDOW, size - window_start)
            window = mmap.mmap(
                fd, length, prot=mmap.PROT_READ, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0), offset=window_start
            )
            view = memoryview(window)
            try:
                for offset in range(0, length, BLOCK):
                    block = view[offset : offset + BLOCK]
                    yield window_start + offset, block
                    block.release()
                if unmapping is not None:
                    unmapping()
            finally:
                view.release()
                # After a failure, pages that were waiting to be sent may still hold views of
                # the window: it is unmapped once they are gone.
                with contextlib.suppress(BufferError):
                    window.close()
    except (ValueError, OSError) as exc:  # truncated under the mmap (SIGBUS is not raised for a read past EOF here)
        raise CopyError(f"reading {path}: {exc}") from exc
    finally:
        os.close(fd)


def meta_of(info: os.stat_result, full: str) -> dict[str, Any]:
    """What the copy keeps of an entry besides a file's contents."""
    kind = kind_of(info.st_mode)
    meta: dict[str, Any] = {"k": kind, "u": info.st_uid, "g": info.st_gid}
    if kind != "l":
        meta["m"] = stat.S_IMODE(info.st_mode)
    if kind == "f":
        meta["z"] = info.st_size
        meta["t"] = info.st_mtime_ns
    elif kind == "d":
        meta["dt"] = info.st_mtime_ns  # set, not compared: file systems differ in directory times
    elif kind == "l":
        meta["target"] = os.readlink(full)
    elif kind == "s":
        meta["type"] = stat.S_IFMT(info.st_mode)
        meta["rdev"] = info.st_rdev
        meta["t"] = info.st_mtime_ns
    return meta


def entry_digest(entry: dict[str, Any]) -> str:
    """One entry's metadata and contents, as the verification compares them; kept in the
    entry (``e``), which is replaced, never changed, when what it says changes."""
    if "e" not in entry:
        compared = {key: entry[key] for key in ("k", "u", "g", "m", "z", "t", "target", "type", "rdev", "link") if key in entry}
        text = json.dumps(compared, sort_keys=True).encode()
        entry["e"] = hashlib.sha256(text + little_endian(Digests(entry.get("q") or ()))).hexdigest()[:32]
    return entry["e"]


def zero_digest(length: int) -> int:
    """The digest of a page of zeros (of a last page, shorter)."""
    return ZERO_PAGE if length >= PAGE else _hash(ZERO[:length])


def page_digests(block: Any) -> list[int]:
    return [_hash(block[offset : offset + PAGE]) for offset in range(0, len(block), PAGE)]


# Where many blocks changed (a checkpoint's pages all over a table), a block's own digest is
# work thrown away: its pages are hashed anyway. There pages are hashed first and a changed
# block's digest is left unknown (0 matches nothing: the next round compares it page by
# page). Measured here with XXH3: 0.15 s/GiB by 64 KiB block, 0.20 s/GiB by 8 KiB page, so
# pages first pays once more than a quarter of the blocks changed.
DENSE_AFTER = 16  # blocks of a file seen before how many of them changed decides


def dense(seen: int, changed: int) -> bool:
    """Whether the next block of a file is hashed by page first, after ``changed`` of its ``seen`` blocks."""
    return seen > DENSE_AFTER and changed * 4 > seen


def summary(table: dict[str, dict[str, Any]]) -> list[list[str]]:
    return [[path, entry_digest(table[path])] for path in sorted(table)]


# --- the destination -------------------------------------------------------------------


class Session:
    """What one connection has under way: the file it is writing (path, descriptor, what the
    table knew of it, the pages written with their digests)."""

    def __init__(self) -> None:
        self.open: tuple[str, int, dict[str, Any] | None, list[tuple[int, int, array.array]]] | None = None


class Destination:
    """Applies a round's changes under ``root`` and keeps its own table of what it holds."""

    def __init__(self, root: str) -> None:
        self.root = os.path.realpath(root)
        self.table: dict[str, dict[str, Any]] | None = None  # built from the disk at the first request
        self.stats = {"bytes_written": 0}
        self._touched_dirs: set[str] = set()
        self._parts: dict[str, list[tuple[int, array.array]]] = {}  # what parts of a file wrote, checked, until its end

    def full(self, path: str) -> str:
        """The path under the root; never outside it, not even through a symlink on the way."""
        if path == ".":
            return self.root
        if path.startswith("/") or any(part in ("", ".", "..") for part in path.split("/")):
            raise CopyError(f"refused path {path!r}")
        full = os.path.join(self.root, path)
        parent = os.path.realpath(os.path.dirname(full))
        if parent != self.root and not parent.startswith(self.root + "/"):
            raise CopyError(f"refused path {path!r}: outside the volume")
        return full

    def scan(self) -> dict[str, dict[str, Any]]:
        """The table from what is on disk: every entry hashed (a copy this program did not write)."""
        table: dict[str, dict[str, Any]] = {}
        links: dict[tuple[int, int], str] = {}
        for path, info in walk(self.root):
            table[path] = self._entry(path, info, links)
        return table

    def _entry(self, path: str, info: os.stat_result, links: dict[tuple[int, int], str]) -> dict[str, Any]:
        full = os.path.join(self.root, path) if path != "." else self.root
        entry = meta_of(info, full)
        if entry["k"] == "f":
            first = links.setdefault((info.st_dev, info.st_ino), path) if info.st_nlink > 1 else path
            if first != path:
                return {"k": "f", "link": first}  # its contents and metadata are the first path's
            entry["d"], entry["q"] = Digests(), Digests()
            for _, block in blocks(full, info.st_size):
                entry["d"].append(_hash(block))
                entry["q"].extend(page_digests(block))
            entry["s"] = stat_key(info)
        return entry

    def forget(self) -> None:
        """After a failed round, which may be half-applied: the table is read from the disk again next time."""
        self.table = None
        self._parts.clear()

    def ensure_table(self) -> dict[str, dict[str, Any]]:
        if self.table is None:
            self.table = self.scan()
        return self.table

    def handle(self, kind: bytes, payload: bytearray, session: Session) -> bytes | None:
        """Apply one message of ``session``; what to answer, if it asks for an answer."""
        table = self.ensure_table()
        if kind == b"T":
            for path, entry in table.items():
                if entry.get("k") == "f" and "link" not in entry and "d" not in entry:
                    table[path] = self._entry(path, os.lstat(self.full(path)), {})  # written since its scan: hashed again
            return packed(table)
        if kind == b"D":
            self._delete(payload.decode("utf-8", "surrogateescape"))
        elif kind == b"R":
            self._rename(*unpacked(payload))
        elif kind == b"M":
            self._make(unpacked(payload))
        elif kind == b"F":
            self._begin_file(unpacked(payload), session)
        elif kind == b"W":
            self._write(payload, session)
        elif kind == b"E":
            self._end_file(unpacked(payload), session)
        elif kind == b"S":
            return packed(None)  # everything before it is applied
        elif kind == b"C":
            self._set_directory_times()
            answer, self.stats = self.stats, {"bytes_written": 0}
            return packed(answer)
        elif kind == b"V":
            return packed(self._compare(unpacked(payload)))
        else:
            raise CopyError(f"unknown message {kind!r}")
        return None

    def _delete(self, path: str) -> None:
        full = self.full(path)
        self._touched_dirs.add(os.path.dirname(path))
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full)
        elif os.path.lexists(full):
            os.unlink(full)
        assert self.table is not None
        for known in [p for p in self.table if p == path or p.startswith(path + "/")]:
            del self.table[known]

    def _rename(self, old: str, new: str) -> None:
        assert self.table is not None
        self._clear(self.full(new), "")
        os.makedirs(os.path.dirname(self.full(new)), exist_ok=True)  # a new directory's entry comes later in the round
        os.rename(self.full(old), self.full(new))
        self._touched_dirs |= {os.path.dirname(old), os.path.dirname(new)}
        # Only its ctime moved, by our own rename: the verification need not read it again.
        self.table[new] = {**self.table.pop(old), "s": stat_key(os.lstat(self.full(new)))}

    def _clear(self, full: str, keep: str) -> None:
        """Make room for an entry of kind ``keep`` (a file replaced by a directory, ...)."""
        try:
            info = os.lstat(full)
        except FileNotFoundError:
            return
        if kind_of(info.st_mode) == keep and keep in ("d", "f"):
            return
        if stat.S_ISDIR(info.st_mode):
            shutil.rmtree(full)
        else:
            os.unlink(full)

    def _make(self, entry: dict[str, Any]) -> None:
        path = entry.pop("p")
        full = self.full(path)
        kind = entry["k"]
        self._touched_dirs.add(os.path.dirname(path))
        if path != ".":
            self._clear(full, kind if "link" not in entry else "")
        if "link" in entry:
            os.link(self.full(entry["link"]), full)
        elif kind == "d":
            os.makedirs(full, exist_ok=True)
        elif kind == "l":
            os.symlink(entry["target"], full)
        elif kind == "s":
            os.mknod(full, entry["type"] | entry["m"], entry["rdev"])
        if "link" not in entry:
            self._own(full, entry)
        assert self.table is not None
        self.table[path] = entry
        if kind == "d":
            self._touched_dirs.add(path)

    def _own(self, full: str, entry: dict[str, Any]) -> None:
        os.chown(full, entry["u"], entry["g"], follow_symlinks=False)
        if entry["k"] != "l":
            os.chmod(full, entry["m"])  # after chown, which clears set-id bits
        if "t" in entry:
            os.utime(full, ns=(entry["t"], entry["t"]), follow_symlinks=False)

    def _begin_file(self, entry: dict[str, Any], session: Session) -> None:
        path = entry["p"]
        full = self.full(path)
        self._clear(full, "f")
        assert self.table is not None
        known = self.table.get(path)
        if known is not None and (known.get("k") != "f" or "link" in known):
            known = None
        # Read and write: what is written is read back through a mapping of it.
        fd = os.open(full, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        self._touched_dirs.add(os.path.dirname(path))
        session.open = (path, fd, known, [])

    def _write(self, payload: bytearray, session: Session) -> None:
        """Runs of pages: their bytes one run after another, then where each run goes and its
        length, the digests of its pages, and how many runs and pages."""
        if session.open is None:
            raise CopyError("pages outside a file")
        _, fd, _, written = session.open
        runs, count = struct.unpack_from("<II", payload, len(payload) - 8)
        digests_at = len(payload) - 8 - 8 * count
        lengths_at = digests_at - 4 * runs
        offsets_at = lengths_at - 8 * runs
        if offsets_at < 0:
            raise CopyError("a malformed message of pages")
        offsets = from_little_endian(payload[offsets_at:lengths_at])
        lengths = from_little_endian(payload[lengths_at:digests_at], "I")
        digests = from_little_endian(payload[digests_at:-8])
        data = memoryview(payload)
        position = page = 0
        for offset, length in zip(offsets, lengths, strict=True):
            pages = -(-length // PAGE)
            if offset % PAGE or position + length > offsets_at:
                raise CopyError("a malformed message of pages")
            if os.pwrite(fd, data[position : position + length], offset) != length:
                raise CopyError(f"a short write at {offset} (is the disk full?)")
            written.append((offset, length, digests[page : page + pages]))
            position += length
            page += pages
        if (position, page) != (offsets_at, count):
            raise CopyError("a malformed message of pages")
        self.stats["bytes_written"] += position

    def _end_file(self, entry: dict[str, Any], session: Session) -> None:
        if session.open is None:
            raise CopyError("the end of a file that was not begun")
        path, fd, known, written = session.open
        session.open = None
        try:
            if "r" in entry:
                # A part of a big file, from one reader's connection: what it wrote is read back
                # now, while the other reader still sends, not all at the file's own end.
                self._parts.setdefault(path, []).extend(self._read_back(path, fd, os.fstat(fd).st_size, written))
                return
            os.ftruncate(fd, entry["z"])
            checked = self._parts.pop(path, []) + self._read_back(path, fd, entry["z"], written)
        finally:
            os.close(fd)
        full = self.full(path)
        self._own(full, entry)
        size = entry["z"]
        count = -(-size // PAGE)
        old_pages = (known or {}).get("q") or Digests()
        # Past the old end, what was not written is a hole: zeros.
        pages = old_pages[:count] + Digests(zero_digest(size - number * PAGE) for number in range(len(old_pages), count))
        for first, read in checked:
            pages[first : first + len(read)] = read
        stored = {key: value for key, value in entry.items() if key != "p"}
        stored["q"] = pages  # from this disk; block digests are made again if the source asks (T)
        stored["s"] = stat_key(os.lstat(full))
        assert self.table is not None
        self.table[path] = stored

    def _read_back(self, path: str, fd: int, size: int, written: list[tuple[int, int, array.array]]) -> list[tuple[int, array.array]]:
        """(first page number, this disk's digests) of each run of pages written (where, how
        long, the source's digests), read back through a mapping (no copy): each must be
        what the source sent (a page whose length changed, the old last one or the new,
        differs, so it was sent too; a part of a file may write its new, shorter last page
        before the file's end truncates it, so a run's last page is read as long as it was sent)."""
        if not size or not written:
            return []
        checked = []
        with mmap.mmap(fd, size, prot=mmap.PROT_READ, flags=mmap.MAP_SHARED) as mapped, memoryview(mapped) as view:
            for offset, length, digests in written:
                end = offset + length
                read = Digests(_hash(view[o : min(o + PAGE, end)]) for o in range(offset, end, PAGE))
                if read != digests:
                    number = next(n for n, (a, b) in enumerate(zip(read, digests, strict=True)) if a != b)
                    raise CopyError(f"{path}: the page at {offset + number * PAGE} differs from the source's after writing it")
                checked.append((offset // PAGE, read))
        return checked

    def _set_directory_times(self) -> None:
        """Directory times are set last, deepest first: every entry made inside one changes it."""
        assert self.table is not None
        for path in sorted(self._touched_dirs | {"."}, key=lambda p: -p.count("/") - (p not in ("", "."))):
            entry = self.table.get(path or ".")
            if entry is not None and entry.get("k") == "d" and "dt" in entry:
                os.utime(self.full(path or "."), ns=(entry["dt"], entry["dt"]))
        self._touched_dirs.clear()

    def _compare(self, theirs: list[list[str]]) -> dict[str, Any]:
        """The source's summary against this disk: a file whose stat moved since it was
        written (or that the table does not know) is hashed again first."""
        assert self.table is not None
        current: dict[str, dict[str, Any]] = {}
        links: dict[tuple[int, int], str] = {}
        for path, info in walk(self.root):
            if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
                links.setdefault((info.st_dev, info.st_ino), path)
            known = self.table.get(path)
            unchanged = known is not None and known.get("s") == stat_key(info) and "link" not in known
            current[path] = known if unchanged and known is not None else self._entry(path, info, links)
        ours = dict(summary(current))
        source = dict(theirs)
        differences = [f"different or only on the source: {path}" for path in sorted(source) if ours.get(path) != source[path]]
        differences += [f"only on the destination: {path}" for path in sorted(ours) if path not in source]
        return {"equal": not differences, "differences": differences[:5], "entries": len(ours)}


def serve(root: str, port: int) -> None:
    """Rounds and verifications, one connection each, applied one at a time. Connections are
    taken at once, so that an armed sender is connected (and its exec started) before its turn."""
    secret = os.environ["FLOCKER_SECRET"].encode()
    allowed = os.environ["FLOCKER_ALLOWED"]
    destination = Destination(root)
    turn = threading.Lock()
    server = socket.create_server(("0.0.0.0", port))
    print(READY, flush=True)

    def session(conn: socket.socket, peer: str) -> None:
        try:
            wire = Wire(conn)
            state = Session()
            got = wire.read_exactly(len(secret)) if peer == allowed else b""
            if not hmac.compare_digest(got, secret):
                print("refused a connection from", peer, flush=True)
                return
            wire.write(b"H", ALGORITHM.encode())
            wire.flush()
            while True:
                try:
                    kind, payload = wire.read()
                except CopyError:
                    return  # the sender is done
                with turn:
                    answer = destination.handle(kind, payload, state)
                if answer is not None:
                    wire.write(kind, answer)
                    wire.flush()
        except (CopyError, OSError) as exc:
            print(f"round failed: {exc}", flush=True)
            destination.forget()
            with contextlib.suppress(OSError):
                wire.write(b"X", str(exc).encode())
                wire.flush()
        finally:
            conn.close()

    while True:
        conn, (peer, _) = server.accept()
        conn.settimeout(None)
        threading.Thread(target=session, args=(conn, peer), daemon=True).start()


# --- the source -------------------------------------------------------------------------


# Below this much to read, one process: a fork costs more than it saves.
PARALLEL_BYTES = 64 << 20
MAX_READERS = 2
# A file bigger than this is read in parts of this size, each taken by whichever reader is
# free: with shares fixed ahead (half of each big file to each reader) one reader sat idle
# for the last 50-70 ms of phase 2 (PostgreSQL at 0.26 and 2 GB here). Measured (1.9 GB,
# 13,600 pages rewritten, node to node): 0.39-0.41 s a round with halves, 0.36-0.37 with
# 64 MiB parts, 0.43-0.44 with 16 or 128 MiB (per part costs, then a longer last part).
PART_BYTES = WINDOW


def readers() -> int:
    """How many processes read a round that has much to read: one per core, two at most."""
    return min(os.cpu_count() or 1, MAX_READERS)


def _read_share(source: Source, wire: Wire, units: list[Any], taken: Any, result: Any) -> None:
    """A reader process: the units it takes, on a connection of its own; what it read (the
    table's new entries, the parts, its counts) goes back to the round through ``result``."""
    try:
        source.wire = wire
        source.table, source.parts, source.counts = {}, {}, dict.fromkeys(source.counts, 0)
        source._read_taken(units, taken)
        source.ask(b"S")
        result.send({"table": source.table, "parts": source.parts, "counts": source.counts})
    except (CopyError, OSError) as exc:
        result.send({"error": str(exc), "stalled": stalled(exc)})
    finally:
        result.close()
        os._exit(0)  # no cleanup of the parent's objects (its connection, its buffers)


class Pages:
    """Changed pages, sent in as few messages as they fit: where each run of adjacent pages
    goes, the pages (views of what was hashed, not copies) and their digests (the destination
    checks what it wrote). A message is cut at the wire's flush size, so memory stays bounded."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self._clear()

    def _clear(self) -> None:
        self.pieces: list[memoryview] = []
        self.offsets, self.lengths, self.digests = Digests(), array.array("I"), Digests()
        self.size = 0
        self.next = -1  # the offset a page must have to extend the last run

    def add(self, offset: int, pages: memoryview, digests: list[int]) -> None:
        """Pages that follow one another from ``offset``, with their digests."""
        if self.size + len(pages) > Wire.FLUSH_AT:
            self.send()
        if offset == self.next:
            self.lengths[-1] += len(pages)
        else:
            self.offsets.append(offset)
            self.lengths.append(len(pages))
        self.pieces.append(pages)
        self.digests.extend(digests)
        self.size += len(pages)
        self.next = offset + len(pages)
        self.source.counts["pages_sent"] += len(digests)
        self.source.counts["bytes_sent"] += len(pages)

    def send(self) -> None:
        if self.pieces:
            counts = struct.pack("<II", len(self.offsets), len(self.digests))
            trailer = little_endian(self.offsets) + little_endian(self.lengths) + little_endian(self.digests) + counts
            self.source.send(b"W", *self.pieces, trailer)
            self._clear()


class Source:
    """One round from ``root`` to the destination connected on ``conn``; ``table`` is what the
    destination holds, as this side sent it."""

    def __init__(
        self,
        root: str,
        wire: Wire,
        table: dict[str, dict[str, Any]],
        streamed_after: int | None = None,
        stable: bool = False,
        stall: float = STALL,
        total: int | None = None,
        extents: bool = False,
    ) -> None:
        self.root = root
        # The volume is on btrfs and its extent items can be searched: a file read before is
        # reread only where its extents changed (btrfs_extents), its map taken before the read.
        self.extents = extents
        self.maps: dict[str, bytes | None] = {}
        # The application is stopped (phase 2): nothing writes the files while they are read.
        self.stable = stable
        self.wire = wire
        self.table = table
        # When the first copy's tar stream began (this node's clock, ns): a file unchanged
        # since then was read by tar as it is now, so the destination's digests of it are its own.
        self.streamed_after = streamed_after
        self.counts = {
            "entries": 0,
            "files_read": 0,
            "files_taken_from_stream": 0,
            "bytes_read": 0,
            "pages_sent": 0,
            "bytes_sent": 0,
            "deleted": 0,
            "renamed": 0,
            "total_size": 0,
            "readers": 1,
            "parts": 0,  # of big files, read by different readers
            "files_mapped": 0,  # reread where their extents changed, not whole
            "map_seconds": 0.0,  # taking extent maps, summed over the readers
        }
        self._last_progress = time.monotonic()
        # Progress lines come at least four times per stall timeout: the host's watch takes a
        # copy that prints none for that long as stalled.
        self._progress_every = min(PROGRESS_EVERY, stall / 4)
        self.stall = stall
        self.total = total
        # Files to read, and hard links to make once they are there: see ``round``.
        self._pending: list[tuple[str, str, os.stat_result, dict[str, Any], dict[str, Any] | None]] = []
        self._links: list[tuple[str, dict[str, Any]]] = []
        # Connections for the other readers, made before the round (``_read_pending``).
        self.spares: list[Wire] = []
        # A big file's parts read so far, by (path, where the part starts): their block and
        # page digests and where reading ended.
        self.parts: dict[tuple[str, int], tuple[array.array, array.array, int]] = {}

    def progress(self) -> None:
        """A progress line, if the last is old enough: called as the round advances (entries
        walked, blocks read and sent), and every so often while it waits for the destination's
        answer, whose connection fails if the destination stops acknowledging (``watch_liveness``).
        Also what keeps the exec's output from a minute of silence (the Docker API's timeout)."""
        if time.monotonic() - self._last_progress > self._progress_every:
            self._last_progress = time.monotonic()
            print(f"{PROGRESS} {self.counts['bytes_read']} {self.total or 0}", flush=True)

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """Progress lines from a thread while the destination works on an answer (its scan of
        a whole copy can take minutes)."""
        done = threading.Event()

        def tick() -> None:
            while not done.wait(self._progress_every / 2):
                self.progress()

        ticker = threading.Thread(target=tick, daemon=True)
        ticker.start()
        try:
            yield
        finally:
            done.set()
            ticker.join()

    def send(self, kind: bytes, *parts: Any, flush: bool = False) -> None:
        try:
            self.wire.write(kind, *parts)
            if flush:
                self.wire.flush()
        except OSError as exc:
            raise self.failed(exc) from exc

    def flush(self) -> None:
        try:
            self.wire.flush()
        except OSError as exc:
            raise self.failed(exc) from exc

    def failed(self, exc: OSError) -> CopyError:
        """The destination gave up: its reason is waiting to be read."""
        return CopyError(self._reason() or f"sending to the destination: {exc}")

    def _reason(self) -> str | None:
        with contextlib.suppress(CopyError, OSError):
            self.wire.conn.settimeout(1)
            kind, body = self.wire.read()
            if kind == b"X":
                return f"the destination failed: {body.decode(errors='replace')}"
        return None

    def ask(self, kind: bytes, payload: bytes = b"", timeout: float = TIMEOUT) -> Any:
        self.send(kind, payload, flush=True)
        return self.answer(timeout)

    def answer(self, timeout: float = TIMEOUT) -> Any:
        """The destination's answer to what was asked last."""
        self.wire.conn.settimeout(max(timeout, self.stall))
        with self.waiting():
            answer, body = self.wire.read()
        self.wire.conn.settimeout(max(TIMEOUT, self.stall))
        if answer == b"X":
            raise CopyError(f"the destination failed: {body.decode(errors='replace')}")
        return unpacked(body)

    def round(self) -> None:
        """One round, up to the commit asked for (``C``): its answer, once the destination has
        applied everything, is read with ``answer`` (meanwhile the state can be saved)."""
        entries = list(walk(self.root))
        self._renames(entries)
        seen: set[str] = set()
        links: dict[tuple[int, int], str] = {}
        for path, info in entries:
            seen.add(path)
            self.counts["entries"] += 1
            self._entry(path, info, links)
            self.progress()
        self._read_pending()
        for path, meta in self._links:  # once the files they link to are there
            self.send(b"M", packed({**meta, "p": path}))
        for path in sorted((p for p in self.table if p not in seen), reverse=True):
            if path in self.table:  # not removed with a directory above it already
                self._delete(path)
        self.send(b"C", flush=True)

    def _read_pending(self) -> None:
        """The files to read, by as many processes as there are cores (two at most) when there
        is much to read: Debian's python3-xxhash holds the GIL, and hashing is most of the
        work. A big file is read in parts (a database of one big table would otherwise keep
        one reader busy and the other idle), and every reader takes the next file or part
        as it is free, largest first. Each reads on a connection of its own, made before the
        round; the destination's directories exist by then (``S``: everything sent so far
        is applied). A file read in parts is ended once every part is applied, on this
        connection."""
        pending, self._pending = self._pending, []
        spares, self.spares = self.spares, []
        try:
            if not spares or sum(item[2].st_size for item in pending) < PARALLEL_BYTES:
                for item in pending:
                    self._read((item, None))
                return
            self.ask(b"S")
            self.counts["readers"] = 1 + len(spares)
            units: list[tuple[Any, tuple[int, int] | None]] = []
            split = []
            for item in pending:
                size = item[2].st_size
                if size <= PART_BYTES or self._mappable(item[2], item[4]):
                    units.append((item, None))
                    continue
                if self.extents:  # its parts are read whole: the next round compares with this map
                    self.maps[item[0]] = self._extent_map(item[1])
                split.append(item)
                units += [(item, (start, min(start + PART_BYTES, size))) for start in range(0, size, PART_BYTES)]
            units.sort(key=lambda unit: unit[0][2].st_size if unit[1] is None else unit[1][1] - unit[1][0], reverse=True)
            context = multiprocessing.get_context("fork")
            taken = context.Value("q", 0)  # the next unit to read, whoever reads it
            readers = []
            for spare in spares:
                receiving, sending = context.Pipe(duplex=False)
                process = context.Process(target=_read_share, args=(self, spare, units, taken, sending), daemon=True)
                process.start()
                sending.close()
                readers.append((process, receiving))
            self._read_taken(units, taken)
            for process, receiving in readers:
                try:
                    outcome = receiving.recv()
                except EOFError:
                    outcome = {"error": "a reader process ended without a word"}
                process.join()
                if "error" in outcome:
                    raise (Stalled if outcome.get("stalled") else CopyError)(outcome["error"])
                self.table.update(outcome["table"])
                self.parts.update(outcome["parts"])
                for key, value in outcome["counts"].items():
                    if key != "readers":
                        self.counts[key] += value
            for path, full, info, meta, _ in split:
                self._join_parts(path, full, info, meta)
        finally:
            for spare in spares:  # a reader has its own copy of it
                spare.close()

    def _read_taken(self, units: list[Any], taken: Any) -> None:
        """The units no other reader has taken, one after the other."""
        while True:
            with taken.get_lock():
                index = taken.value
                taken.value += 1
            if index >= len(units):
                return
            self._read(units[index])

    def _renames(self, entries: list[tuple[str, os.stat_result]]) -> None:
        """Files that are now under another name (PostgreSQL recycles its WAL segments by
        renaming them) are renamed on the destination first, so that their old contents are
        the basis of the block comparison instead of a new file sent whole."""
        files = [(path, info) for path, info in entries if stat.S_ISREG(info.st_mode) and info.st_nlink == 1]
        live = {info.st_ino: path for path, info in files}
        known = {e["s"][0]: p for p, e in self.table.items() if e["k"] == "f" and "link" not in e and e.get("s")}
        for path, info in files:
            before = known.get(info.st_ino)
            if before is None or before == path or live.get(self.table[before]["s"][0]) == before:
                continue  # not read before, the same name, or still there under its old name
            target = self.table.get(path)
            if target is not None and target.get("s") and target["s"][0] in live:
                continue  # what is there now lives on under another name: left to the rounds
            self.send(b"R", packed([before, path]))
            self.counts["renamed"] += 1
            self.table[path] = {**self.table.pop(before), "renamed": True}
            del known[info.st_ino]

    def _delete(self, path: str) -> None:
        self.send(b"D", path.encode("utf-8", "surrogateescape"))
        self.counts["deleted"] += 1
        for known in [p for p in self.table if p == path or p.startswith(path + "/")]:
            del self.table[known]

    def _entry(self, path: str, info: os.stat_result, links: dict[tuple[int, int], str]) -> None:
        full = os.path.join(self.root, path) if path != "." else self.root
        try:
            meta = meta_of(info, full)
        except FileNotFoundError:
            return  # a symlink removed between its stat and its readlink: seen gone next round
        if meta["k"] == "f":
            self.counts["total_size"] += info.st_size
            first = links.setdefault((info.st_dev, info.st_ino), path) if info.st_nlink > 1 else path
            if first != path:
                meta = {"k": "f", "link": first}
        old = self.table.get(path)
        if old is not None and (old["k"] != meta["k"] or old.get("link") != meta.get("link")):
            self._delete(path)  # another kind, or another hard-link set: never written through
            old = None
        if meta["k"] != "f" or "link" in meta:
            if old is None or any(old.get(key) != value for key, value in meta.items()):
                if "link" in meta:
                    self._links.append((path, meta))
                else:
                    self.send(b"M", packed({**meta, "p": path}))
                self.table[path] = meta
            return
        if old is not None and not old.get("racy") and old.get("s") is not None:
            # Unchanged since it was read. A rename changes only a file's ctime: renamed, it is
            # unchanged if inode, size and mtime are (rsync's quick check is size and mtime).
            same = old["s"] == stat_key(info) or (old.get("renamed") and old["s"][:3] == stat_key(info)[:3])
            if same:
                old["s"], old["renamed"] = stat_key(info), False
                return
        if old is not None and old.get("s") is None and self._streamed_as_is(info, old):
            # Its contents are there: only its metadata is made exact (tar kept mtimes to the second).
            self.send(b"F", packed({"p": path}))
            self.send(b"E", packed({**meta, "p": path}))
            self.table[path] = {**meta, "d": old["d"], "q": old.get("q") or Digests(), "s": stat_key(info), "racy": False}
            self.counts["files_taken_from_stream"] += 1
            return
        self._pending.append((path, full, info, meta, old))

    def _streamed_as_is(self, info: os.stat_result, old: dict[str, Any]) -> bool:
        return self.streamed_after is not None and info.st_ctime_ns < self.streamed_after - RACY_NS and old.get("z") == info.st_size

    def _read(self, unit: tuple[Any, tuple[int, int] | None]) -> None:
        """A file read whole, or one part of it (``span``: its bytes from, to)."""
        (path, full, info, meta, old), span = unit
        if span is None:
            self.send(b"F", packed({"p": path}))
            only = None
            if self.extents and info.st_size >= MAPPED_FROM:
                self.maps[path] = self._extent_map(full)
                only = self._changed_blocks(info, old, self.maps[path])
                self.counts["files_mapped"] += only is not None
            digests, pages, size = self._changed_pages(full, info, old, 0, info.st_size, only)
            self.send(b"E", packed({**meta, "z": size, "p": path}))
            self._done(path, full, info, meta, digests, pages, size)
            return
        start, end = span
        self.send(b"F", packed({"p": path, "r": start}))
        digests, pages, size = self._changed_pages(full, info, old, start, end)
        self.send(b"E", packed({"p": path, "r": start}))
        self.parts[(path, start)] = (digests, pages, size)
        self.counts["parts"] += 1

    def _join_parts(self, path: str, full: str, info: os.stat_result, meta: dict[str, Any]) -> None:
        """The end of a file read in parts, once every part is applied: its digests, in order."""
        digests, pages, size = Digests(), Digests(), 0
        for start in sorted(start for known, start in self.parts if known == path):
            part_digests, part_pages, part_size = self.parts.pop((path, start))
            if part_digests and start > size:
                # An earlier part ended short (the file shrank, then grew, while read): the
                # gap's digests are unknown, and 0 matches nothing, so it is sent next round.
                digests.extend([0] * ((start - size) // BLOCK))
                pages.extend([0] * ((start - size) // PAGE))
            digests.extend(part_digests)
            pages.extend(part_pages)
            size = max(size, part_size)
        self.send(b"F", packed({"p": path}))
        self.send(b"E", packed({**meta, "z": size, "p": path}))
        self._done(path, full, info, meta, digests, pages, size)

    def _done(
        self, path: str, full: str, info: os.stat_result, meta: dict[str, Any], digests: array.array, pages: array.array, size: int
    ) -> None:
        self.counts["files_read"] += 1
        try:
            after = stat_key(os.lstat(full))
        except FileNotFoundError:
            after = None
        # Changed while it was read, or racily clean: read again next round, whatever its stat says then.
        racy = after != stat_key(info) or time.time_ns() - info.st_ctime_ns < RACY_NS
        self.table[path] = {**meta, "z": size, "d": digests, "q": pages, "s": stat_key(info), "racy": racy}
        if self.maps.get(path) is not None:
            self.table[path]["x"] = self.maps[path]

    def _extent_map(self, full: str) -> bytes | None:
        """The file's extent map, its time (the fsync before the search is most of it) counted."""
        started = time.monotonic()
        try:
            return btrfs_extents.extent_map(full)
        finally:
            self.counts["map_seconds"] += time.monotonic() - started

    def _mappable(self, info: os.stat_result, old: dict[str, Any] | None) -> bool:
        """Whether the file will be reread where its extents changed (then by one reader)."""
        return self.extents and info.st_size >= MAPPED_FROM and old is not None and "x" in old and bool(old.get("s"))

    def _changed_blocks(self, info: os.stat_result, old: dict[str, Any] | None, now: bytes | None) -> list[int] | None:
        """The blocks to read again of a file whose extent map was taken before it was last
        read, or None: read it all (no maps, or most of it changed)."""
        if now is None or old is None or not self._mappable(info, old):
            return None
        # The old last block (it may have grown) and any new ones are read whatever their extents.
        known = min(old["z"], info.st_size) // BLOCK
        total = -(-info.st_size // BLOCK)
        changed = set(range(known, total))
        for start, end in btrfs_extents.changed_spans(old["x"], now):
            changed.update(range(start // BLOCK, min(-(-end // BLOCK), known)))
        if len(changed) * 4 > total > DENSE_AFTER:
            return None  # one pass over a mapping costs less than that many small reads
        return sorted(changed)

    def _changed_pages(
        self, full: str, info: os.stat_result, old: dict[str, Any] | None, start: int, end: int, only: list[int] | None = None
    ) -> tuple[array.array, array.array, int]:
        """Send the pages of bytes [start, end) of a file that differ from what the destination
        holds; the block and page digests of that span and the end of what was read. With
        ``only``, just those blocks are read (the others hold what they held)."""
        old_digests, old_pages = (old or {}).get("d") or Digests(), (old or {}).get("q") or Digests()
        old_blocks, old_count = len(old_digests), len(old_pages)
        digests, pages = Digests(), Digests()
        size = start
        sending = Pages(self)
        seen = changed_blocks = 0

        def compare(offset: int, block: memoryview, copied: bool) -> None:
            """One block: its digests kept, its changed pages sent."""
            nonlocal seen, changed_blocks, size
            self.progress()
            index = offset // BLOCK
            size = offset + len(block)
            first = index * PAGES
            count = -(-len(block) // PAGE)
            known = old_pages[first : first + PAGES]
            comparable = index < old_blocks and min(old_count - first, PAGES) == count
            seen += 1
            if dense(seen, changed_blocks):
                if not copied:
                    block = memoryview(bytes(block))  # what is hashed is what is sent (below)
                fresh = page_digests(block)
                if comparable and fresh == known.tolist():
                    digests.append(old_digests[index])
                    pages.extend(known)
                    return
                digests.append(0)
            else:
                digest = _hash(block)
                if comparable and old_digests[index] == digest:
                    digests.append(digest)
                    pages.extend(known)
                    return
                if not copied:
                    # A copy, hashed again: the application may write the block between our
                    # hash of the mapping and the send, and what is kept and sent must be what
                    # the digests say (the destination checks; a block digest of the mapping
                    # with pages of the copy would hide a later return to the mapping's
                    # contents). A change after the copy shows in the file's stat: read again.
                    block = memoryview(bytes(block))
                    digest = _hash(block)
                digests.append(digest)
                fresh = page_digests(block)
            changed_blocks += 1
            pages.extend(fresh)
            changed = [
                number
                for number, page_digest in enumerate(fresh)
                if not (number < len(known) and known[number] == page_digest)
                # past the old end, zeros are left to the truncate: holes stay holes
                and not (first + number >= old_count and page_digest == zero_digest(len(block) - number * PAGE))
            ]
            # Changed pages next to each other go in one piece.
            while changed:
                adjacent = 1
                while adjacent < len(changed) and changed[adjacent] == changed[0] + adjacent:
                    adjacent += 1
                low, high = changed[0], changed[adjacent - 1] + 1
                sending.add(offset + low * PAGE, block[low * PAGE : high * PAGE], fresh[low:high])
                del changed[:adjacent]

        def unmapping() -> None:  # the pages waiting to be sent are views of the window
            sending.send()
            self.flush()

        try:
            if only is None:
                for offset, block in blocks(full, end, start, unmapping):
                    compare(offset, block, self.stable)
            else:
                size = self._read_blocks(full, start, end, only, old_digests, old_pages, digests, pages, compare)
        except FileNotFoundError:
            pass  # removed while read: sent as it was, deleted next round
        sending.send()
        self.counts["bytes_read"] += size - start if only is None else seen * BLOCK
        return digests, pages, size

    def _read_blocks(
        self,
        full: str,
        start: int,
        end: int,
        only: list[int],
        old_digests: array.array,
        old_pages: array.array,
        digests: array.array,
        pages: array.array,
        compare: Callable[[int, memoryview, bool], None],
    ) -> int:
        """Blocks ``only`` of bytes [start, end), each read on its own (a copy, so the same
        bytes are hashed and sent); the digests of the others are the old ones. Where reading ended."""
        fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            end = min(end, os.fstat(fd).st_size)
            at, last = start // BLOCK, -(-end // BLOCK)
            for index in only:
                if index < at or index >= last:
                    continue
                digests.extend(old_digests[at:index])
                pages.extend(old_pages[at * PAGES : index * PAGES])
                block = os.pread(fd, min(BLOCK, end - index * BLOCK), index * BLOCK)
                if not block:
                    return index * BLOCK  # shrunk since its stat: the rest is gone
                compare(index * BLOCK, memoryview(block), True)
                at = index + 1
                if len(block) < BLOCK:
                    return index * BLOCK + len(block)
            digests.extend(old_digests[at:last])
            pages.extend(old_pages[at * PAGES : last * PAGES])
            return end
        except OSError as exc:
            raise CopyError(f"reading {full}: {exc}") from exc
        finally:
            os.close(fd)

    def survey(self) -> int:
        """Bytes the next round will read again: of the files changed since this one read
        them, where their extents changed (on btrfs: the map is taken, and thrown away), or all."""
        dirty = 0
        for path, info in walk(self.root):
            self.progress()
            old = self.table.get(path)
            if stat.S_ISREG(info.st_mode) and (old is None or "link" not in old):
                if old is None or old.get("s") != stat_key(info) or old.get("racy"):
                    mapped = None
                    if self._mappable(info, old):
                        mapped = self._changed_blocks(info, old, btrfs_extents.extent_map(os.path.join(self.root, path)))
                    dirty += info.st_size if mapped is None else len(mapped) * BLOCK
        return dirty

    def changed_since_last_round(self) -> str | None:
        """What differs on the source from the table (nothing may, once the application is stopped)."""
        seen = set()
        for path, info in walk(self.root):
            self.progress()
            seen.add(path)
            known = self.table.get(path)
            if known is None:
                return f"{path} appeared"
            if known["k"] != kind_of(info.st_mode) or (known["k"] == "f" and "link" not in known and known.get("s") != stat_key(info)):
                return f"{path} changed"
        gone = set(self.table) - seen
        return f"{min(gone)} disappeared" if gone else None


# The state is pickled: it is written and read by this program only, inside the source
# helper, and phase 2 writes it while the application is stopped (8 bytes per page of the
# volume: 4 MB at 4 GB, 60 ms as compressed JSON, a few as a pickle).
def load_state(path: str) -> dict[str, dict[str, Any]] | None:
    try:
        with open(path, "rb") as file:
            return pickle.load(file)
    except FileNotFoundError:
        return None


def save_state(path: str, table: dict[str, dict[str, Any]]) -> None:
    with open(path + ".new", "wb") as file:
        pickle.dump(table, file, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(path + ".new", path)


# What the verification needs of an entry, saved apart after each round: the whole state (its
# digests) took 10 ms to load for 4 GB in 1,030 files, this 1 ms.
VERIFIED = ("k", "s", "link", "e")


def verified(state: str) -> str:
    return state + ".verify"


def connect(to: str, stall: float) -> Wire:
    host, _, port = to.rpartition(":")
    try:
        # A connect to a node behind a cut link would wait for TCP's own timeout (over two minutes).
        conn = socket.create_connection((host.strip("[]"), int(port)), timeout=stall)
        watch_liveness(conn, stall)
        conn.sendall(os.environ["FLOCKER_SECRET"].encode())
        wire = Wire(conn)
        kind, body = wire.read()
        conn.settimeout(max(TIMEOUT, stall))
    except OSError as exc:
        error = Stalled if stalled(exc) else CopyError
        raise error(f"cannot reach the destination's helper at {to}: {exc}") from exc
    if kind != b"H" or body.decode() != ALGORITHM:
        raise CopyError(f"the destination hashes with {body.decode(errors='replace')}, this side with {ALGORITHM}")
    return wire


def wait_for_go() -> None:
    """Armed: connected (and the state loaded); the work starts at the first line on stdin."""
    print("flocker-delta armed", flush=True)
    if not sys.stdin.readline():
        raise CopyError("disarmed before it was fired")


def streamed_after(path: str | None) -> int | None:
    try:
        with open(path or "", encoding="ascii") as file:
            return int(file.read().strip())
    except (OSError, ValueError):
        return None


def run_send(args: argparse.Namespace) -> tuple[dict[str, Any], Callable[[], None] | None]:
    """A round's result, and what is left to do once it is said (phase 2 saves its state then:
    only the verification, which loads a state of its own, follows it; 9 ms at 4 GB)."""
    table = load_state(args.state)
    wire = connect(args.to, args.stall)
    # The other readers' connections too, before the work starts (armed, before the application stops).
    spares = [connect(args.to, args.stall) for _ in range(readers() - 1)]
    try:
        if args.armed:
            wait_for_go()
        started = time.monotonic()
        streamed = streamed_after(args.streamed) if table is None else None
        extents = btrfs_extents.available(args.root)
        source = Source(args.root, wire, table or {}, streamed, stable=args.final, stall=args.stall, total=args.total, extents=extents)
        source.spares = spares
        if table is None:
            # A copy this program did not write (the first stream, an earlier move's): what
            # the destination holds, hashed there. Its stats are of its own disk, not ours.
            source.table = {path: {**entry, "s": None} for path, entry in source.ask(b"T", timeout=10 * TIMEOUT).items()}
        source.round()
        # Saved while the destination applies the end of the round (on a failure it is removed below),
        # with the verification's digest of each entry: made once per entry (14 ms for 1,030
        # entries here), in phase 1 for nearly all, instead of by the verification after phase 2.
        for entry in source.table.values():
            entry_digest(entry)
        save_state(
            verified(args.state), {path: {key: entry[key] for key in VERIFIED if key in entry} for path, entry in source.table.items()}
        )

        def keep() -> None:
            save_state(args.state, source.table)

        if not args.final:
            keep()
        answer = source.answer()
        seconds = time.monotonic() - started
        source.counts["map_seconds"] = round(source.counts["map_seconds"], 3)
        surveyed = time.monotonic()
        dirty = None if args.final else source.survey()
        timing = {"seconds": round(seconds, 3), "survey_seconds": round(time.monotonic() - surveyed, 3)}
        return {**source.counts, **answer, **timing, "dirty_bytes": dirty, "extents": extents}, keep if args.final else None
    except BaseException:
        # The destination may hold part of this round now: the next one asks it what it holds.
        for state in (args.state, verified(args.state)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(state)
        raise
    finally:
        for connection in (wire, *spares):
            connection.close()


def run_verify(args: argparse.Namespace) -> dict[str, Any]:
    wire = connect(args.to, args.stall)
    try:
        if args.armed:
            wait_for_go()
        table = load_state(verified(args.state))  # after the go: phase 2 has written it meanwhile
        if table is None:
            raise CopyError("nothing was copied by this move yet")
        source = Source(args.root, wire, table, stall=args.stall)
        changed = source.changed_since_last_round()
        if changed:
            raise CopyError(f"the source changed after the last round: {changed}")
        return source.ask(b"V", packed(summary(table)), timeout=10 * TIMEOUT)
    finally:
        wire.conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="delta_copy")
    parser.add_argument("role", choices=("receive", "send", "verify"))
    parser.add_argument("--root", required=True)
    parser.add_argument("--port", type=int)
    parser.add_argument("--to")
    parser.add_argument("--state")
    parser.add_argument("--total", type=int)
    parser.add_argument("--streamed", help="a file with the time (ns) the first copy's tar stream began")
    parser.add_argument("--armed", action="store_true")
    parser.add_argument("--final", action="store_true")
    parser.add_argument("--stall", type=float, default=STALL, help="seconds the destination may leave a connect or a send unanswered")
    args = parser.parse_args(argv)
    try:
        if args.role == "receive":
            serve(args.root, args.port)
            return 0
        result, after = run_send(args) if args.role == "send" else (run_verify(args), None)
    except (CopyError, OSError) as exc:
        print(f"{RESULT} {json.dumps({'error': str(exc), 'stalled': stalled(exc)})}", flush=True)
        return 1
    print(f"{RESULT} {json.dumps(result)}", flush=True)
    if after is not None:
        try:
            after()
        except OSError:  # a round after this one, if any, asks the destination what it holds
            with contextlib.suppress(FileNotFoundError):
                os.unlink(args.state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
