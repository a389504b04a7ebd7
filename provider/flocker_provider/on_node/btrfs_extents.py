"""Which bytes of a file changed between two looks at it, from btrfs's own records: a copy
round's way to find the pages a database rewrote without reading the whole file.

btrfs never overwrites data in place (unless a file is NOCOW): a write puts the new bytes in
a new extent, and the file's extent items, read with the TREE_SEARCH ioctl, say which
extent holds each byte. A byte whose item names the same extent (disk address, offset in
it, and the transaction that wrote it, so that an address freed and reused is not taken
for the old one) holds what it held. An extent map is the file's items as the ioctl gave
them; ``changed_spans`` compares two. Measured here, a 1 GiB file with 20,000 random 8 KiB
pages rewritten (34,000 items): 31 ms to search, against 0.25 s to hash the file.

The search needs CAP_SYS_ADMIN; without it, on another file system, for a NOCOW file or one
with an inline extent (its bytes live in the item and change in place), there is no map and
the round reads the file whole, as everywhere else.

Standard library only: run in the move's helpers with the image's python3.
"""

from __future__ import annotations

import bisect
import errno
import fcntl
import operator
import os
import struct
from collections import defaultdict

TREE_SEARCH_V2 = 0xC0709411  # _IOWR(0x94, 17, struct btrfs_ioctl_search_args_v2)
GETFLAGS = 0x80086601  # FS_IOC_GETFLAGS
NOCOW = 0x00800000  # FS_NOCOW_FL
EXTENT_DATA = 108
REGULAR, PREALLOC = 1, 2
# btrfs_ioctl_search_key (tree, objectid, offset and transid ranges, types, item count),
# then the v2 buffer's size.
KEY = struct.Struct("=7Q4I4QQ")
# What the search returns for each item: btrfs_ioctl_search_header (transid of the leaf,
# objectid, offset, type, length) and a btrfs_file_extent_item of a regular or preallocated
# extent (generation, ram bytes, compression, encryption, other encoding, type, disk
# address, disk bytes, offset in the extent, bytes).
ITEM = struct.Struct("<3Q2I2QBBHB4Q")
ITEM_LENGTH = ITEM.size - 32
BUFFER = 4 << 20
# An item as compared: (file offset, bytes, disk address, disk bytes, offset in the extent,
# generation, type, compression). The leaf's transid is left out: it moves when a neighbour does.
_FIELDS = operator.itemgetter(2, 14, 11, 12, 13, 5, 10, 7)


def available(root: str) -> bool:
    """Whether extent maps can be taken of files under ``root`` (btrfs, and the search allowed)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        _search(fd, os.fstat(fd).st_ino, 0, 1)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def extent_map(path: str) -> bytes | None:
    """The file's extent items as the search gave them, its dirty pages written out first
    (they have no extent yet); None where a map would not tell every change."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        flags = bytearray(8)
        fcntl.ioctl(fd, GETFLAGS, flags)
        if int.from_bytes(flags[:4], "little") & NOCOW:
            return None
        os.fsync(fd)
        ino, found, start = os.fstat(fd).st_ino, [], 0
        while True:
            chunk, last = _search(fd, ino, start, BUFFER // ITEM.size)
            if not chunk:
                break
            found.append(chunk)
            if last is None:
                return None  # an inline extent, or an item of a shape not known here
            start = last + 1
        return b"".join(found)
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP):
            return None
        raise
    finally:
        os.close(fd)


def _search(fd: int, ino: int, start: int, count: int) -> tuple[bytes, int | None]:
    """Up to ``count`` extent items of inode ``ino`` from file offset ``start``, and the offset
    of the last (None if one is not a regular or preallocated extent)."""
    buffer = bytearray(KEY.size + BUFFER)
    everything = (1 << 64) - 1
    KEY.pack_into(buffer, 0, 0, ino, ino, start, everything, 0, everything, EXTENT_DATA, EXTENT_DATA, count, 0, 0, 0, 0, 0, BUFFER)
    fcntl.ioctl(fd, TREE_SEARCH_V2, buffer)
    returned = struct.unpack_from("=I", buffer, 64)[0]  # nr_items, set by the kernel
    data = bytes(memoryview(buffer)[KEY.size : KEY.size + returned * ITEM.size])
    if not returned:
        return b"", None
    items = list(ITEM.iter_unpack(data)) if len(data) == returned * ITEM.size else []
    if len(items) != returned or any(item[4] != ITEM_LENGTH or item[10] not in (REGULAR, PREALLOC) for item in items):
        return data, None
    return data, items[-1][2]


def _items(extent_map: bytes) -> set[bytes]:
    """The map's items as compared: without the leaf's transid, which moves when a neighbour
    does. Slices, not unpacked tuples: 6 ms for 40,000 items here, against 27."""
    return {extent_map[at + 8 : at + ITEM.size] for at in range(0, len(extent_map), ITEM.size)}


def changed_spans(before: bytes, after: bytes) -> list[tuple[int, int]]:
    """The byte ranges [start, end) of the file whose extent differs between the two maps,
    merged and in order. Items found in both maps are unchanged; of the others (an extent
    split by a write in its middle leaves two shorter items of the same extent), only the
    bytes another item of the same extent in the other map does not cover changed."""
    old, new = _items(before), _items(after)
    gone, came = [_FIELDS(ITEM.unpack(bytes(8) + raw)) for raw in old - new], [_FIELDS(ITEM.unpack(bytes(8) + raw)) for raw in new - old]
    spans = _uncovered(gone, came) + _uncovered(came, gone)
    spans.sort()
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _extent(item: tuple[int, ...]) -> tuple[int, ...]:
    """What a byte of the item is: an offset in one extent, written by one transaction."""
    offset, _, address, disk_bytes, in_extent, generation, kind, compression = item
    return (address, disk_bytes, offset - in_extent, generation, kind, compression)


def _uncovered(items: list[tuple[int, ...]], others: list[tuple[int, ...]]) -> list[tuple[int, int]]:
    """The ranges of ``items`` that no item of ``others`` maps to the same bytes of the same
    extent. Items of one file do not overlap, so neither do those of one extent."""
    covering: dict[tuple[int, ...], list[tuple[int, int]]] = defaultdict(list)
    for other in others:
        covering[_extent(other)].append((other[0], other[0] + other[1]))
    for ranges in covering.values():
        ranges.sort()
    spans = []
    for item in items:
        start, end = item[0], item[0] + item[1]
        ranges = covering.get(_extent(item), [])
        at = max(bisect.bisect_right(ranges, (start, end)) - 1, 0)
        while start < end and at < len(ranges):
            low, high = ranges[at]
            at += 1
            if high <= start:
                continue
            if low >= end:
                break
            if low > start:
                spans.append((start, low))
            start = max(start, high)
        if start < end:
            spans.append((start, end))
    return spans
