"""Two clusters in one program: each resource's node, route nodes, port claims and links come
from its own ``FlockerCluster``; without one, from the stack config as before.

Programs run under Pulumi's mocks: no engine, no Docker.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pulumi
import pytest
from pulumi_mocks import node_file, record

from flocker_provider.secret_values import SECRET_PATHS
from flocker_pulumi import FlockerApplication, FlockerCluster, FlockerDeployment, FlockerVolume

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "elk"
STACK_NODES = [
    {"name": f"node{i}", "address": f"10.9.0.{i}", "docker_host": f"tcp://10.9.0.{i}:2375", "insecure_plain_tcp": True} for i in (1, 2)
]


@pytest.fixture(autouse=True)
def stack_nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    yield from node_file(tmp_path, monkeypatch, STACK_NODES)


def cluster_file(tmp_path: Path, name: str, network: str, count: int = 2) -> Path:
    path = tmp_path / f"{name}.json"
    nodes = [
        {"name": f"node{i}", "address": f"{network}.{i}", "docker_host": f"tcp://{network}.{i}:2375", "insecure_plain_tcp": True}
        for i in range(1, count + 1)
    ]
    path.write_text(json.dumps({"nodes": nodes}))
    return path


@pytest.fixture
def two(tmp_path: Path) -> tuple[FlockerCluster, FlockerCluster]:
    return (
        FlockerCluster.from_node_file(cluster_file(tmp_path, "east", "10.1.0"), name="east"),
        FlockerCluster.from_node_file(cluster_file(tmp_path, "west", "10.2.0", count=3), name="west"),
    )


def declared(program: Callable[[], Any]) -> dict[str, dict[str, Any]]:
    """Inputs by resource name (applications and their volumes share names: by type too)."""
    recorded = record(program, "p").resources
    return {f"{typ.rsplit(':', 1)[-1]}/{name}": {k: v for k, v in props.items() if k != SECRET_PATHS} for typ, name, props in recorded}


def addresses(route_nodes: str) -> list[str]:
    return [node["node_address"] for node in json.loads(route_nodes)]


def test_each_resource_is_placed_and_routed_on_its_own_cluster(two: tuple[FlockerCluster, FlockerCluster]) -> None:
    east, west = two

    def program() -> None:
        FlockerApplication("store", image="s", node="node1", ports=[{"internal": 9200, "external": 9200}], cluster=east)
        FlockerApplication("web", image="w", node="node2", volume={"mountpoint": "/d"}, cluster=west)
        FlockerVolume("spare", node="node3", cluster=west)

    found = declared(program)
    assert (found["Application/store"]["node_address"], found["Application/store"]["docker_host"]) == ("10.1.0.1", "tcp://10.1.0.1:2375")
    assert addresses(found["Application/store"]["route_nodes"]) == ["10.1.0.1", "10.1.0.2"]
    # The volume made for an application is on the application's cluster.
    for name in ("Application/web", "Volume/web"):
        assert found[name]["node_address"] == "10.2.0.2"
        assert addresses(found[name]["route_nodes"]) == ["10.2.0.1", "10.2.0.2", "10.2.0.3"]
    assert found["Volume/spare"]["node_address"] == "10.2.0.3"


def test_no_cluster_is_the_stack_configs(two: tuple[FlockerCluster, FlockerCluster]) -> None:
    def program(cluster: FlockerCluster | None) -> Callable[[], None]:
        return lambda: FlockerApplication("store", image="s", node="node1", ports=[{"internal": 1, "external": 80}], cluster=cluster)

    implicit = declared(program(None))
    assert implicit == declared(lambda: program(FlockerCluster.from_stack_config())())
    assert implicit["Application/store"]["node_address"] == "10.9.0.1"
    assert addresses(implicit["Application/store"]["route_nodes"]) == ["10.9.0.1", "10.9.0.2"]


def test_a_port_is_claimed_per_cluster(tmp_path: Path, two: tuple[FlockerCluster, FlockerCluster]) -> None:
    east, west = two

    def program() -> None:
        FlockerApplication("east-web", image="w", node="node1", ports=[{"internal": 8080, "external": 80}], cluster=east)
        FlockerApplication("west-web", image="w", node="node1", ports=[{"internal": 8080, "external": 80}], cluster=west)

    assert set(declared(program)) == {"Application/east-web", "Application/west-web"}

    # The same node file read twice is the same cluster, whatever it is called.
    again = FlockerCluster.from_node_file(tmp_path / "east.json", name="east, again")
    with pytest.raises(pulumi.RunError, match="applications east-web and other both publish external port 80"):
        record(
            lambda: [
                FlockerApplication("east-web", image="w", node="node1", ports=[{"internal": 1, "external": 80}], cluster=east),
                FlockerApplication("other", image="w", node="node2", ports=[{"internal": 1, "external": 80}], cluster=again),
            ],
            "p",
        )


def test_a_link_finds_its_target_on_its_own_cluster_only(two: tuple[FlockerCluster, FlockerCluster]) -> None:
    east, west = two
    link = [{"alias": "es", "local_port": 9200, "remote_port": 9200}]

    def program() -> None:
        FlockerApplication("es-east", image="es", node="node1", ports=[{"internal": 9200, "external": 9200}], cluster=east)
        FlockerApplication("es-west", image="es", node="node1", ports=[{"internal": 9200, "external": 9200}], cluster=west)
        FlockerApplication("kibana", image="k", node="node3", links=link, cluster=west)

    requests = record(program, "p").monitor.requests
    (kibana,) = (request for urn, request in requests.items() if urn.endswith("::kibana"))
    assert [urn.rsplit("::", 1)[-1] for urn in kibana.dependencies] == ["es-west"]

    expected = (
        "application kibana on cluster 'west': link 'es' to port 9200: application es-east publishing it is on cluster 'east'; "
        "a link reaches only applications of its own cluster"
    )
    with pytest.raises(pulumi.RunError) as refused:
        record(
            lambda: [
                FlockerApplication("es-east", image="es", node="node1", ports=[{"internal": 9200, "external": 9200}], cluster=east),
                FlockerApplication("kibana", image="k", node="node3", links=link, cluster=west),
            ],
            "p",
        )
    assert str(refused.value) == expected


def test_an_application_mounts_only_a_volume_of_its_own_cluster(two: tuple[FlockerCluster, FlockerCluster]) -> None:
    east, west = two

    def program() -> None:
        data = FlockerVolume("data", node="node1", cluster=east)
        FlockerApplication("db", image="pg", node="node1", volume={"volume": data, "mountpoint": "/d"}, cluster=west)

    with pytest.raises(pulumi.RunError, match="application db on cluster 'west': volume data is on cluster 'east'"):
        record(program, "p")


def test_two_clusters_of_one_program_may_not_share_a_node(tmp_path: Path, two: tuple[FlockerCluster, FlockerCluster]) -> None:
    east, _ = two
    # node2 of east, under another name: its router would serve both clusters' routes.
    overlapping = FlockerCluster.from_nodes("north", [{"name": "n1", "address": "10.3.0.1"}, {"name": "n2", "address": "10.1.0.2"}])

    def program() -> None:
        FlockerVolume("a", node="node1", cluster=east)
        FlockerVolume("b", node="n1", cluster=overlapping)

    with pytest.raises(pulumi.RunError, match="volume b: clusters 'east' and 'north' share node n2: a node's router serves one cluster"):
        record(program, "p")


def test_a_cluster_from_a_list_of_nodes() -> None:
    listed = FlockerCluster.from_nodes(
        "lab",
        [{"name": "a", "address": "10.4.0.1"}, {"name": "b", "address": "10.4.0.2", "tls": "/certs"}],
        docker_host_template="tcp://{address}:2376",
        tls_dir="/client",
    )

    def program() -> None:
        FlockerVolume("x", node="b", cluster=listed)
        FlockerVolume("y", node="typo", cluster=listed)
        FlockerVolume("z", node="10.4.0.9", cluster=listed)

    found = declared(program)
    # A listed node without docker_host is reached as a node file's is, over SSH.
    assert [n["docker_host"] for n in json.loads(found["Volume/x"]["route_nodes"])] == ["ssh://root@10.4.0.1", "ssh://root@10.4.0.2"]
    assert found["Volume/x"]["tls"] == {"ca_cert": "/certs/ca.pem", "client_cert": "/certs/cert.pem", "client_key": "/certs/key.pem"}
    assert found["Volume/y"]["node_error"] == "unknown node 'typo': not in cluster lab (known: a, b) and not an address"
    assert found["Volume/z"]["docker_host"] == "tcp://10.4.0.9:2376"
    assert found["Volume/z"]["tls"] == {"ca_cert": "/client/ca.pem", "client_cert": "/client/cert.pem", "client_key": "/client/key.pem"}

    missing = r"^FlockerCluster lab: nodes\[0\]: missing address; correct the nodes given to FlockerCluster lab$"
    with pytest.raises(pulumi.RunError, match=missing):
        FlockerCluster.from_nodes("lab", [{"name": "a"}])


def test_a_plain_tcp_node_is_refused_before_anything_runs() -> None:
    """Through the SDK: a cluster given a plain node fails the program with the message, no
    traceback (pulumi's RunError); a plain bare address fails the resource's check."""
    with pytest.raises(pulumi.RunError, match=r"^FlockerCluster lab: nodes\[0\] \(a\): tcp://10.0.0.1:2375 is plain TCP"):
        FlockerCluster.from_nodes("lab", [{"name": "a", "address": "10.0.0.1", "docker_host": "tcp://10.0.0.1:2375"}])
    templated = FlockerCluster.from_nodes("lab", [], docker_host_template="tcp://{address}:2375")

    def program() -> None:
        FlockerVolume("v", node="10.0.0.9", cluster=templated)

    assert declared(program)["Volume/v"]["node_error"].startswith("node 10.0.0.9: tcp://10.0.0.9:2375 is plain TCP without TLS")


def test_a_deployment_declares_its_children_on_its_cluster(two: tuple[FlockerCluster, FlockerCluster]) -> None:
    _, west = two
    three = [
        {"name": a, "address": a, "docker_host": f"tcp://{a}:2375", "insecure_plain_tcp": True}
        for a in ("172.16.255.250", "172.16.255.251", "172.16.255.252")
    ]
    article = FlockerCluster.from_nodes("article", three)

    def program() -> None:
        files = {"deployment_file": EXAMPLES / "deployment.yml", "application_file": EXAMPLES / "application.yml"}
        FlockerDeployment("elk", **files, cluster=article)
        FlockerApplication("elsewhere", image="e", node="node1", ports=[{"internal": 9200, "external": 9200}], cluster=west)

    found = declared(program)
    children = {name: props for name, props in found.items() if name != "Application/elsewhere" and "route_nodes" in props}
    assert children and all(addresses(props["route_nodes"]) == [n["address"] for n in three] for props in children.values())
    assert found["Application/elsewhere"]["node_address"] == "10.2.0.1"
