"""The router's route files, one per external port, written by the provider (route_writer.py):

    <routes-dir>/<port>.json   {"target": "ADDRESS:PORT" | null, "hold_seconds": 30}

What the router does with them is in router.py.
"""

from __future__ import annotations

import json
import re

DEFAULT_HOLD_SECONDS = 30.0

ROUTE_FILE = re.compile(r"^([0-9]{1,5})\.json$")


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
