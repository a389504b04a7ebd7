from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from .harness import ClusterNode, Pulumi, load_nodes, ours


@pytest.fixture(scope="session")
def nodes() -> list[ClusterNode]:
    found = load_nodes()
    if found is None:
        if os.environ.get("FLOCKER_REQUIRE_CLUSTER"):
            pytest.fail("FLOCKER_NODES_FILE names no node file: `make test` starts the cluster")
        pytest.skip("no local cluster (run `make test`, or `make cluster` and set FLOCKER_NODES_FILE)")
    return found


@pytest.fixture
def stack_name() -> str:
    return "t" + uuid.uuid4().hex[:8]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def cleanup(nodes: list[ClusterNode], stack_name: str):
    """Stacks a test made: destroyed after it, and then nothing of the stack may be left on any node."""
    stacks: list[Pulumi] = []
    yield stacks
    for pulumi in stacks:
        pulumi.destroy()
    assert all(not items for items in ours(nodes, stack_name).values()), ours(nodes, stack_name)
