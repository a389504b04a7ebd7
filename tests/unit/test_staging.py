"""The staging gate's shell, run for real (with its file somewhere writable), and its helpers."""

from __future__ import annotations

import io
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from flocker_provider.execution.staging import (
    GATE_FILE,
    GATE_SCRIPT,
    HELD_LINE,
    LET_THROUGH_LINE,
    application_argv,
    gate_archive,
    is_staged,
    staged_name,
)


def gate(tmp_path: Path, *argv: str) -> subprocess.Popen:
    script = GATE_SCRIPT.replace(GATE_FILE, str(tmp_path / "gate"))
    return subprocess.Popen(["sh", "-c", script, "flocker-gate", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def held_file(tmp_path: Path) -> Path:
    with tarfile.open(fileobj=io.BytesIO(gate_archive())) as tar:
        member = tar.getmember(GATE_FILE.lstrip("/"))
        assert member.mode == 0o666  # emptied by whatever user the image runs as
        body = tar.extractfile(member).read()
    path = tmp_path / "gate"
    path.write_bytes(body)
    return path


def said_held(process: subprocess.Popen) -> None:
    assert process.stderr is not None
    assert process.stderr.readline().strip() == HELD_LINE


def test_held_until_signalled_then_runs_the_command_and_stays_open(tmp_path: Path) -> None:
    path = held_file(tmp_path)
    process = gate(tmp_path, "echo", "released")
    said_held(process)
    time.sleep(1.5)  # across a round of its loop
    assert process.poll() is None
    started = time.monotonic()
    process.send_signal(signal.SIGUSR2)
    out, err = process.communicate(timeout=5)
    assert (out, err, process.returncode) == ("released\n", f"{LET_THROUGH_LINE}\n", 0)
    assert time.monotonic() - started < 0.5  # the signal wakes it: no waiting out its sleep
    assert path.read_bytes() == b""
    # A restart later passes straight through, saying nothing.
    again = gate(tmp_path, "echo", "again")
    assert again.communicate(timeout=5) == ("again\n", "")


def test_an_empty_file_is_also_a_release_without_a_signal(tmp_path: Path) -> None:
    path = held_file(tmp_path)
    process = gate(tmp_path, "echo", "released")
    said_held(process)
    path.write_bytes(b"")
    out, _ = process.communicate(timeout=5)
    assert out == "released\n"


def test_stopped_while_held_it_ends_at_once_without_running_the_command(tmp_path: Path) -> None:
    held_file(tmp_path)
    process = gate(tmp_path, "echo", "released")
    said_held(process)
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=5)
    assert (out, process.returncode) == ("", 143)


@pytest.mark.parametrize(
    ("entrypoint", "cmd", "command", "argv"),
    [
        (None, ["python3", "server.py"], None, ["python3", "server.py"]),
        (["/docker-entrypoint.sh"], ["eswrapper"], None, ["/docker-entrypoint.sh", "eswrapper"]),
        (["/docker-entrypoint.sh"], ["eswrapper"], ("run", "--fast"), ["/docker-entrypoint.sh", "run", "--fast"]),
        ("/bin/tini", None, None, ["/bin/tini"]),
        (None, None, None, []),
    ],
)
def test_the_application_argv_is_what_docker_would_run(entrypoint, cmd, command, argv) -> None:
    assert application_argv(entrypoint, cmd, command) == argv


def test_staged_names_cannot_be_application_names() -> None:
    assert staged_name("flocker-dev-es") == "flocker-dev-es.staged"
    assert is_staged(staged_name("flocker-dev-es")) and not is_staged("flocker-dev-es")
