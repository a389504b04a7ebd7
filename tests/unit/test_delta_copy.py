"""The delta copy (on_node/delta_copy.py) between two real directories on this machine: a
receiver in a thread, the sender and the verification run as the helpers run them. Every test
runs twice: on this machine's disk, where a changed file is hashed whole, and on a btrfs of
its own, where it is reread only where its extents changed (on_node/btrfs_extents.py)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import shutil
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flocker_provider.on_node import btrfs_extents, delta_copy
from flocker_provider.on_node.delta_copy import BLOCK, PAGE, RESULT, CopyError, Destination

SECRET = "s3cret-of-this-move"


@pytest.fixture(scope="session")
def btrfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A btrfs of its own, on a sparse loop image (as the local cluster's volumes are)."""
    if os.geteuid() != 0 or shutil.which("mkfs.btrfs") is None:
        if os.environ.get("CI"):
            pytest.fail("the btrfs variants need root and mkfs.btrfs (make install)")
        pytest.skip("needs root and mkfs.btrfs")
    base = tmp_path_factory.mktemp("btrfs")
    image, mount = base / "image", base / "mount"
    mount.mkdir()
    with image.open("wb") as file:
        file.truncate(1 << 30)
    subprocess.run(["mkfs.btrfs", "-q", str(image)], check=True, capture_output=True)
    subprocess.run(["mount", "-o", "loop", str(image), str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


@pytest.fixture(params=["disk", "btrfs"])
def pair(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, Path, Any]]:
    """A source and a destination directory, a receiver serving the latter, and a function
    that runs one role (``run.mapped``: whether rounds reread only changed extents)."""
    base = tmp_path if request.param == "disk" else request.getfixturevalue("btrfs") / tmp_path.name
    source, destination = base / "source", base / "destination"
    source.mkdir(parents=True)
    destination.mkdir()
    monkeypatch.setenv("FLOCKER_SECRET", SECRET)
    monkeypatch.setenv("FLOCKER_ALLOWED", "127.0.0.1")
    # Files written just before a round are read again by the next one (racily clean), as
    # they should be; the tests wait that long, not a second.
    monkeypatch.setattr(delta_copy, "RACY_NS", 50_000_000)
    # The tests' files are small: on btrfs they are mapped from two blocks on, not sixteen.
    monkeypatch.setattr(delta_copy, "MAPPED_FROM", 2 * BLOCK)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    threading.Thread(target=delta_copy.serve, args=(str(destination), port), daemon=True).start()
    state = tmp_path / "state"

    def run(role: str, *extra: str) -> dict[str, Any]:
        out = io.StringIO()
        time.sleep(0.06)
        with contextlib.redirect_stdout(out):
            for _ in range(50):  # the receiver may still be binding
                code = delta_copy.main([role, "--root", str(source), "--to", f"127.0.0.1:{port}", "--state", str(state), *extra])
                if "cannot reach" not in out.getvalue():
                    break
                out.truncate(0)
                threading.Event().wait(0.05)
        result = json.loads(out.getvalue().rsplit(RESULT, 1)[1])
        assert ("error" in result) == (code != 0), out.getvalue()
        return result

    run.mapped = btrfs_extents.available(str(source))  # type: ignore[attr-defined]
    assert run.mapped == (request.param == "btrfs")  # type: ignore[attr-defined]
    yield source, destination, run
    if request.param == "btrfs":
        shutil.rmtree(base)


def tree(root: Path) -> dict[str, tuple]:
    """Everything the copy must make identical, of every entry."""
    found: dict[str, tuple] = {}
    first: dict[int, str] = {}
    for path in sorted([root, *root.rglob("*")]):
        info = path.lstat()
        name = str(path.relative_to(root))
        common = (stat.S_IFMT(info.st_mode), stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid)
        if stat.S_ISREG(info.st_mode):
            link = first.setdefault(info.st_ino, name) if info.st_nlink > 1 else name
            found[name] = (*common, info.st_size, info.st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest(), link)
        elif stat.S_ISLNK(info.st_mode):
            found[name] = (*common, os.readlink(path))
        else:
            found[name] = common
    return found


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def rewrite_pages(path: Path, pages: list[int], page: int = 8192) -> None:
    with path.open("r+b") as file:
        for number in pages:
            file.seek(number * page)
            file.write(os.urandom(page))


def test_a_first_round_copies_a_tree_exactly_and_verifies(pair) -> None:
    source, destination, run = pair
    write(source / "db" / "base" / "16384", os.urandom(3 * BLOCK + 100))
    write(source / "small", b"x")
    (source / "empty").touch()
    (source / "link").symlink_to("db/base/16384")
    os.link(source / "small", source / "db" / "hard")
    os.mkfifo(source / "fifo")
    os.chown(source / "small", 70, 71)
    os.chmod(source / "db", 0o700)
    first = run("send")
    assert first["files_read"] == 3  # 16384, empty, small: the hard link is made, not sent
    assert tree(destination) == tree(source)
    assert run("verify") == {"equal": True, "differences": [], "entries": 9}


def test_random_page_writes_send_only_their_blocks_and_reread_only_their_file(pair) -> None:
    source, destination, run = pair
    write(source / "big", os.urandom(256 * BLOCK))
    for i in range(50):
        write(source / "many" / str(i), os.urandom(100))
    run("send")
    rewrite_pages(source / "big", random.Random(7).sample(range(256 * BLOCK // 8192), 20))
    delta = run("send")
    # On btrfs only the blocks whose extents changed are read again.
    assert delta["files_read"] == 1 and delta["bytes_read"] == (20 * BLOCK if run.mapped else 256 * BLOCK), delta
    assert delta["extents"] == run.mapped  # said, for the host's records
    # Only the rewritten pages travel, not the 64 KiB blocks around them.
    assert delta["pages_sent"] == 20 and delta["bytes_sent"] == 20 * PAGE
    assert tree(destination) == tree(source)
    nothing = run("send")
    assert (nothing["files_read"], nothing["pages_sent"]) == (0, 0)
    assert run("verify")["equal"]


def test_the_final_round_sends_long_runs_in_messages_no_bigger_than_the_buffer(pair, monkeypatch: pytest.MonkeyPatch) -> None:
    """The final round (the application stopped) reads the mapping without copying it first;
    a run of changed pages is cut where the wire's buffer is full, so memory stays bounded."""
    source, destination, run = pair
    monkeypatch.setattr(delta_copy.Wire, "FLUSH_AT", 4 * BLOCK)
    sizes: list[int] = []
    write_message = Destination._write

    def recorded(self: Destination, payload: bytes, session: Any) -> None:
        sizes.append(len(payload))
        write_message(self, payload, session)

    monkeypatch.setattr(Destination, "_write", recorded)
    write(source / "grows", os.urandom(BLOCK))
    run("send")
    with (source / "grows").open("ab") as file:
        file.write(os.urandom(40 * BLOCK + 123))
    rewrite_pages(source / "grows", [3])
    delta = run("send", "--final")
    assert delta["pages_sent"] == 1 + 40 * BLOCK // PAGE + 1
    assert 10 <= len(sizes) and max(sizes) <= 4 * BLOCK + PAGE + 1024
    assert tree(destination) == tree(source)
    assert run("verify")["equal"]


def test_appends_truncation_holes_and_kind_changes_stay_exact(pair) -> None:
    source, destination, run = pair
    write(source / "log", os.urandom(BLOCK + 10))
    write(source / "shrinks", os.urandom(5 * BLOCK))
    write(source / "becomes_dir", b"file first")
    (source / "becomes_file").mkdir()
    write(source / "becomes_file" / "inner", b"inner")
    write(source / "gone" / "deep" / "file", b"bye")
    write(source / "relinked", b"one")
    os.link(source / "relinked", source / "relinked2")
    (source / "retarget").symlink_to("log")
    run("send")
    with (source / "log").open("ab") as log:
        log.write(os.urandom(3 * BLOCK))
    os.truncate(source / "shrinks", BLOCK // 2)
    with (source / "sparse").open("wb") as sparse:  # a hole of 64 blocks, then data
        sparse.seek(64 * BLOCK)
        sparse.write(b"end")
    (source / "becomes_dir").unlink()
    write(source / "becomes_dir" / "now", b"a dir")
    for inner in (source / "becomes_file").iterdir():
        inner.unlink()
    (source / "becomes_file").rmdir()
    write(source / "becomes_file", b"a file")
    for path in sorted((source / "gone").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (source / "gone").rmdir()
    (source / "relinked2").unlink()
    write(source / "relinked2", b"its own now")
    (source / "retarget").unlink()
    (source / "retarget").symlink_to("shrinks")
    os.chmod(source / "log", 0o600)
    delta = run("send")
    assert delta.get("deleted", 0) >= 4, delta
    assert tree(destination) == tree(source)
    assert (destination / "sparse").stat().st_blocks * 512 < 4 * BLOCK  # the hole was not written
    assert (destination / "relinked").read_bytes() == b"one"  # never written through the old link
    assert run("verify")["equal"]


def test_a_corruption_behind_the_copys_back_is_caught_by_the_verification(pair) -> None:
    source, destination, run = pair
    write(source / "data", os.urandom(8 * BLOCK))
    write(source / "other", b"fine")
    run("send")
    assert run("verify")["equal"]
    rewrite_pages(destination / "data", [3])
    result = run("verify")
    assert not result["equal"] and result["differences"] == ["different or only on the source: data"]


def test_a_source_that_changed_after_the_last_round_fails_the_verification(pair) -> None:
    source, _, run = pair
    write(source / "data", b"before")
    run("send")
    write(source / "data", b"after!")
    assert "the source changed after the last round: data changed" in run("verify")["error"]


def test_a_copy_it_did_not_write_is_asked_for_its_digests_and_only_the_difference_is_sent(pair) -> None:
    source, destination, run = pair
    data = bytearray(os.urandom(40 * BLOCK))
    write(source / "big", bytes(data))
    data[5 * BLOCK : 5 * BLOCK + 10] = b"0123456789"
    write(destination / "big", bytes(data))  # a retired copy from an earlier move, say
    write(destination / "stale", b"only there")
    first = run("send")
    assert first["pages_sent"] == 1 and first["deleted"] == 1
    assert tree(destination) == tree(source)


def test_after_the_stream_only_files_changed_since_it_began_are_read(pair, tmp_path: Path) -> None:
    source, destination, run = pair
    for i in range(5):
        write(source / "segments" / str(i), os.urandom(4 * BLOCK))
    time.sleep(0.1)
    (tmp_path / "started").write_text(str(time.time_ns()))
    shutil.copytree(source, destination, dirs_exist_ok=True, symlinks=True)  # what the stream did
    rewrite_pages(source / "segments" / "3", [2])
    first = run("send", "--streamed", str(tmp_path / "started"))
    assert (first["files_taken_from_stream"], first["files_read"], first["pages_sent"]) == (4, 1, 1)
    assert tree(destination) == tree(source)
    assert run("verify")["equal"]


def test_a_renamed_file_is_renamed_on_the_destination_not_sent_again(pair) -> None:
    source, destination, run = pair
    write(source / "pg_wal" / "000000010000000000000001", os.urandom(16 * BLOCK))
    write(source / "pg_wal" / "000000010000000000000002", os.urandom(16 * BLOCK))
    run("send")
    # A checkpoint recycles the old segment under a future name; the new one is written at once.
    os.rename(source / "pg_wal" / "000000010000000000000001", source / "pg_wal" / "000000010000000000000009")
    rewrite_pages(source / "pg_wal" / "000000010000000000000009", [0])
    write(source / "pg_wal" / "000000010000000000000001", b"not the same file any more")
    (source / "archive").mkdir()
    os.rename(source / "pg_wal" / "000000010000000000000002", source / "archive" / "000000010000000000000002")
    delta = run("send")
    assert delta["renamed"] == 2 and delta["pages_sent"] == 2, delta  # the rewritten page, and the new small file
    assert tree(destination) == tree(source)
    assert run("verify")["equal"]


def test_much_to_read_is_read_by_two_processes_with_the_same_result(pair, monkeypatch: pytest.MonkeyPatch) -> None:
    source, destination, run = pair
    monkeypatch.setattr(delta_copy, "PARALLEL_BYTES", 1)
    for i in range(6):
        write(source / "base" / str(i), os.urandom((i + 1) * BLOCK))
    write(source / "base" / "first", b"linked")
    os.link(source / "base" / "first", source / "base" / "second")  # made once both readers are done
    first = run("send")
    assert first["files_read"] == 7
    for i in range(6):
        rewrite_pages(source / "base" / str(i), [i])
    write(source / "new" / "dir" / "file", os.urandom(3 * PAGE))  # its directory is there before a reader writes it
    delta = run("send")
    assert (delta["readers"], delta["files_read"], delta["pages_sent"]) == (2, 7, 9), delta
    assert tree(destination) == tree(source)
    assert run("verify")["equal"]


def test_a_big_file_is_read_in_parts_by_both_readers_and_stays_exact(pair, monkeypatch: pytest.MonkeyPatch) -> None:
    """One file larger than the threshold is split between the readers (a database of one big
    table): changed pages in every part, an extension, holes past the old end and a
    truncation come out exact, and only the changed pages are sent."""
    source, destination, run = pair
    monkeypatch.setattr(delta_copy, "PARALLEL_BYTES", 4 * BLOCK)
    monkeypatch.setattr(delta_copy, "PART_BYTES", 4 * BLOCK)
    big = source / "base" / "16397"
    write(big, os.urandom(10 * BLOCK + 3 * PAGE))
    write(source / "small", b"small")
    assert run("send")["files_read"] == 2
    rewrite_pages(big, [0, 9, 41, 71, 82])  # in the first part, in the second, in the third, the last page
    delta = run("send")
    # On btrfs the file is mapped, and read by one reader: where its extents changed.
    parts = 0 if run.mapped else 3
    assert (delta["readers"], delta["parts"], delta["files_read"], delta["pages_sent"]) == (2, parts, 1, 5), delta
    assert delta["files_mapped"] == int(run.mapped)
    assert tree(destination) == tree(source)
    with big.open("r+b") as file:  # extended: a hole, then pages of data
        file.truncate(14 * BLOCK)
        file.seek(13 * BLOCK)
        file.write(os.urandom(2 * PAGE))
    delta = run("send")
    assert delta["pages_sent"] == 2, delta
    assert tree(destination) == tree(source)
    with big.open("r+b") as file:
        file.truncate(6 * BLOCK + 100)
    rewrite_pages(big, [2])
    final = run("send", "--final")
    assert "error" not in final, final
    assert tree(destination) == tree(source)
    assert run("verify")["equal"]


def test_a_part_s_pages_that_did_not_land_as_sent_fail_the_round_and_the_next_repairs_it(pair, monkeypatch: pytest.MonkeyPatch) -> None:
    """A part of a big file is read back by the destination at the part's own end: a page
    written wrong there fails the round, and the next round (which asks what the destination
    holds) sends it again."""
    source, destination, run = pair
    monkeypatch.setattr(delta_copy, "PARALLEL_BYTES", 4 * BLOCK)
    monkeypatch.setattr(delta_copy, "PART_BYTES", 4 * BLOCK)
    big = source / "base" / "16397"
    write(big, os.urandom(12 * BLOCK))
    run("send")
    rewrite_pages(big, [1, 90])  # in the first part and in the last
    pwrite = os.pwrite

    def lands_wrong(fd: int, data: Any, offset: int) -> int:
        return pwrite(fd, bytes(len(data)) if offset == 90 * PAGE else data, offset)

    monkeypatch.setattr(delta_copy.os, "pwrite", lands_wrong)
    assert f"the page at {90 * PAGE} differs from the source's after writing it" in run("send", "--final")["error"]
    # What the verification would compare with went with the state: not a round's before.
    assert run("verify")["error"] == "nothing was copied by this move yet"
    monkeypatch.setattr(delta_copy.os, "pwrite", pwrite)
    again = run("send", "--final")
    assert again["pages_sent"] >= 1 and "error" not in again, again
    assert tree(destination) == tree(source)
    assert run("verify")["equal"]


def test_a_file_where_most_blocks_changed_is_hashed_by_page_and_stays_exact(pair) -> None:
    """A checkpoint writes pages all over a table: past the first blocks, pages are hashed
    first and a changed block's digest is left unknown. Only the changed pages are sent, in
    the final round and the rounds before it, and the rounds after still find what changed."""
    source, destination, run = pair
    table = source / "base" / "16384"
    write(table, os.urandom(64 * BLOCK + 3 * PAGE))
    run("send")
    rng = random.Random(5)
    dirty = [block * 8 + rng.randrange(8) for block in rng.sample(range(64), 48)] + [64 * 8 + 2]
    rewrite_pages(table, dirty)
    delta = run("send")
    assert delta["pages_sent"] == len(dirty), delta
    assert tree(destination) == tree(source)
    again = sorted(set(rng.sample(dirty, 10) + [3, 8 * 20]))  # pages of blocks whose digests are unknown now, and others
    rewrite_pages(table, again)
    delta = run("send", "--final")
    assert delta["pages_sent"] == len(again), delta
    assert tree(destination) == tree(source)
    assert run("send")["pages_sent"] == 0
    assert run("verify")["equal"]


def test_rounds_under_a_writer_never_send_a_page_other_than_the_one_they_hashed(pair) -> None:
    """Phase 1 reads files the application is writing: what a round hashes and what it sends
    must be the same bytes, or the destination's check of what it wrote fails the move."""
    source, destination, run = pair
    write(source / "wal", os.urandom(512 * PAGE))
    run("send")
    writing = threading.Event()
    writing.set()

    def writer() -> None:
        rng = random.Random(3)
        with (source / "wal").open("r+b") as file:
            while writing.is_set():
                file.seek(rng.randrange(512) * PAGE)
                file.write(os.urandom(PAGE))
                file.flush()

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        rounds = [run("send") for _ in range(6)]
    finally:
        writing.clear()
        thread.join()
    assert [r.get("error") for r in rounds] == [None] * 6
    run("send")  # the last writes, the application stopped
    assert tree(destination) == tree(source)
    assert run("verify")["equal"]


def test_the_receiver_refuses_paths_outside_the_volume(tmp_path: Path) -> None:
    (tmp_path / "volume").mkdir()
    (tmp_path / "volume" / "escape").symlink_to(tmp_path)
    destination = Destination(str(tmp_path / "volume"))
    for path in ("../outside", "/etc/passwd", "a/../../b", "escape/file"):
        with pytest.raises(CopyError, match="refused path"):
            destination.full(path)


def test_a_wrong_secret_is_refused(pair, monkeypatch: pytest.MonkeyPatch) -> None:
    source, _, run = pair
    write(source / "data", b"x")
    monkeypatch.setenv("FLOCKER_SECRET", "x" * len(SECRET))
    assert "error" in run("send")


def _send(source: Path, port: int, state: Path, *extra: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = delta_copy.main(["send", "--root", str(source), "--to", f"127.0.0.1:{port}", "--state", str(state), *extra])
    return code, out.getvalue()


def test_a_destination_that_never_answers_is_a_stall_within_the_stall_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Connected, but no word back (its helper stuck, the link cut after the connect): given up
    after --stall, not after the minute of the socket timeout, and said to be a stall."""
    monkeypatch.setenv("FLOCKER_SECRET", SECRET)
    with socket.create_server(("127.0.0.1", 0)) as silent:
        started = time.monotonic()
        code, output = _send(tmp_path, silent.getsockname()[1], tmp_path / "state", "--stall", "1")
    assert code == 1 and time.monotonic() - started < 5, output
    result = json.loads(output.rsplit(RESULT, 1)[1])
    assert result["stalled"] is True and "cannot reach the destination's helper" in result["error"]


def test_waiting_for_the_destination_s_answer_shows_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The destination hashing a copy it did not write takes as long as it takes: the source
    prints progress lines meanwhile, so the host's stall watch does not take it for a stall."""
    monkeypatch.setenv("FLOCKER_SECRET", SECRET)
    monkeypatch.setenv("FLOCKER_ALLOWED", "127.0.0.1")
    source, destination = tmp_path / "source", tmp_path / "destination"
    source.mkdir()
    destination.mkdir()
    write(source / "file", b"x" * 1000)
    scan = Destination.scan

    def slow_scan(self: Destination) -> dict:
        time.sleep(1.5)
        return scan(self)

    monkeypatch.setattr(Destination, "scan", slow_scan)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    threading.Thread(target=delta_copy.serve, args=(str(destination), port), daemon=True).start()
    for _ in range(100):  # until it listens (the connection is refused a session: no secret)
        with contextlib.suppress(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
            break
        time.sleep(0.05)
    code, output = _send(source, port, tmp_path / "state", "--stall", "1")
    assert code == 0, output
    assert output.count(delta_copy.PROGRESS) >= 3, output


def test_holes_punched_in_place_reach_the_destination(pair) -> None:
    """A hole punched into a file keeps its size: on btrfs its extents are gone (no item is
    written for it), which the map comparison must see as a change as well."""
    source, destination, run = pair
    data = source / "data"
    write(data, os.urandom(32 * BLOCK))
    run("send")
    run("send")  # the map the next round compares with is of a file read before
    subprocess.run(["fallocate", "--punch-hole", "--offset", str(5 * BLOCK + PAGE), "--length", str(3 * PAGE), str(data)], check=True)
    subprocess.run(["fallocate", "--punch-hole", "--offset", str(20 * BLOCK), "--length", str(4 * BLOCK), str(data)], check=True)
    delta = run("send", "--final")
    assert delta["files_mapped"] == int(run.mapped) and delta["pages_sent"] == 3 + 4 * 8, delta
    assert tree(destination) == tree(source)
    assert run("verify")["equal"]


def test_a_nocow_file_is_hashed_whole(pair) -> None:
    """A NOCOW file (chattr +C) is overwritten in place: its extents say nothing of what changed."""
    source, destination, run = pair
    data = source / "nocow"
    data.touch()
    subprocess.run(["chattr", "+C", str(data)], check=run.mapped)
    write(data, os.urandom(16 * BLOCK))
    run("send")
    run("send")
    rewrite_pages(data, [3, 77])
    delta = run("send")
    assert (delta["files_mapped"], delta["bytes_read"], delta["pages_sent"]) == (0, 16 * BLOCK, 2), delta
    assert tree(destination) == tree(source)
    assert run("verify")["equal"]


def test_many_rounds_of_random_changes_stay_exact(pair) -> None:
    """Rewrites (some of a page rewritten before, with a commit between), appends, truncations,
    extensions over holes and punched holes, a round after each batch: the copy is exact and
    verifies every time, whether changes are found by extents or by hashing."""
    source, destination, run = pair
    rng = random.Random(11)
    files = [source / "base" / str(i) for i in range(4)]
    for path in files:
        write(path, os.urandom(rng.randrange(1, 40) * BLOCK + rng.randrange(PAGE)))
    run("send")
    for _ in range(6):
        for path in files:
            size = path.stat().st_size
            action = rng.choice(["pages", "pages", "append", "truncate", "extend", "punch"])
            if action == "pages" and size >= PAGE:
                rewrite_pages(path, rng.sample(range(size // PAGE), min(5, size // PAGE)))
                os.sync()  # a commit between: a freed extent may be reused for the next write
                rewrite_pages(path, [rng.randrange(size // PAGE)])
            elif action == "append":
                with path.open("ab") as file:
                    file.write(os.urandom(rng.randrange(1, 3 * BLOCK)))
            elif action == "truncate":
                os.truncate(path, rng.randrange(size + 1))
            elif action == "extend":
                with path.open("r+b") as file:
                    file.seek(size + rng.randrange(2 * BLOCK))
                    file.write(os.urandom(rng.randrange(1, PAGE)))
            elif size > 2 * PAGE:
                offset = rng.randrange(size // PAGE - 1) * PAGE
                subprocess.run(["fallocate", "--punch-hole", "--offset", str(offset), "--length", str(2 * PAGE), str(path)], check=True)
        result = run("send")
        assert "error" not in result, result
        assert tree(destination) == tree(source)
        assert run("verify")["equal"]


def test_the_survey_counts_what_the_next_round_will_read(pair, tmp_path: Path) -> None:
    """The prediction of phase 2 rests on the survey: on btrfs a changed file counts for the
    blocks whose extents changed (a prediction of the whole file was 30-75 s for a 0.15 s
    phase 2 at 2 GB of PostgreSQL), elsewhere for all of it."""
    source, _, run = pair
    write(source / "table", os.urandom(64 * BLOCK))
    run("send")
    run("send")
    rewrite_pages(source / "table", [3, 200])
    table = delta_copy.load_state(str(tmp_path / "state"))
    assert table is not None
    surveyed = delta_copy.Source(str(source), None, table, extents=run.mapped).survey()  # type: ignore[arg-type]
    assert surveyed == (2 * BLOCK if run.mapped else 64 * BLOCK)
