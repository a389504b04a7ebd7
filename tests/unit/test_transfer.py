"""Parsing what rsync says, and the shape of the transfer commands."""

import os
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from flocker_provider import transfer
from flocker_provider.migration import stream_progress_line
from flocker_provider.transfer import (
    TransferStats,
    client_command,
    daemon_command,
    listing_differences,
    parse_progress,
    parse_stats,
    parse_stream_progress,
    parse_stream_total,
    stream_received,
    stream_receiver_command,
    stream_sender_command,
)

STATS = """
Number of files: 2,003 (reg: 2,001, dir: 2)
Number of regular files transferred: 1
Total file size: 1,090,519,040 bytes
Total transferred file size: 1,073,741,824 bytes
Literal data: 1,048,576 bytes
Matched data: 1,072,693,248 bytes
Total bytes sent: 1,215,345
Total bytes received: 65,583
"""


def test_stats() -> None:
    assert parse_stats(STATS) == TransferStats(files=2003, total_size=1_090_519_040, literal_bytes=1_048_576, bytes_sent=1_215_345)


def test_progress_takes_the_newest_carriage_return_line() -> None:
    output = "   1,000   1%  1.00MB/s    0:01:40\r  52,428,800  50%   95.37MB/s    0:00:01 (xfr#1, to-chk=0/3)"
    progress = parse_progress(output)
    assert (progress.bytes_copied, progress.percent, progress.rate, progress.remaining) == (
        52_428_800,
        50,
        "95.37MB/s",
        "0:00:01",
    )


def test_listing_differences_name_each_side() -> None:
    source = "d 755 0:0 .\nf 644 0:0 1 10 1700000000 ./big.db\nf 644 0:0 1 3 1700000000 ./new.log"
    destination = "d 755 0:0 .\nf 644 0:0 1 9 1700000000 ./big.db\nf 644 0:0 1 1 1690000000 ./old.log"
    assert listing_differences(source, destination) == [
        "only on the source: f 644 0:0 1 10 1700000000 ./big.db",
        "only on the source: f 644 0:0 1 3 1700000000 ./new.log",
        "only on the destination: f 644 0:0 1 9 1700000000 ./big.db",
        "only on the destination: f 644 0:0 1 1 1690000000 ./old.log",
    ]


def test_daemon_accepts_only_the_source_and_one_user() -> None:
    script = daemon_command("10.0.0.1")[2]
    assert "hosts allow = 10.0.0.1" in script
    assert "hosts deny = *" in script
    assert "auth users = flocker" in script


def test_client_sends_only_changed_blocks() -> None:
    command = client_command("10.0.0.2", 31337)
    assert {"--inplace", "--no-whole-file", "--delete"} <= set(command)
    assert command[-1] == "rsync://flocker@10.0.0.2:31337/volume/"


def test_stream_receiver_is_valid_python_that_answers_when_done() -> None:
    script = stream_receiver_command()[2]
    compile(script, "receiver", "exec")
    assert "flocker-received" in script


def test_stream_sender_waits_for_the_receivers_answer() -> None:
    script = stream_sender_command("10.0.0.2", 32000, 600)[2]
    assert "socat -t 600 - TCP:10.0.0.2:32000" in script
    assert " -u " not in script  # one-way socat would not read the answer


def test_the_receivers_answer_is_printed_after_tar_s_totals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A receiver that answers at once, while tar still runs: the sender prints the answer
    # on its own line after tar's totals anyway, so both parse (run for real: sh, tar, socat).
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "file").write_bytes(b"x" * 3_000_000)
    monkeypatch.setattr(transfer, "MOUNT", str(tmp_path / "data"))
    with socket.create_server(("127.0.0.1", 0)) as server:

        def receive() -> None:
            conn, _ = server.accept()
            with conn:
                conn.sendall(b"flocker-received 0\n")
                while conn.recv(65536):
                    pass

        receiver = threading.Thread(target=receive)
        receiver.start()
        command = stream_sender_command("127.0.0.1", server.getsockname()[1], 30)
        # One stream for both, as an exec gives them.
        done = subprocess.run(
            command, env={**os.environ, "FLOCKER_SECRET": "s"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30
        )
        receiver.join()
    assert done.returncode == 0, done.stdout
    *_, totals, answer = done.stdout.splitlines()
    assert totals.startswith("Total bytes written: ") and answer == "flocker-received 0", done.stdout
    assert stream_received(done.stdout) and parse_stream_total(done.stdout) >= 3_000_000


def test_stream_counts_only_a_confirmed_extraction() -> None:
    assert stream_received("tar: ./a: file changed as we read it\nflocker-received 0\nTotal bytes written: 10240\n")
    assert not stream_received("flocker-received 2\n")
    assert not stream_received("Total bytes written: 10240 (10KiB, 1MiB/s)\n")


def test_stream_progress_and_total_from_tar() -> None:
    output = "tar: 10240\ntar: 20480\nTotal bytes written: 209725440 (201MiB, 95MiB/s)\nflocker-received 0\n"
    assert parse_stream_progress(output) == 20480 * 10240
    assert parse_stream_total(output) == 209_725_440


def test_stream_progress_line_says_share_rate_and_time_left() -> None:
    line = stream_progress_line(sent=300 * 2**20, total=1200 * 2**20, seconds=3.0)
    assert line == "phase 1 round 1 (stream): 300.0 MB of 1.2 GB (25%), 100.0 MB/s, 0:09 left"
    assert stream_progress_line(sent=2**20, total=None, seconds=1.0) == "phase 1 round 1 (stream): 1.0 MB, 1.0 MB/s"
