"""The shape of the transfer commands, and what the programs on the nodes say."""

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from flocker_provider import on_node
from flocker_provider.execution import transfer
from flocker_provider.execution.migration import TransferChannel, stream_progress_line
from flocker_provider.execution.transfer import (
    DeltaFailed,
    StallWatch,
    delta_progress,
    delta_result,
    delta_said,
    delta_send_command,
    parse_stream_progress,
    parse_stream_total,
    predicted_seconds,
    progress_marks,
    stream_received,
    stream_receiver_command,
    stream_sender_command,
)
from flocker_provider.planning.models import Node


def test_the_programs_run_from_the_files_put_into_the_helper() -> None:
    command = stream_receiver_command()
    assert command[:5] == ["env", f"PYTHONPATH={on_node.DIRECTORY}", "python3", "-m", "on_node.stream_receive"]
    archive = on_node.archive(on_node.MOVE_HELPERS)
    names = subprocess.run(["tar", "-t"], input=archive, capture_output=True, check=True).stdout.decode().split()
    package = f"{on_node.DIRECTORY.lstrip('/')}/on_node"
    assert sorted(names) == [f"{package}/{name}.py" for name in ("__init__", "btrfs_extents", "delta_copy", "stream_receive")]


def test_an_armed_phase_2_round_says_so() -> None:
    command = delta_send_command("10.0.0.2", 31337, 2**30, final=True, armed=True, stall=32.0)
    assert command[5:] == [
        "send",
        "--root",
        "/data",
        "--to",
        "10.0.0.2:31337",
        "--state",
        transfer.DELTA_STATE,
        "--streamed",
        transfer.STREAM_STARTED,
        "--stall",
        "32",
        "--total",
        str(2**30),
        "--final",
        "--armed",
    ]


def test_a_round_s_result_and_progress_are_read_from_its_output() -> None:
    output = 'flocker-delta armed\nflocker-delta-progress 1048576 4194304\nflocker-delta-result {"bytes_read": 7}\n'
    assert delta_result(output) == {"bytes_read": 7}
    assert delta_progress(output) == (1_048_576, 4_194_304)
    with pytest.raises(DeltaFailed, match="the destination failed: disk full"):
        delta_result('flocker-delta-result {"error": "the destination failed: disk full"}\n')
    with pytest.raises(DeltaFailed, match="no result: Traceback"):
        delta_result("Traceback (most recent call last):\n")


def test_a_round_has_said_all_once_its_result_line_is_there() -> None:
    assert not delta_said("flocker-delta armed\nflocker-delta-progress 1 2\n")
    assert not delta_said('flocker-delta-result {"bytes_re')  # not all of it yet
    assert delta_said('flocker-delta armed\nflocker-delta-result {"bytes_read": 7}\n')


class _SaysAllThenLingers:
    """An armed command that prints its result, then takes its time to exit."""

    def __init__(self) -> None:
        self.exited = threading.Event()

    def fire(self):  # noqa: ANN201 (a generator of output chunks)
        yield b"flocker-delta armed\n"
        yield b'flocker-delta-result {"bytes_read": 7}\n'
        self.exited.wait(30)

    def exit_code(self) -> int | None:
        raise AssertionError("not asked for: the result said it all")

    def close(self) -> None:
        self.exited.set()


def test_the_wait_for_a_round_ends_at_its_result_line_not_at_the_command_s_exit() -> None:
    channel = TransferChannel.__new__(TransferChannel)  # what the wait uses of a channel, without its helpers
    channel.source = Node("node1", "10.0.0.1", "tcp://10.0.0.1:2375")
    channel.engines, channel.sender, channel.stall = {channel.source: None}, "helper", 30.0
    lingering = _SaysAllThenLingers()
    try:
        code, output = channel._run_on_source("phase 2", [], {}, 60.0, lambda _: None, lingering, said=delta_said)
        assert not lingering.exited.is_set()
    finally:
        lingering.close()
    assert code is None and delta_result(output) == {"bytes_read": 7}


def test_a_round_that_stalled_says_so() -> None:
    with pytest.raises(DeltaFailed) as failed:
        delta_result('flocker-delta-result {"error": "sending to the destination: timed out", "stalled": true}\n')
    assert failed.value.stalled
    with pytest.raises(DeltaFailed) as failed:
        delta_result('flocker-delta-result {"error": "the destination failed: disk full", "stalled": false}\n')
    assert not failed.value.stalled


def test_progress_is_a_new_progress_line_of_either_copy_program() -> None:
    # The heartbeat's empty lines, an armed round's readiness and tar's warnings are no progress.
    assert progress_marks("\n\nflocker-delta armed\ntar: ./a: file changed as we read it\n") == 0
    assert progress_marks("tar: 1024\ntar: 2048\n\n") == 2
    # A round prints the same numbers again while it walks or waits: each line counts.
    assert progress_marks("flocker-delta-progress 0 4096\nflocker-delta-progress 0 4096\n") == 2


