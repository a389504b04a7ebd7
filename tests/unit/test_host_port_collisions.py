"""Host ports never collide with routed external ports, whatever external ports users choose.

Each node here is a stand-in Docker engine (docker_fakes.py) under the real DockerNode.
"""

from __future__ import annotations

import json

import pytest
from docker_fakes import FakeClient, FakeContainer, FakeHost, fake_nodes

from flocker_provider.docker_layer.docker_node import DockerNode
from flocker_provider.dynamic_providers import ApplicationProvider
from flocker_provider.inputs import node_props
from flocker_provider.planning.containers import container_spec, router_spec
from flocker_provider.planning.host_port_choice import host_port, host_ports, reserved_ports
from flocker_provider.planning.models import Application, Node, Owner, Port

NODES = tuple(Node(f"node{i}", f"10.0.0.{i}", f"tcp://10.0.0.{i}:2375") for i in (1, 2, 3))
N1 = NODES[0]
ROUTER = router_spec("p", "sflk", "flocker/base:local")


@pytest.fixture
def hosts(monkeypatch: pytest.MonkeyPatch) -> dict[Node, FakeHost]:
    return fake_nodes(monkeypatch, NODES)


def props(i: int, external: int | None = None) -> dict:
    node = NODES[i % len(NODES)]
    return {
        "name": f"a{i}",
        "project": "p",
        "stack": "sflk",
        **node_props(node),
        "node_error": None,
        "image": "app:1",
        # 8000: the internal port with which the collision below was first seen.
        "ports": [{"internal": 8000, "external": 30000 + i if external is None else external}],
        "route_nodes": [node_props(n) for n in NODES],
        "hold_seconds": 5.0,
        "router_image": "flocker/base:local",
    }


def up(order: list[int]) -> None:
    """What `pulumi up` does for each new application: check (preview), then create."""
    provider = ApplicationProvider()
    for i in order:
        failures = provider.check({}, props(i)).failures
        assert not failures, [f.reason for f in failures]
        provider.create(props(i))


def published(host: FakeHost, name: str) -> int:
    return int(host.containers[name].bindings["8000/tcp"][0]["HostPort"])


def assert_every_route_reaches_its_application(hosts: dict[Node, FakeHost], count: int) -> None:
    routed = set(range(30000, 30000 + count))
    for node, host in hosts.items():
        router = host.containers[ROUTER.name]
        assert set(router.routes) == routed
        host_ports_here = {port for port, who in host.bound.items() if who != ROUTER.name}
        assert not host_ports_here & routed, f"{node.name}: a host port is a routed port"
        for port, body in router.routes.items():
            i = port - 30000
            backend = NODES[i % len(NODES)]
            assert json.loads(body)["target"] == f"{backend.address}:{published(hosts[backend], f'flocker-sflk-a{i}')}"


def test_fifty_applications_with_external_ports_30000_to_30049_deploy(hosts: dict[Node, FakeHost]) -> None:
    # a9's first host port is 30025, a25's external port: the old code failed a25's check with
    # "external port 30025 is already taken on node node1 by container flocker-sflk-a9".
    assert host_port("flocker-sflk-a9", 8000, 0) == 30025
    up(list(range(50)))
    assert_every_route_reaches_its_application(hosts, 50)
    assert published(hosts[N1], "flocker-sflk-a9") != 30025
    # Only a9 had to move: it started twice, every other application once.
    starts = [name for host in hosts.values() for name in host.starts if name != ROUTER.name]
    assert sorted(starts) == sorted([f"flocker-sflk-a{i}" for i in range(50)] + ["flocker-sflk-a9"])


def test_a_port_routed_first_is_never_chosen_as_a_host_port(hosts: dict[Node, FakeHost]) -> None:
    up(list(reversed(range(50))))
    assert_every_route_reaches_its_application(hosts, 50)
    starts = [name for host in hosts.values() for name in host.starts if name != ROUTER.name]
    assert sorted(starts) == sorted(f"flocker-sflk-a{i}" for i in range(50))  # nobody moved


