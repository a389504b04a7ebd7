"""Changes of a plan as people read them, and steps put together to run at once."""

from flocker_provider.planning.containers import router_spec
from flocker_provider.planning.models import Node, Port
from flocker_provider.planning.steps import (
    InParallel,
    PointRoutes,
    PrepareRoutes,
    RemoveApplication,
    RemoveVolume,
    Routes,
    at_once,
    describe,
    steps_of,
)

N1, N2, N3 = (Node(f"node{i}", f"10.0.0.{i}", f"tcp://10.0.0.{i}:2375") for i in (1, 2, 3))
ROUTER = router_spec("p", "dev", "flocker/base:local")
HOLD = Routes("es", (Port(9200, 9200), Port(9300, 9300)), None, "flocker-dev-es", 30.0)


def test_steps_at_once_that_differ_only_in_their_node_are_one_line_naming_every_node() -> None:
    assert describe(InParallel(tuple(PointRoutes(n, ROUTER, HOLD) for n in (N1, N2, N3)))) == (
        "hold new connections to es (port 9200, 9300) on node1, node2, node3 for up to 30s"
    )
    assert describe(InParallel((PrepareRoutes(N1, ROUTER), PrepareRoutes(N3, ROUTER)))) == "prepare routes on node1, node3"


def test_other_steps_at_once_are_each_told() -> None:
    assert describe(InParallel((RemoveApplication(N1, "flocker-dev-es"), RemoveVolume(N2, "v")))) == (
        "remove flocker-dev-es from node1; remove volume v from node2"
    )


def test_at_once_makes_one_change_of_several_steps_and_leaves_a_lone_step_as_it_is() -> None:
    removals = (RemoveVolume(N1, "v"), RemoveVolume(N2, "v"))
    assert at_once(iter(removals)) == (InParallel(removals),)
    assert at_once(removals[:1]) == removals[:1]
    assert at_once(()) == ()
    assert steps_of(InParallel(removals)) == removals and steps_of(removals[0]) == removals[:1]
