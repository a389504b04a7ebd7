"""The cluster's engines speak TLS and insist on a client certificate from the cluster's CA
(scripts/cluster.sh: dockerd --tlsverify on 2376, the certificates named in the node file), as
real hosts must: every test drives them so. Here, what that keeps out: a client with a
certificate of another CA, and an application container of one node that reaches another
node's engine port but has no certificate (issue 14, Security)."""

from __future__ import annotations

import dataclasses
import io
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from flocker_provider.docker_layer.docker_node import NodeUnreachable, connect
from flocker_provider.nodes import tls_from_dir
from flocker_provider.planning.containers import router_spec
from flocker_provider.planning.models import Node

from .harness import ClusterNode, Pulumi, by_name, make, ours, route_round_trip

pytestmark = pytest.mark.cluster

# An application of ours that does nothing but stay up, for a shell inside it.
PROBE_APP = """
import pulumi
from flocker_pulumi import FlockerApplication

FlockerApplication("probe", image="flocker/base:local", node=pulumi.Config().require("node"), command=["sleep", "infinity"])
"""
# Run inside it: a Docker API request (GET /_ping) to HOST:PORT in plain HTTP, over TLS without
# a client certificate (not checking the server's either, as an intruder would not), and over
# TLS with the certificates in /tmp/certs if given; each line what came back.
PROBE = r"""
import socket, ssl, sys

host, port, certs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
PING = b"GET /_ping HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n"

def ask(wrap):
    try:
        with socket.create_connection((host, port), timeout=10) as raw:
            print("connected", flush=True)
            conn = wrap(raw)
            conn.sendall(PING)
            return conn.recv(200).split(b"\r\n")[0].decode() or "closed"
    except (ssl.SSLError, OSError) as exc:
        return f"refused: {exc}"

print("plain:", ask(lambda raw: raw))
anyone = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
anyone.check_hostname, anyone.verify_mode = False, ssl.CERT_NONE
print("tls without a certificate:", ask(lambda raw: anyone.wrap_socket(raw)))
if certs:
    ours = ssl.create_default_context(cafile=f"{certs[0]}/ca.pem")
    ours.load_cert_chain(f"{certs[0]}/cert.pem", f"{certs[0]}/key.pem")
    print("tls with the cluster's certificate:", ask(lambda raw: ours.wrap_socket(raw, server_hostname=host)))
"""


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def stranger(directory: Path) -> Path:
    """A CA of someone else's and a client certificate it signed, in Docker's file names."""
    directory.mkdir()
    (directory / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    key = ("-newkey", "rsa:2048", "-nodes")
    openssl("req", "-x509", *key, "-keyout", "ca-key.pem", "-out", "ca.pem", "-days", "1", "-subj", "/CN=ca", cwd=directory)
    openssl("req", *key, "-keyout", "key.pem", "-out", "key.csr", "-subj", "/CN=client", cwd=directory)
    signing = ("-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial", "-days", "1")
    openssl("x509", "-req", "-in", "key.csr", *signing, "-out", "cert.pem", "-extfile", "client.ext", cwd=directory)
    return directory


def tls_node(nodes: list[ClusterNode]) -> Node:
    node = by_name(nodes, "node1").provider_node()
    assert node.tls is not None and node.docker_host.endswith(":2376"), f"node1 has no TLS: {node}"
    return node


def test_a_node_over_tls_takes_routes_through_a_session(nodes: list[ClusterNode], stack_name: str) -> None:
    """The route session is an exec with its stdin kept open: hijacked connections over TLS."""
    with connect(tls_node(nodes)) as engine:
        route_round_trip(engine, router_spec("p", stack_name, "flocker/base:local"))
    assert all(not items for items in ours(nodes, stack_name).values()), ours(nodes, stack_name)


def test_a_node_over_tls_refuses_a_client_without_our_certificate(nodes: list[ClusterNode], tmp_path: Path) -> None:
    node = tls_node(nodes)
    assert node.tls is not None
    # Our CA, so that the client trusts the server; a certificate from another CA, which the server must refuse.
    impostor = dataclasses.replace(
        node, tls=dataclasses.replace(tls_from_dir(str(stranger(tmp_path / "stranger"))), ca_cert=node.tls.ca_cert)
    )
    with pytest.raises(NodeUnreachable, match=f"node node1: Docker engine at {node.docker_host} did not answer: "), connect(impostor):
        pass


def certificates_into(container, directory: str) -> str:
    """The cluster's client certificate copied into ``container``, for the one request that must get through."""
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name in ("ca.pem", "cert.pem", "key.pem"):
            tar.add(str(Path(directory) / name), arcname=f"certs/{name}")
    assert container.put_archive("/tmp", archive.getvalue())
    return "/tmp/certs"


def test_an_application_container_reaches_another_nodes_engine_port_but_is_refused(
    nodes: list[ClusterNode], workdir: Path, stack_name: str, cleanup: list[Pulumi]
) -> None:
    """From inside an application of ours on node1, node2's engine port answers TCP, but not the
    API: plain HTTP gets a TLS server's refusal and TLS without a client certificate is cut off.
    The same request with the cluster's certificate, from the same container, gets the API's
    answer: only the certificate keeps the container out (on the plain TCP port the cluster
    used before, it would have had the engine, as root)."""
    node1, node2 = by_name(nodes, "node1"), by_name(nodes, "node2")
    app = make(workdir, stack_name, PROBE_APP, "node1")
    cleanup.append(app)
    app.up()
    container = node1.client().containers.get(f"flocker-{stack_name}-probe")
    port = node2.docker_host.rsplit(":", 1)[1]

    intruder = container.exec_run(["python3", "-c", PROBE, node2.address, port])
    said = intruder.output.decode()
    print(said)
    assert intruder.exit_code == 0, said
    lines = said.splitlines()
    assert lines.count("connected") == 2, said  # the port is reachable from the container, both times
    plain = next(line for line in lines if line.startswith("plain: "))
    assert plain.startswith("plain: HTTP/1.0 400 Bad Request"), said  # Go's answer to HTTP on a TLS port
    without = next(line for line in lines if line.startswith("tls without a certificate: "))
    # The server's alert (TLS 1.2's "bad certificate", 1.3's "certificate required") as the request is sent.
    assert re.search(r"refused: .*alert (bad certificate|certificate required)", without), said

    with_ours = container.exec_run(["python3", "-c", PROBE, node2.address, port, certificates_into(container, node2.tls)])
    said = with_ours.output.decode()
    print(said)
    assert "tls with the cluster's certificate: HTTP/1.1 200 OK" in said, said
