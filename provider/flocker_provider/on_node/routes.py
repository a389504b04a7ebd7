"""The router's route files, one per external port, written by the provider (route_writer.py):

    <routes-dir>/<port>.json   {"target": "ADDRESS:PORT" | null, "hold_seconds": 30}

What the router does with them is in router.py.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

DEFAULT_HOLD_SECONDS = 30.0

ROUTE_FILE = re.compile(r"^([0-9]{1,5})\.json$")

# File timestamps are coarse (the kernel's tick, a few milliseconds): a change can get the
# mtime of the one before it. A directory counts as unchanged only once it was read this long
# after its mtime, so that no later change can share that mtime.
SETTLE_SECONDS = 1.0
# A file written in place (not replaced) changes only itself: the directory is read anyway this often.
RESCAN_SECONDS = 1.0


class DirectoryChanges:
    """Whether a file can have been added to, replaced in or removed from a directory since it
    was last read, from the directory's own stat: each of those changes the directory's mtime.

    The router polls its routes directory every 30 ms; reading it means a stat per route file,
    which with 200 routes kept an idle router at 1.8 % of a core (0.5 % when only looked at).
    The provider's writers replace route files with a rename and remove them (route_writer.py,
    router_lifecycle.py).
    """

    def __init__(self, path: Path, wall: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self._wall = wall
        self._monotonic = monotonic
        # (device, inode, mtime) at the last look, if settled; and at the last read.
        self._looked: tuple[int, int, int] | None = None
        self._read: tuple[int, int, int] | None = None
        self._read_again_at = 0.0

    def unchanged(self) -> bool:
        """True if nothing can have changed since the last ``read``. Raises OSError if the directory cannot be looked at."""
        now = self._wall()
        st = os.stat(self.path)
        settled = now - st.st_mtime_ns / 1e9 >= SETTLE_SECONDS
        self._looked = (st.st_dev, st.st_ino, st.st_mtime_ns) if settled else None
        return self._looked is not None and self._looked == self._read and self._monotonic() < self._read_again_at

    def read(self) -> None:
        """The directory was read, after the last ``unchanged``."""
        self._read = self._looked
        self._read_again_at = self._monotonic() + RESCAN_SECONDS


class RouteError(ValueError):
    pass


def parse_target(value: object) -> tuple[str, int] | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise RouteError(f"target must be 'ADDRESS:PORT' or null, got {value!r}")
    host, sep, port_text = value.strip().rpartition(":")
    # "[::1]:80" is how IPv6 addresses are written with a port.
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise RouteError(f"target must be 'ADDRESS:PORT' or null, got {value!r}")
    return host, int(port_text)


def parse_route(raw: bytes) -> tuple[tuple[str, int] | None, float]:
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise RouteError(f"not JSON: {error}") from None
    if not isinstance(document, dict):
        raise RouteError("expected a JSON object")
    if "target" not in document:
        raise RouteError("missing 'target'")
    target = parse_target(document["target"])
    hold = document.get("hold_seconds", DEFAULT_HOLD_SECONDS)
    if isinstance(hold, bool) or not isinstance(hold, int | float) or not 0 <= hold < 1e9:
        raise RouteError(f"hold_seconds must be a number >= 0, got {hold!r}")
    return target, float(hold)


def format_target(target: tuple[str, int] | None) -> str:
    if target is None:
        return "hold"
    host, port = target
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