def test_a_copy_without_progress_for_the_stall_timeout_has_stalled() -> None:
    watch = StallWatch(5.0, now=100.0)
    watch.saw("", now=103.0)
    assert not watch.stalled(104.9)
    assert watch.stalled(105.0)
    watch.saw("tar: 1024\n", now=105.5)
    assert watch.idle(106.0) == 0.5 and not watch.stalled(110.4)
    # The same output again is no progress, however often it is looked at.
    for now in (106.0, 108.0, 110.0):
        watch.saw("tar: 1024\n\n", now=now)
    assert watch.stalled(110.5)


def test_the_programs_on_the_nodes_give_up_a_little_after_the_host_s_watch() -> None:
    assert transfer.node_stall(5.0) == 5.0 + transfer.STALL_MARGIN > 5.0


def test_phase_2_is_predicted_from_what_changed_at_the_rate_this_round_read() -> None:
    # 1 GiB read in 0.5 s of reading, 256 MiB changed since: 0.125 s, plus the walk and the fixed costs.
    result = {"seconds": 0.55, "survey_seconds": 0.05, "bytes_read": 2**30, "dirty_bytes": 2**28}
    assert predicted_seconds(result) == round(0.05 + 0.125 + transfer.ROUND_OVERHEAD, 3)
    # Too little read to tell a rate: reading is taken as 1 GB/s.
    assert predicted_seconds({"seconds": 0.01, "bytes_read": 10, "dirty_bytes": 0}) == transfer.ROUND_OVERHEAD


def test_stream_sender_waits_for_the_receivers_answer() -> None:
    script = stream_sender_command("10.0.0.2", 32000, 600, 7.0)[2]
    assert "socat -t 600 - TCP:10.0.0.2:32000," in script
    # A cut link ends the stream after the stall limit, not after TCP's own timeouts.
    assert "connect-timeout=7," in script and "sockopt-int=6:18:7000" in script
    assert " -u " not in script  # one-way socat would not read the answer


def test_the_receivers_answer_is_printed_after_tar_s_totals_on_the_same_pipe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A receiver that answers at once, while tar still runs: the sender prints the answer
    # on its own line after tar's totals anyway, so both parse (run for real: sh, tar, socat).
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "file").write_bytes(b"x" * 3_000_000)
    monkeypatch.setattr(transfer, "MOUNT", str(tmp_path / "data"))
    monkeypatch.setattr(transfer, "STREAM_STARTED", str(tmp_path / "started"))
    with socket.create_server(("127.0.0.1", 0)) as server:

        def receive() -> None:
            conn, _ = server.accept()
            with conn:
                conn.sendall(b"flocker-received 0\n")
                while conn.recv(65536):
                    pass

        receiver = threading.Thread(target=receive)
        receiver.start()
        command = stream_sender_command("127.0.0.1", server.getsockname()[1], 30, 10)
        # Two pipes, as an exec has them: Docker reads each by its own reader, so only what
        # comes through one of them keeps its order.
        done = subprocess.run(command, env={**os.environ, "FLOCKER_SECRET": "s"}, capture_output=True, text=True, timeout=30)
        receiver.join()
    assert done.returncode == 0 and done.stderr == "", (done.stdout, done.stderr)
    *_, totals, answer = done.stdout.splitlines()
    assert totals.startswith("Total bytes written: ") and answer == "flocker-received 0", done.stdout
    assert stream_received(done.stdout) and parse_stream_total(done.stdout) >= 3_000_000
    assert int((tmp_path / "started").read_text()) > 0  # when tar began, for the next round


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


def test_the_stream_receiver_syncs_the_copy_before_it_answers(tmp_path: Path) -> None:
    """A big stream left GBs dirty on the destination, whose writeback then slowed every fsync
    of the application started there: the receiver syncs the volume first (a `sync` on PATH
    that records its arguments stands in for coreutils')."""
    source, copy, bin_dir = tmp_path / "source", tmp_path / "copy", tmp_path / "bin"
    for directory in (source, copy, bin_dir):
        directory.mkdir()
    (source / "file").write_bytes(os.urandom(100_000))
    (bin_dir / "sync").write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/synced\n')
    (bin_dir / "sync").chmod(0o755)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FLOCKER_SECRET": "s", "FLOCKER_ALLOWED": "127.0.0.1"}
    command = [sys.executable, "-m", "flocker_provider.on_node.stream_receive", str(port), str(copy), "flocker-received"]
    receiver = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout is not None and "listening" in receiver.stdout.readline()
        archive = subprocess.run(["tar", "-c", "-C", str(source), "."], capture_output=True, check=True).stdout
        with socket.create_connection(("127.0.0.1", port)) as conn:
            conn.sendall(b"s" + archive)
            conn.shutdown(socket.SHUT_WR)
            answer = conn.makefile().readline()
            synced = (tmp_path / "synced").read_text().split() if (tmp_path / "synced").exists() else None
        assert answer == "flocker-received 0\n" and synced == ["--file-system", str(copy)], (answer, synced)
        assert (copy / "file").read_bytes() == (source / "file").read_bytes()
    finally:
        receiver.kill()
        receiver.wait()
