"""A node reached over TCP with TLS and a client certificate, as real hosts are (Docker's
`--tlsverify`): node1's engine behind a TLS terminator that insists on a certificate from
our CA. The local cluster's engines speak plain TCP, so the terminator stands in for
dockerd's own TLS; the bytes behind it are the same Docker API."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flocker_provider.docker_layer.docker_node import NodeUnreachable, connect
from flocker_provider.nodes import tls_from_dir
from flocker_provider.planning.containers import router_spec
from flocker_provider.planning.models import Node

from .harness import ClusterNode, ours, route_round_trip

pytestmark = pytest.mark.cluster


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def certificates(directory: Path) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, in Docker's file names."""
    directory.mkdir()
    (directory / "server.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    (directory / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    key = ("-newkey", "rsa:2048", "-nodes")
    openssl("req", "-x509", *key, "-keyout", "ca-key.pem", "-out", "ca.pem", "-days", "1", "-subj", "/CN=ca", cwd=directory)
    pairs = (("127.0.0.1", "server-key.pem", "server-cert.pem", "server.ext"), ("client", "key.pem", "cert.pem", "client.ext"))
    for name, private, cert, ext in pairs:
        openssl("req", *key, "-keyout", private, "-out", f"{private}.csr", "-subj", f"/CN={name}", cwd=directory)
        signing = ("-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial", "-days", "1")
        openssl("x509", "-req", "-in", f"{private}.csr", *signing, "-out", cert, "-extfile", ext, cwd=directory)
    return directory


@pytest.fixture
def tls_node(nodes: list[ClusterNode], tmp_path: Path) -> Iterator[Node]:
    node1 = next(n for n in nodes if n.name == "node1")
    certs = certificates(tmp_path / "tls")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    listen = (
        f"OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,verify=1,"
        f"cert={certs / 'server-cert.pem'},key={certs / 'server-key.pem'},cafile={certs / 'ca.pem'}"
    )
    terminator = subprocess.Popen(["socat", listen, f"TCP:{node1.address}:2375"], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the TLS terminator did not start"
                time.sleep(0.1)
        yield Node("node1", node1.address, f"tcp://127.0.0.1:{port}", tls=tls_from_dir(str(certs)))
    finally:
        terminator.terminate()
        terminator.wait()


def test_a_node_over_tls_takes_routes_through_a_session(tls_node: Node, nodes: list[ClusterNode], stack_name: str) -> None:
    with connect(tls_node) as engine:
        route_round_trip(engine, router_spec("p", stack_name, "flocker/base:local"))
    assert all(not items for items in ours(nodes, stack_name).values()), ours(nodes, stack_name)


def test_a_node_over_tls_refuses_a_client_without_our_certificate(tls_node: Node, tmp_path: Path) -> None:
    stranger = certificates(tmp_path / "stranger")
    # Our CA, so that the client trusts the server; a certificate from another CA, which the server must refuse.
    theirs = tls_from_dir(str(stranger))
    impostor = Node("node1", tls_node.address, tls_node.docker_host, tls=dataclasses.replace(theirs, ca_cert=tls_node.tls.ca_cert))
    with pytest.raises(NodeUnreachable, match="node node1: Docker engine at tcp://127.0.0.1:"), connect(impostor):
        pass
