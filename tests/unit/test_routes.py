"""Route files (on_node/routes.py): what the router takes from them, and what it refuses."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from flocker_provider.on_node.routes import (
    DEFAULT_HOLD_SECONDS,
    RESCAN_SECONDS,
    ROUTE_FILE,
    SETTLE_SECONDS,
    DirectoryChanges,
    RouteError,
    format_target,
    parse_route,
)


def test_a_route_names_its_target_and_hold() -> None:
    assert parse_route(b'{"target": "10.0.0.2:32768", "hold_seconds": 5}') == (("10.0.0.2", 32768), 5.0)
    assert parse_route(b'{"target": null}') == (None, DEFAULT_HOLD_SECONDS)
    assert parse_route(b'{"target": "[fd00::2]:80"}') == (("fd00::2", 80), DEFAULT_HOLD_SECONDS)


@pytest.mark.parametrize(
    "raw",
    [b"{", b"[]", b"{}", b'{"target": "10.0.0.2"}', b'{"target": "10.0.0.2:0"}', b'{"target": ":80"}', b'{"target": 80}'],
)
def test_a_malformed_route_is_refused(raw: bytes) -> None:
    with pytest.raises(RouteError):
        parse_route(raw)


@pytest.mark.parametrize("hold", ["-1", "true", '"5"', "1e9"])
def test_a_hold_must_be_a_number_of_seconds(hold: str) -> None:
    with pytest.raises(RouteError):
        parse_route(f'{{"target": null, "hold_seconds": {hold}}}'.encode())


def test_targets_are_written_as_they_are_read_and_only_port_files_are_routes() -> None:
    for text in ("10.0.0.2:80", "[fd00::2]:80"):
        assert format_target(parse_route(f'{{"target": "{text}"}}'.encode())[0]) == text
    assert format_target(None) == "hold"
    assert [name for name in ("9200.json", ".9200.json.tmp", "applied.json", "123456.json") if ROUTE_FILE.match(name)] == ["9200.json"]


def test_a_directory_is_read_again_when_a_file_is_replaced_or_removed_in_it(tmp_path: Path) -> None:
    monotonic = [0.0]
    changes = DirectoryChanges(tmp_path, monotonic=lambda: monotonic[0])

    def mtime_ago(seconds: float) -> None:
        stamp = time.time_ns() - int(seconds * 1e9)
        os.utime(tmp_path, ns=(stamp, stamp))

    mtime_ago(2 * SETTLE_SECONDS)
    assert not changes.unchanged()  # never read
    changes.read()
    assert changes.unchanged()

    (tmp_path / ".80.json.tmp").write_text("{}")
    os.replace(tmp_path / ".80.json.tmp", tmp_path / "80.json")
    assert not changes.unchanged()
    changes.read()
    # Read within the timestamp's granularity of the change: a later one could carry the same mtime.
    assert not changes.unchanged()
    changes.read()
    mtime_ago(2 * SETTLE_SECONDS)  # as if time had passed since the change
    assert not changes.unchanged()
    changes.read()
    assert changes.unchanged()

    (tmp_path / "80.json").unlink()
    assert not changes.unchanged()


def test_a_directory_is_read_again_anyway_for_files_written_in_place(tmp_path: Path) -> None:
    monotonic = [0.0]
    changes = DirectoryChanges(tmp_path, monotonic=lambda: monotonic[0])
    stamp = time.time_ns() - int(2 * SETTLE_SECONDS * 1e9)
    os.utime(tmp_path, ns=(stamp, stamp))
    changes.unchanged()
    changes.read()
    assert changes.unchanged()
    monotonic[0] += RESCAN_SECONDS
    assert not changes.unchanged()


def test_a_directory_that_is_gone_cannot_be_looked_at(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        DirectoryChanges(tmp_path / "missing").unchanged()
