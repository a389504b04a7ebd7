"""An engine on plain TCP without TLS, off this machine, is refused unless its entry opts in by
name (``"insecure_plain_tcp": true``): a root dockerd that answers anyone who reaches its port
is the machine's, and every container on every node reaches it (issue 14, Security). What a
program is told of it: test_clusters.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flocker_provider import errors
from flocker_provider.nodes import Inventory, load_node_file
from flocker_provider.planning.models import TLSConfig

PLAIN = "tcp://10.0.0.1:2375"


def nodes_file(tmp_path: Path, **entry: object) -> Path:
    path = tmp_path / "nodes.json"
    path.write_text(json.dumps({"nodes": [{"name": "node1", "address": "10.0.0.1", **entry}]}))
    return path


def test_a_listed_node_on_plain_tcp_is_refused_saying_what_to_do(tmp_path: Path) -> None:
    path = nodes_file(tmp_path, docker_host=PLAIN)
    with pytest.raises(errors.NodeFileError) as refused:
        load_node_file(str(path))
    assert str(refused.value).startswith(
        f"{path}: nodes[0] (node1): {PLAIN} is plain TCP without TLS: whoever reaches that port, any container on any "
        'node included, drives the engine as root; give the entry "tls" (a directory with ca.pem, cert.pem, key.pem) '
        "for an engine run with --tlsverify, on port 2376, reach it over SSH (ssh://user@host), or, on a network no one "
        'else reaches, opt in with "insecure_plain_tcp": true in the entry. What to do: '
    )


@pytest.mark.parametrize(
    "entry",
    [
        {"docker_host": PLAIN, "insecure_plain_tcp": True},
        {"docker_host": "tcp://10.0.0.1:2376", "tls": "/certs"},
        {"docker_host": "ssh://root@10.0.0.1"},
        {},  # ssh://root@ADDRESS
        {"docker_host": "unix:///var/run/docker.sock"},
        {"docker_host": "tcp://127.0.0.1:2375"},  # a tunnel or a proxy of this machine's
        {"docker_host": "tcp://localhost:2375"},
        {"docker_host": "tcp://[::1]:2375"},
    ],
    ids=["opted in", "tls", "ssh", "default ssh", "unix socket", "loopback", "localhost", "ipv6 loopback"],
)
def test_what_is_not_plain_tcp_off_this_machine_or_opted_in_is_taken(tmp_path: Path, entry: dict[str, object]) -> None:
    (node,) = load_node_file(str(nodes_file(tmp_path, **entry))).nodes
    assert node.name == "node1"


def test_the_opt_in_is_true_or_false(tmp_path: Path) -> None:
    path = nodes_file(tmp_path, docker_host=PLAIN, insecure_plain_tcp="yes")
    with pytest.raises(errors.NodeFileError, match=r"nodes\[0\] \(node1\): insecure_plain_tcp: expected true or false, got 'yes'"):
        load_node_file(str(path))
    with pytest.raises(errors.NodeFileError, match="is plain TCP without TLS"):
        load_node_file(str(nodes_file(tmp_path, docker_host=PLAIN, insecure_plain_tcp=False)))


def test_an_address_reached_through_a_plain_tcp_template_is_refused() -> None:
    plain = Inventory(template="tcp://{address}:2375")
    with pytest.raises(LookupError) as refused:
        plain.resolve("10.0.0.7")
    assert str(refused.value) == (
        "node 10.0.0.7: tcp://10.0.0.7:2375 is plain TCP without TLS: whoever reaches that port, any container on any "
        "node included, drives the engine as root; set flocker:tlsDir (ca.pem, cert.pem, key.pem) for engines run with "
        '--tlsverify, reach it over SSH (an ssh:// template), or list it in a node file with "insecure_plain_tcp": true'
    )
    with_tls = Inventory(template="tcp://{address}:2376", tls=TLSConfig("ca.pem", "cert.pem", "key.pem"))
    assert with_tls.resolve("10.0.0.7").docker_host == "tcp://10.0.0.7:2376"
