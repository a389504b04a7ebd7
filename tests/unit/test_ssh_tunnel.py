"""The ssh:// transport's own logic: what it runs, and what it says when ssh fails.

The real thing (an OpenSSH server per node, a move over it) is tests/integration/test_ssh.py;
here a stand-in `ssh` on the PATH plays the parts that need no server."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from flocker_provider.docker_layer import ssh_tunnel
from flocker_provider.docker_layer.ssh_tunnel import DEFAULT_SOCKET, SshTarget, TunnelError, parse


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("ssh://root@203.0.113.10", SshTarget("root", "203.0.113.10", None, DEFAULT_SOCKET)),
        ("ssh://203.0.113.10/", SshTarget(None, "203.0.113.10", None, DEFAULT_SOCKET)),
        ("ssh://ops@node.example:2222/run/user/1000/docker.sock", SshTarget("ops", "node.example", 2222, "/run/user/1000/docker.sock")),
        ("ssh://root@[2001:db8::1]:22", SshTarget("root", "2001:db8::1", 22, DEFAULT_SOCKET)),
    ],
)
def test_an_ssh_url_names_user_host_port_and_the_engine_socket(url: str, target: SshTarget) -> None:
    assert parse(url) == target


def test_a_url_without_a_host_is_refused() -> None:
    with pytest.raises(ValueError, match="expected ssh://"):
        parse("ssh:///var/run/docker.sock")


def test_ssh_forwards_a_local_socket_to_the_engine_and_never_prompts() -> None:
    command = parse("ssh://ops@node.example:2222/run/docker.sock").command("/tmp/x/docker.sock")
    assert command[:1] == ["ssh"] and "BatchMode=yes" in command and "ExitOnForwardFailure=yes" in command
    assert "ControlPath=none" in command and "-T" in command  # never a shared master, never a terminal
    assert command[command.index("-L") + 1] == "/tmp/x/docker.sock:/run/docker.sock"
    assert command[command.index("-p") + 1] == "2222" and command[command.index("-l") + 1] == "ops"
    # The host after "--": a host name starting with "-" cannot become an option.
    assert command[command.index("--") + 1] == "node.example"


@pytest.fixture
def fake_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Installs a stand-in `ssh` running ``script`` (with the -L argument in $FORWARD)."""

    def install(script: str) -> None:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        wrapper = bin_dir / "ssh"
        wrapper.write_text(
            '#!/bin/sh\nwhile [ "$1" != "-L" ]; do shift; done\nFORWARD="$2"\n' + script,
        )
        wrapper.chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")

    yield install
    ssh_tunnel.close_all()


def test_a_refused_login_is_ssh_s_own_last_words(fake_ssh) -> None:
    fake_ssh('echo "Warning: Permanently added host" >&2\necho "root@node: Permission denied (publickey)." >&2\nexit 255\n')
    with pytest.raises(TunnelError, match=r"^root@node: Permission denied \(publickey\)\.$"):
        ssh_tunnel.tunnel("ssh://root@node")


def test_no_ssh_client_is_said_plainly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(TunnelError, match="no ssh client here"):
        ssh_tunnel.tunnel("ssh://root@node")


def test_one_forwarding_per_engine_and_a_dead_one_is_started_again(fake_ssh) -> None:
    # The socket appears when the forwarding is up; then ssh stays until its stdin closes.
    fake_ssh('touch "${FORWARD%%:*}"\nexec cat >/dev/null\n')
    first = ssh_tunnel.tunnel("ssh://root@node")
    assert ssh_tunnel.tunnel("ssh://root@node") is first
    assert ssh_tunnel.tunnel("ssh://root@other") is not first
    os.kill(first.process.pid, signal.SIGKILL)
    first.process.wait()
    again = ssh_tunnel.tunnel("ssh://root@node")
    assert again is not first and again.alive()
    assert not os.path.exists(first.directory)  # the dead one's socket directory is gone
    assert oct(os.stat(again.directory).st_mode & 0o777) == "0o700"


def test_a_host_that_does_not_answer_delays_no_other(fake_ssh) -> None:
    # "dead" gives up after 2 s without a forwarding, as ssh does at its ConnectTimeout.
    fake_ssh(
        'case "$*" in *" dead "*) sleep 2; echo "ssh: connect to host dead: timed out" >&2; exit 255;; esac\n'
        'touch "${FORWARD%%:*}"\nexec cat >/dev/null\n'
    )
    failed = []

    def connect_dead() -> None:
        try:
            ssh_tunnel.tunnel("ssh://root@dead")
        except TunnelError as exc:
            failed.append(str(exc))

    waiting = threading.Thread(target=connect_dead)
    waiting.start()
    time.sleep(0.2)
    started = time.monotonic()
    assert ssh_tunnel.tunnel("ssh://root@live").alive()
    assert time.monotonic() - started < 1, "the live host waited for the dead one"
    waiting.join()
    assert failed == ["ssh: connect to host dead: timed out"]
