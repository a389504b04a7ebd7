"""One program driving two clusters: the session's (cluster 0) and a second one of two nodes,
started here beside it (`FLOCKER_CLUSTER=1`: its own bridge, subnet, namespaces and engines).
Both clusters name their nodes node1, node2, ...; each resource resolves its node in its own
cluster, the same external port is served by each cluster's own application, and a move in
one leaves the other alone."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import REPO, ClusterNode, Pulumi, by_name, eventually, http_json, load_nodes, ours

pytestmark = pytest.mark.cluster

PROGRAM = """
import pulumi
from flocker_pulumi import FlockerApplication, FlockerCluster

config = pulumi.Config()
east = FlockerCluster.from_node_file(config.require("eastNodes"), name="east")
west = FlockerCluster.from_node_file(config.require("westNodes"), name="west")
for cluster, name in ((east, "east"), (west, "west")):
    store = FlockerApplication(
        f"store-{name}",
        image="flocker/elasticsearch:local",
        node=config.require(f"{name}Node"),
        ports=[{"internal": 9200, "external": 9200}],
        volume={"mountpoint": "/var/lib/elasticsearch"},
        cluster=cluster,
    )
    pulumi.export(f"{name}_node", store.node)
"""


@pytest.fixture(scope="module")
def west(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, list[ClusterNode]]]:
    """A second local cluster of two nodes, with the images, for this module only."""
    nodes_file = tmp_path_factory.mktemp("west") / "nodes.json"
    env = {**os.environ, "FLOCKER_CLUSTER": "1", "FLOCKER_NODES_FILE": str(nodes_file)}

    def script(*args: str) -> None:
        done = subprocess.run(["bash", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{' '.join(args)}: {done.stdout}\n{done.stderr}"

    try:
        script("scripts/cluster.sh", "up", "2")
        script("scripts/build-images.sh", "--load-only")
        found = load_nodes(nodes_file)
        assert found is not None and len(found) == 2, found
        yield nodes_file, found
    finally:
        script("scripts/cluster.sh", "down")


def test_one_program_drives_two_clusters_and_moves_in_one_of_them(
    nodes: list[ClusterNode], west: tuple[Path, list[ClusterNode]], workdir: Path, stack_name: str
) -> None:
    west_file, west_nodes = west
    east_file = os.environ["FLOCKER_NODES_FILE"]
    pulumi = Pulumi(workdir, stack_name)
    pulumi.write_program(PROGRAM)
    pulumi.init({"eastNodes": east_file, "westNodes": str(west_file), "eastNode": "node1", "westNode": "node1"})
    everywhere = [*nodes, *west_nodes]
    try:
        pulumi.up()
        assert pulumi.outputs() == {"east_node": "node1", "west_node": "node1"}
        # One document into each cluster, through a node of that cluster that does not run it.
        east2, west2 = by_name(nodes, "node2"), by_name(west_nodes, "node2")
        http_json("PUT", f"http://{east2.address}:9200/docs/_doc/1", {"cluster": "east"})
        http_json("PUT", f"http://{west2.address}:9200/docs/_doc/1", {"cluster": "west"})
        for cluster, its_nodes in (("east", nodes), ("west", west_nodes)):
            for node in its_nodes:
                found = eventually(lambda a=node.address: read_document(a), what=f"{cluster}'s store via {node.name}")
                assert found == {"cluster": cluster}, node
        # Each cluster's containers on its own engines only.
        assert all(f"{stack_name}-store-west" not in " ".join(items) for items in ours(nodes, stack_name).values())
        assert all(f"{stack_name}-store-east" not in " ".join(items) for items in ours(west_nodes, stack_name).values())

        east_container = by_name(nodes, "node1").client().containers.get(f"flocker-{stack_name}-store-east")
        east_started = east_container.attrs["State"]["StartedAt"]
        pulumi.config({"westNode": "node2"})
        moved = pulumi.up()
        assert "moves from node1 to node2" in moved.stdout, moved.stdout
        assert pulumi.outputs()["west_node"] == "node2"
        assert read_document(by_name(west_nodes, "node1").address) == {"cluster": "west"}
        # East was not touched: the same container, not started again.
        east_container.reload()
        assert east_container.status == "running" and east_container.attrs["State"]["StartedAt"] == east_started
        assert read_document(east2.address) == {"cluster": "east"}
    finally:
        pulumi.destroy()
    assert all(not items for items in ours(everywhere, stack_name).values()), ours(everywhere, stack_name)


def read_document(address: str) -> dict:
    return http_json("GET", f"http://{address}:9200/docs/_doc/1")["_source"]
