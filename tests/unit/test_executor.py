"""The executor's route step against stand-in engines: every node at once, failures named by node."""

import contextlib
import threading
from collections.abc import Iterator

import pytest
from fake_engine import FakeEngine

from flocker_provider import labels as L
from flocker_provider.containers import ContainerSpec, RouterSpec, router_spec
from flocker_provider.errors import NodeUnreachable, ProviderError, RoutingFailed
from flocker_provider.executor import Engines, execute
from flocker_provider.models import Node, Port
from flocker_provider.steps import PointRoutes

NODES = tuple(Node(f"node{i}", f"10.0.0.{i}", f"tcp://10.0.0.{i}:2375") for i in (1, 2, 3))
N1, N2, N3 = NODES
ROUTER = router_spec("p", "dev", "flocker/base:local")
PORTS = (Port(9200, 9200),)
ES = ContainerSpec("flocker-dev-es", "es:1", ports=PORTS, labels=((L.MANAGED, "true"),))


class AtOnce(FakeEngine):
    """Each route write waits at a barrier, so writes made one after another would never pass it."""

    def __init__(self, node: Node, barrier: threading.Barrier) -> None:
        super().__init__(node)
        self.barrier = barrier

    def point_routes(self, router: RouterSpec, routes: dict[int, dict]) -> None:
        self.barrier.wait(timeout=5)
        super().point_routes(router, routes)


class Refusing(FakeEngine):
    def point_routes(self, router: RouterSpec, routes: dict[int, dict]) -> None:
        raise RoutingFailed("writing routes failed")


def running_es(fakes: dict[Node, FakeEngine], node: Node) -> int:
    """Starts the application on ``node``; the host port it publishes 9200 on."""
    fakes[node].start_container(ES)
    return fakes[node].published_ports(ES.name)[9200]


def engines_of(fakes: dict[Node, FakeEngine], down: tuple[Node, ...] = ()) -> Engines:
    @contextlib.contextmanager
    def opener(node: Node) -> Iterator[FakeEngine]:
        if node in down:
            raise NodeUnreachable("Docker engine did not answer", node=node.name)
        yield fakes[node]

    return Engines(opener)  # type: ignore[arg-type]


def test_routes_are_written_on_every_node_at_once() -> None:
    barrier = threading.Barrier(len(NODES))
    fakes: dict[Node, FakeEngine] = {n: AtOnce(n, barrier) for n in NODES}
    port = running_es(fakes, N2)
    step = PointRoutes(NODES, ROUTER, "es", PORTS, N2, "flocker-dev-es", 30.0)
    with engines_of(fakes) as engines:
        execute((step,), engines)
    expected = {9200: {"target": f"10.0.0.2:{port}", "hold_seconds": 30.0, "application": "es"}}
    assert [fakes[n].routes for n in NODES] == [expected] * 3


def test_a_node_that_does_not_answer_is_skipped_unless_it_runs_the_application(capsys: pytest.CaptureFixture[str]) -> None:
    fakes = {n: FakeEngine(n) for n in NODES}
    running_es(fakes, N1)
    with engines_of(fakes, down=(N3,)) as engines:
        execute((PointRoutes(NODES, ROUTER, "es", PORTS, N1, "flocker-dev-es", 30.0),), engines)
    assert fakes[N2].routes
    assert "warning: node node3: Docker engine did not answer; skipped there: route port 9200" in capsys.readouterr().out
    with engines_of(fakes, down=(N1,)) as engines, pytest.raises(ProviderError, match="node node1: Docker engine did not answer"):
        execute((PointRoutes(NODES, ROUTER, "es", PORTS, N1, "flocker-dev-es", 30.0),), engines)


def test_a_failed_write_names_its_node_after_the_other_nodes_are_written() -> None:
    fakes = {n: Refusing(n) if n == N2 else FakeEngine(n) for n in NODES}
    running_es(fakes, N1)
    step = PointRoutes(NODES, ROUTER, "es", PORTS, N1, "flocker-dev-es", 30.0)
    with engines_of(fakes) as engines, pytest.raises(ProviderError) as failed:
        execute((step,), engines)
    expected = "step 'route port 9200 on node1, node2, node3 to es on node1' failed: node node2: writing routes failed"
    assert failed.value.summary() == expected
    assert fakes[N1].routes and fakes[N3].routes


def test_a_backend_that_publishes_no_port_is_not_routed_to() -> None:
    """Between two restarts of a crash loop Docker lists no binding: the step says so, and writes nothing."""
    fakes = {n: FakeEngine(n) for n in NODES}
    running_es(fakes, N1)
    fakes[N1].stop_container(ES.name)
    step = PointRoutes(NODES, ROUTER, "es", PORTS, N1, "flocker-dev-es", 30.0)
    with engines_of(fakes) as engines, pytest.raises(ProviderError) as failed:
        execute((step,), engines)
    assert failed.value.summary().endswith("failed: node node1: flocker-dev-es publishes no host port for [9200]: is it running?")
    assert not any(fake.routes for fake in fakes.values())
