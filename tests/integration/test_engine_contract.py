"""The engine contract (tests/contract/engine_contract.py) against the real DockerNode on a
cluster node: the same tests the in-memory fake passes (tests/unit/test_engine_contract.py).

Cheap: containers of the base image that sleep, a few seconds in all. Each test's names are
its own, and whatever it leaves on the node is removed after it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from flocker_provider.docker_layer.docker_node import connect
from tests.contract.engine_contract import EngineContract, Subject

from .harness import ClusterNode

pytestmark = pytest.mark.cluster

IMAGE = "flocker/base:local"


@pytest.fixture
def subject(nodes: list[ClusterNode]) -> Iterator[Subject]:
    node, prefix = nodes[0], f"contract-{uuid.uuid4().hex[:8]}"
    client = node.client()  # beside the engine under test, so that what it leaves is found however it failed

    def foreign_container(name: str) -> None:
        client.containers.create(IMAGE, ["true"], name=name)

    def foreign_volume(name: str) -> None:
        client.volumes.create(name=name)

    try:
        with connect(node.provider_node()) as engine:
            yield Subject(engine, prefix, IMAGE, foreign_container, foreign_volume)
    finally:
        # Docker's name filters match anywhere in the name: the prefix is checked again here.
        for container in client.containers.list(all=True, filters={"name": prefix}):
            if container.name.startswith(prefix):
                container.remove(force=True)
        for volume in client.volumes.list(filters={"name": prefix}):
            if volume.name.startswith(prefix):
                volume.remove(force=True)
        client.close()


class TestDockerNode(EngineContract):
    """The contract, on a cluster node."""