def test_the_check_still_refuses_a_port_someone_else_publishes(hosts: dict[Node, FakeHost]) -> None:
    up([9])
    provider = ApplicationProvider()
    assert provider.check({}, props(25)).failures == []  # a9's host port: a25's create moves it
    other = hosts[N1].containers["squatter"] = FakeContainer(hosts[N1], "squatter", {}, {"80/tcp": ("0.0.0.0", 30030)})
    other.start()
    reasons = [f.reason for f in provider.check({}, props(30)).failures]
    assert reasons == ["application a30: external port 30030 is already taken on node node1 by container squatter"]
    # Another stack's application is not ours to move either.
    spec = container_spec(Application("b", "app:1", ports=(Port(80, 80),)), Owner("p", "other", "b"), None)
    theirs = FakeContainer(hosts[N1], spec.name, spec.recorded()[0], {"80/tcp": ("0.0.0.0", 30031)})
    hosts[N1].containers[spec.name] = theirs
    theirs.start()
    reasons = [f.reason for f in provider.check({}, props(31)).failures]
    assert reasons == [f"application a31: external port 30031 is already taken on node node1 by container {spec.name}"]


def test_no_container_takes_a_reserved_port(hosts: dict[Node, FakeHost]) -> None:
    """While an application's ports are routed, a container started at the same time (another
    resource of the same `pulumi up`) avoids them, though they are in no route yet."""
    spec = container_spec(Application("a9", "app:1", ports=(Port(8000, 30009),)), Owner("p", "sflk", "a9"), None)
    engine = DockerNode(N1, FakeClient(hosts[N1]))  # type: ignore[arg-type]
    with reserved_ports(NODES, [30025]):
        engine.start_container(spec)
    assert published(hosts[N1], spec.name) == host_port(spec.name, 8000, 1)
    engine.remove_container(spec.name)
    engine.start_container(spec)
    assert published(hosts[N1], spec.name) == 30025  # released again


def test_host_ports_skip_what_to_avoid_and_each_other() -> None:
    first = host_port("c", 80, 0)
    assert host_ports("c", [80], 0, ()) == {80: first}
    assert host_ports("c", [80], 1, ()) == {80: host_port("c", 80, 1)}
    assert host_ports("c", [80], 0, {first}) == {80: host_port("c", 80, 1)}
    assert host_ports("c", [80], 1, {first}) == {80: host_port("c", 80, 2)}
    chosen = host_ports("c", [80, 81, 82], 0, {first})
    assert len(set(chosen.values())) == 3 and first not in chosen.values()


def test_check_asks_the_engines_only_about_ports_new_on_a_node(hosts: dict[Node, FakeHost], monkeypatch: pytest.MonkeyPatch) -> None:
    """A no-change preview or `up` reads nothing from the engines in `check`: a port the last
    operation routed is held by our router. A new port, or a node new to the routes, is asked about."""
    up([1])
    asked: list[tuple[str, int]] = []
    port_user = DockerNode.port_user

    def counted(self: DockerNode, port: int, router: object) -> str | None:
        asked.append((self.node.name, port))
        return port_user(self, port, router)  # type: ignore[arg-type]

    monkeypatch.setattr(DockerNode, "port_user", counted)
    provider = ApplicationProvider()
    assert provider.check(props(1), props(1)).failures == [] and asked == []
    assert provider.check(props(1), props(1, external=31001)).failures == []
    assert sorted(asked) == [(n.name, 31001) for n in NODES]
    asked.clear()
    fewer = {**props(1), "route_nodes": [node_props(n) for n in NODES[:2]]}
    assert provider.check(fewer, props(1)).failures == [] and asked == [("node3", 30001)]


def test_a_container_removed_while_the_node_is_listed_does_not_fail_a_start(hosts: dict[Node, FakeHost]) -> None:
    """Seen in CI: an application's start failed with "No such container", naming a container
    that docker-py had listed and that was gone by its inspect (another stack's router going)."""
    theirs = router_spec("p", "other", "flocker/base:local")
    going = hosts[N1].containers[theirs.name] = FakeContainer(hosts[N1], theirs.name, dict(theirs.labels), None)
    going.vanishing = True
    spec = container_spec(Application("a1", "app:1", ports=(Port(8000, 30001),)), Owner("p", "sflk", "a1"), None)
    DockerNode(N1, FakeClient(hosts[N1])).start_container(spec)  # type: ignore[arg-type]
    assert hosts[N1].containers[spec.name].status == "running"
