"""The Elasticsearch stand-in's store: what a restart (or a copy of its volume) finds."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

SERVER = Path(__file__).resolve().parents[2] / "images" / "elasticsearch" / "server.py"


@pytest.fixture(scope="module")
def standin() -> ModuleType:
    spec = importlib.util.spec_from_file_location("standin", SERVER)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_restart_finds_every_acknowledged_write_in_one_log_per_index(standin: ModuleType, tmp_path: Path) -> None:
    store = standin.Store(str(tmp_path))
    for i in range(50):
        store.put("acks", str(i), {"n": i})
    store.put("acks", "7", {"n": "seven"})
    store.delete("acks", "8")
    store.close()
    assert [p.name for p in (tmp_path / "indices" / "acks").iterdir()] == ["translog.jsonl"]
    again = standin.Store(str(tmp_path))
    assert len(again.indices["acks"]) == 49
    assert again.get("acks", "7") == {"_source": {"n": "seven"}, "_version": 2, "_seq_no": 7}
    assert again.get("acks", "8") is None
    assert again.put("acks", "new", {})["_seq_no"] == 50  # first-write order goes on


def test_a_write_cut_short_by_a_crash_is_dropped(standin: ModuleType, tmp_path: Path) -> None:
    store = standin.Store(str(tmp_path))
    store.put("acks", "1", {"n": 1})
    store.close()
    log = tmp_path / "indices" / "acks" / "translog.jsonl"
    with log.open("ab") as f:
        f.write(b'{"op": "put", "_id": "2", "_sou')  # never acknowledged
    again = standin.Store(str(tmp_path))
    assert list(again.indices["acks"]) == ["1"]
    again.put("acks", "3", {"n": 3})
    assert [json.loads(line)["_id"] for line in log.read_text().splitlines()] == ["1", "3"]


def test_a_volume_of_the_one_file_per_document_layout_is_taken_over(standin: ModuleType, tmp_path: Path) -> None:
    index = tmp_path / "indices" / "old"
    index.mkdir(parents=True)
    (index / "d-1.json").write_text(json.dumps({"_id": "1", "_source": {"n": 1}, "_version": 3, "_seq_no": 0}))
    (index / "d-2.json.123.tmp").write_text("{")
    store = standin.Store(str(tmp_path))
    assert store.get("old", "1") == {"_source": {"n": 1}, "_version": 3, "_seq_no": 0}
    assert [p.name for p in index.iterdir()] == ["translog.jsonl"]


def test_an_unreadable_line_is_skipped_and_the_rest_of_the_log_kept(standin: ModuleType, tmp_path: Path) -> None:
    """The log is read as one JSON array first (fast); a line that spoils it sends the
    replay back to reading line by line, which skips only that line."""
    store = standin.Store(str(tmp_path))
    for i in range(3):
        store.put("acks", str(i), {"n": i})
    store.close()
    log = tmp_path / "indices" / "acks" / "translog.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(lines[0] + b"not json\n" + b'{"op": "put", "_id": "x", "_source": {}}\n' + b"".join(lines[1:]))
    again = standin.Store(str(tmp_path))
    assert sorted(again.indices["acks"]) == ["0", "1", "2"]
    assert again.get("acks", "2") == {"_source": {"n": 2}, "_version": 1, "_seq_no": 2}
