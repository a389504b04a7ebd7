"""Nodes reached over SSH, the default for a bare address as in Flocker: an OpenSSH server
per node on this machine, logging in as root with a key, the engine's own socket behind it.

The provider runs the system's `ssh` as a user would, so the test gives it the user's side
too: a key, a known-hosts file and a config, through an `ssh` first on the PATH that adds
`-F` with that config (the test must not write to ~/.ssh)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from flocker_provider.docker_layer import ssh_tunnel
from flocker_provider.docker_layer.docker_node import NodeUnreachable, connect
from flocker_provider.planning.containers import router_spec
from flocker_provider.planning.models import Node

from .harness import STORE, ClusterNode, Pulumi, by_name, eventually, http_json, lost_writes, move_while_writing, ours, route_round_trip

pytestmark = pytest.mark.cluster

SSHD = "/usr/sbin/sshd"


@dataclass(frozen=True)
class SshAccess:
    nodes: dict[str, Node]
    bin_dir: Path  # holds our `ssh`, to go first on the PATH
    logs: dict[str, Path]  # sshd's log per node

    def logins(self, name: str) -> int:
        return self.logs[name].read_text().count("Accepted publickey")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


@pytest.fixture
def ssh_access(nodes: list[ClusterNode], tmp_path: Path) -> Iterator[SshAccess]:
    assert os.path.exists(SSHD), "no OpenSSH server: `make install` installs it"
    os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation directory
    directory = tmp_path / "ssh"
    directory.mkdir()
    host_key = keygen(directory / "host_key")
    (directory / "authorized_keys").write_text(keygen(directory / "client_key") + "\n")
    servers: list[subprocess.Popen[bytes]] = []
    found: dict[str, Node] = {}
    logs: dict[str, Path] = {}
    known = []
    try:
        for node in (by_name(nodes, "node1"), by_name(nodes, "node2")):
            port = free_port()
            config = directory / f"sshd_{node.name}"
            config.write_text(
                f"ListenAddress 127.0.0.1:{port}\nHostKey {directory / 'host_key'}\n"
                f"AuthorizedKeysFile {directory / 'authorized_keys'}\nAllowUsers root\n"
                "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
                "StrictModes no\nPidFile none\n"
            )
            logs[node.name] = directory / f"sshd_{node.name}.log"
            servers.append(subprocess.Popen([SSHD, "-D", "-e", "-f", str(config), "-E", str(logs[node.name])]))
            known.append(f"[127.0.0.1]:{port} {host_key}")
            found[node.name] = Node(node.name, node.address, f"ssh://root@127.0.0.1:{port}{node.engine_socket}")
            eventually(lambda port=port: socket.create_connection(("127.0.0.1", port), timeout=1).close() or True, timeout=10, what="sshd")
        (directory / "known_hosts").write_text("\n".join(known) + "\n")
        (directory / "config").write_text(
            f"Host *\n  IdentityFile {directory / 'client_key'}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {directory / 'known_hosts'}\n  StrictHostKeyChecking yes\n"
        )
        bin_dir = directory / "bin"
        bin_dir.mkdir()
        wrapper = bin_dir / "ssh"
        wrapper.write_text(f'#!/bin/sh\nexec /usr/bin/ssh -F {directory / "config"} "$@"\n')
        wrapper.chmod(0o755)
        yield SshAccess(found, bin_dir, logs)
    finally:
        # This process's own forwardings first: a server stopped under a live session leaves
        # that session's process to init, which here never reaps it.
        ssh_tunnel.close_all()
        for server in servers:
            server.terminate()
            server.wait()


def test_a_node_over_ssh_keeps_one_connection_and_takes_routes_through_a_session(
    ssh_access: SshAccess, nodes: list[ClusterNode], stack_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", f"{ssh_access.bin_dir}:{os.environ['PATH']}")
    node = ssh_access.nodes["node1"]
    with connect(node) as engine:
        route_round_trip(engine, router_spec("p", stack_name, "flocker/base:local"))
    with connect(node) as engine:  # another operation, after a dozen execs: still one login
        engine.client.ping()
    assert ssh_access.logins("node1") == 1
    assert all(not items for items in ours(nodes, stack_name).values()), ours(nodes, stack_name)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda host: host.replace("root@", "nobody@"), r"Permission denied \(publickey\)"),
        (lambda host: host.rsplit("/run/", 1)[0] + "/run/nothing.sock", r"nothing answered at /run/nothing.sock on the host"),
    ],
    ids=["refused login", "no engine socket"],
)
def test_a_node_over_ssh_that_cannot_be_used_says_why(ssh_access: SshAccess, monkeypatch: pytest.MonkeyPatch, change, why: str) -> None:
    monkeypatch.setenv("PATH", f"{ssh_access.bin_dir}:{os.environ['PATH']}")
    node = ssh_access.nodes["node1"]
    wrong = Node(node.name, node.address, change(node.docker_host))
    with pytest.raises(NodeUnreachable, match=f"node node1: Docker engine at ssh://.* did not answer: .*{why}"), connect(wrong):
        pass


def test_a_volume_moves_between_nodes_reached_over_ssh(
    ssh_access: SshAccess, nodes: list[ClusterNode], workdir: Path, stack_name: str
) -> None:
    """The seed's move with the default transport: every acknowledged write arrives, the
    destination was staged (execs with stdin over SSH), and destroy leaves nothing."""
    node_file = workdir / "nodes.json"
    entries = [{"name": n.name, "address": n.address, "docker_host": n.docker_host} for n in ssh_access.nodes.values()]
    node_file.write_text(json.dumps({"nodes": entries}))
    store = Pulumi(workdir, stack_name)
    store.env.update(PATH=f"{ssh_access.bin_dir}:{store.env['PATH']}", FLOCKER_NODES_FILE=str(node_file))
    store.write_program(STORE)
    store.init({"node": "node1"})
    source, destination = by_name(nodes, "node1"), by_name(nodes, "node2")
    try:
        store.up()
        eventually(lambda: http_json("GET", f"http://{source.address}:9200/"), what="store up")
        writer, _ = move_while_writing(store, [source, destination], "node1", "node2", writes_before=20)
        assert not lost_writes(destination, writer)
        last_move = store.outputs()["last_move"]
        assert any(step["step"].startswith("stage ") for step in last_move["steps"]), last_move["steps"]
    finally:
        store.destroy()
    assert all(not items for items in ours(nodes, stack_name).values()), ours(nodes, stack_name)
    # One login per node and operation (two `pulumi up`s and a destroy), not one per
    # exec: a move alone makes dozens.
    assert all(ssh_access.logins(name) <= 3 for name in ssh_access.logs), {n: ssh_access.logins(n) for n in ssh_access.logs}
