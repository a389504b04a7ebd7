"""The transfer channel of a move admits only the move's source, with the move's secret (issue 14).

The destination's helper is started as a move starts it (`DockerNode.run_helper` and
`wait_for_helper_port`: the delta receiver, published on an ephemeral port); clients in
containers on the nodes then connect to it over the cluster's network, as the source's
sender does.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from flocker_provider.docker_layer.docker_node import connect
from flocker_provider.execution.transfer import DELTA_PORT, delta_receiver_command

from .harness import ClusterNode, by_name

pytestmark = pytest.mark.cluster

LABEL = "io.flocker-pulumi.test-transfer-channel"
SECRET = "the-moves-own-secret-" + uuid.uuid4().hex
# The sender's first words: the secret; a receiver that admits it answers with its hash's name.
CLIENT = """
import socket, sys
conn = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
conn.sendall(sys.argv[3].encode())
conn.settimeout(10)
try:
    print("answer:", conn.recv(64))
except ConnectionResetError:  # closed with the secret unread: refused too
    print("answer: reset")
"""
REFUSED = ("answer: b''", "answer: reset")


@pytest.fixture
def receiver(nodes: list[ClusterNode]) -> Iterator[tuple[int, object]]:
    """A delta receiver on node2 for a move from node1: its published port and container."""
    source, destination = by_name(nodes, "node1"), by_name(nodes, "node2")
    name = f"flocker-channel-{uuid.uuid4().hex[:8]}"
    labels = {LABEL: "true"}
    try:
        with connect(destination.provider_node()) as engine:
            engine.create_volume(name, labels)
            helper = engine.run_helper(
                "flocker/base:local",
                f"{name}-receive",
                delta_receiver_command(),
                labels,
                name,
                {"FLOCKER_SECRET": SECRET, "FLOCKER_ALLOWED": source.address},
                DELTA_PORT,
            )
            port = engine.wait_for_helper_port(helper, DELTA_PORT, b"flocker-delta listening", "receive")
        yield port, destination.client().containers.get(helper)
    finally:
        client = destination.client()
        for item in client.containers.list(all=True, filters={"label": LABEL}):
            item.remove(force=True)
        for volume in client.volumes.list(filters={"label": LABEL}):
            volume.remove(force=True)


def knock(node: ClusterNode, destination: ClusterNode, port: int, secret: str) -> str:
    """What the receiver answers a client in a container on ``node`` that says ``secret``."""
    output = node.client().containers.run(
        "flocker/base:local", ["python3", "-c", CLIENT, destination.address, str(port), secret], remove=True
    )
    return output.decode().strip()


def test_the_receiver_answers_only_the_source_with_the_secret(nodes: list[ClusterNode], receiver: tuple[int, object]) -> None:
    port, container = receiver
    source, destination, third = (by_name(nodes, name) for name in ("node1", "node2", "node3"))
    # A third node that somehow holds the secret is refused: the address is checked too.
    assert knock(third, destination, port, SECRET) in REFUSED
    # The source with a wrong secret of the same length is refused.
    assert knock(source, destination, port, "x" * len(SECRET)) in REFUSED
    # The source with the secret is admitted: the receiver says which hash it uses.
    assert knock(source, destination, port, SECRET).startswith("answer: b'H")
    logs = container.logs().decode()  # type: ignore[attr-defined]
    assert f"refused a connection from {third.address}" in logs, logs
    assert f"refused a connection from {source.address}" in logs, logs
