"""Input validation: what `pulumi preview` reports as check failures, before any change."""

import json

import pytest

from flocker_provider.dynamic_providers import ApplicationProvider, VolumeProvider
from flocker_provider.inputs import inventory_text, node_from_props, parse_application, parse_volume
from flocker_provider.planning.models import HealthCheck

# Check probes every routing node for taken ports: these engines refuse at once, on this machine.
NODE = {"node": "node1", "node_address": "127.0.0.1", "docker_host": "tcp://127.0.0.1:9", "tls": None}
NODE3 = {"node": "node3", "node_address": "127.0.0.3", "docker_host": "tcp://127.0.0.3:9", "tls": None}


def app(**changes: object) -> dict:
    return {"name": "es", "project": "p", "stack": "s", **NODE, "image": "es:1", **changes}


def failures(props: dict, provider: object = None) -> list[tuple[str, str]]:
    result = (provider or ApplicationProvider()).check({}, props)
    return [(f.property, f.reason) for f in result.failures]


def test_valid_application_has_no_failures() -> None:
    assert failures(app(ports=[{"internal": 9200.0, "external": 9200.0}])) == []


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"image": ""}, [("image", "expected an image name such as 'repo:tag'; got an empty value")]),
        ({"image": "   "}, [("image", "expected an image name such as 'repo:tag'; got an empty value")]),
        (
            {"ports": [{"internal": 0, "external": 80}]},
            [("ports[0].internal", "expected a number 1-65535, got 0")],
        ),
        (
            {"ports": [{"internal": 80, "external": 70000}]},
            [("ports[0].external", "expected a number 1-65535, got 70000")],
        ),
        (
            {"ports": [{"internal": "x", "external": 80}]},
            [("ports[0].internal", "expected a whole number, got 'x'")],
        ),
        (
            {"ports": [{"internal": 80}]},
            [("ports[0]", "expected {internal, external}, got {'internal': 80}")],
        ),
        (
            {"ports": [{"internal": 80, "external": 80}, {"internal": 81, "external": 80}]},
            [("ports", "external port 80 is published twice")],
        ),
        (
            {"volume": {"name": "v", "node": "node1", "mountpoint": "data"}},
            [("volume.mountpoint", "expected an absolute path such as '/var/lib/data', got 'data'")],
        ),
        (
            {"environment": {"A": 1}},
            [("environment.A", "must be a string; got type 'int'")],
        ),
        (
            {"restart_policy": {"name": "sometimes"}},
            [("restart_policy.name", "expected one of never, always, on-failure, got 'sometimes'")],
        ),
        (
            {"restart_policy": {"name": "always", "maximum_retry_count": 3}},
            [("restart_policy.maximum_retry_count", "only allowed with on-failure")],
        ),
        (
            {"node_error": "unknown node 'nodeX': not in node file n.json (known: node1) and not an address"},
            [("node", "unknown node 'nodeX': not in node file n.json (known: node1) and not an address")],
        ),
        (
            {"volume": {"name": "v", "node": "node2", "mountpoint": "/d"}},
            [
                (
                    "node",
                    "application is on 'node1' but its volume is on 'node2'; give both the same node "
                    "(moving the volume moves the application with it)",
                )
            ],
        ),
        (
            {"health_check": {"command": "", "interval": 0.01}},
            [
                ("health_check.command", "expected a shell command line or a list of arguments, got ''"),
                ("health_check.interval", "expected seconds between 0.1 and 3600, got 0.01"),
            ],
        ),
        (
            {"health_check": {"command": ["true"], "retries": 0, "every": 1}},
            [
                ("health_check.every", "unknown key; expected one of command, interval, timeout, retries, start_period"),
                ("health_check.retries", "expected a number 1-1000, got 0"),
            ],
        ),
        (
            {"flush_command": "psql -c CHECKPOINT"},
            [("flush_command", "expected a list of arguments (strings), got 'psql -c CHECKPOINT'")],
        ),
    ],
)
def test_bad_application_inputs_are_check_failures(changes: dict, expected: list) -> None:
    assert failures(app(**changes)) == expected


def test_unknown_values_during_preview_are_not_judged() -> None:
    from pulumi.output import Unknown

    # As the dynamic provider host hands them over, inside lists and mappings too.
    assert failures(app(image=Unknown(), ports=[{"internal": Unknown(), "external": 80}])) == []


def test_unknown_node_of_a_volume() -> None:
    props = {"name": "v", "project": "p", "stack": "s", **NODE, "node_error": "unknown node 'x'"}
    assert failures(props, VolumeProvider()) == [("node", "unknown node 'x'")]


def test_node_change_is_an_update_never_a_replace() -> None:
    old = app(container_id="abc", addresses=["10.0.0.1:9200"])
    new = app(node="node2", node_address="127.0.0.2", docker_host="tcp://127.0.0.2:9")
    result = ApplicationProvider().diff("id", old, new)
    assert result.changes is True
    assert not result.replaces


def test_outputs_alone_are_not_a_change() -> None:
    old = app(container_id="abc", addresses=["10.0.0.1:9200"], __provider="blob")
    assert ApplicationProvider().diff("id", old, app()).changes is False


def test_an_application_a_refresh_found_stopped_is_an_update(capsys: pytest.CaptureFixture[str]) -> None:
    old = app(container_id="abc", addresses=["10.0.0.1:9200"], running=False)
    result = ApplicationProvider().diff("id", old, app())
    assert result.changes is True and not result.replaces
    assert "flocker: found: application es is not running on node1: the update starts it" in capsys.readouterr().out
    assert ApplicationProvider().diff("id", {**old, "running": True}, app()).changes is False


def test_a_refresh_that_cannot_reach_the_node_keeps_the_state(capsys: pytest.CaptureFixture[str]) -> None:
    # The node's engine refuses at once: the state stays as recorded, with a warning, so
    # that `refresh: always` does not block every `up` while a node is down.
    old = app(container_id="abc", addresses=["10.0.0.1:9200"], running=True)
    result = ApplicationProvider().read("id", old)
    assert (result.id, result.outs) == ("id", old)
    volume = {"name": "v", "project": "p", "stack": "s", **NODE, "volume_name": "v"}
    assert VolumeProvider().read("v", volume).outs == volume
    assert "warning: node node1: Docker engine at tcp://127.0.0.1:9 did not answer" in capsys.readouterr().out


def test_routing_nodes_include_the_hosting_node_sorted_by_name() -> None:
    routing = parse_application(app(route_nodes=[NODE3], hold_seconds=5.0)).routing
    assert [n.name for n in routing.nodes] == ["node1", "node3"]
    assert routing.hold_seconds == 5.0


def test_the_inventory_as_text_routes_as_the_list_recorded_by_earlier_versions_does() -> None:
    text = inventory_text([node_from_props(NODE), node_from_props(NODE3)])
    assert json.loads(text) == [NODE, NODE3]
    assert parse_application(app(route_nodes=text)).routing == parse_application(app(route_nodes=[NODE, NODE3])).routing


def test_an_inventory_recorded_as_a_list_is_no_change_against_its_text() -> None:
    # A stack recorded before the inventory became text: its next `up` updates nothing.
    text = inventory_text([node_from_props(NODE), node_from_props(NODE3)])
    assert ApplicationProvider().diff("id", app(route_nodes=[NODE, NODE3]), app(route_nodes=text)).changes is False
    assert ApplicationProvider().diff("id", app(route_nodes=[NODE]), app(route_nodes=text)).changes is True


def test_an_inventory_text_that_is_no_list_of_nodes_is_named() -> None:
    assert failures(app(route_nodes="[{")) == [("route_nodes", "expected a list of nodes or its JSON text, got '[{'")]
    assert failures(app(route_nodes='["node1"]')) == [("route_nodes[0]", "expected a node, got 'node1'")]


@pytest.mark.parametrize("hold", [0, -1, "30", True, 7200])
def test_bad_hold_seconds(hold: object) -> None:
    assert failures(app(hold_seconds=hold)) == [("hold_seconds", f"expected seconds between 0 and 3600, got {hold!r}")]


def test_a_node_added_to_the_cluster_updates_applications_without_replacing_them() -> None:
    # The new node needs the application's routes: an update, which restarts nothing.
    result = ApplicationProvider().diff("id", app(route_nodes=[NODE]), app(route_nodes=[NODE, NODE3]))
    assert result.changes is True
    assert not result.replaces


def test_a_node_added_to_the_cluster_is_no_change_for_a_volume() -> None:
    volume = {"name": "v", "project": "p", "stack": "s", **NODE, "volume_name": "v"}
    old, new = {**volume, "route_nodes": [NODE]}, {**volume, "route_nodes": [NODE, NODE3], "hold_seconds": 10}
    assert VolumeProvider().diff("id", old, new).changes is False


VOLUME = {"name": "v", "project": "p", "stack": "s", **NODE, "volume_name": "v"}


def test_a_volume_s_stall_timeout_is_seconds_from_one_on() -> None:
    assert parse_volume(VOLUME).stall_timeout == 30.0
    assert parse_volume({**VOLUME, "stall_timeout": 5}).stall_timeout == 5.0
    for bad in (0.5, "30", True):
        reason = f"expected seconds between 1 and 604800, got {bad!r}"
        assert failures({**VOLUME, "stall_timeout": bad}, VolumeProvider()) == [("stall_timeout", reason)]


def test_a_new_stall_timeout_is_no_change_for_a_volume() -> None:
    # Read only during a move, like the downtime budget: nothing to update on the node.
    assert VolumeProvider().diff("id", VOLUME, {**VOLUME, "stall_timeout": 5}).changes is False


def test_a_health_check_is_docker_s_test_in_seconds() -> None:
    shell = parse_application(app(health_check={"command": "curl -f localhost:9200"})).application.health_check
    assert shell == HealthCheck(command=("CMD-SHELL", "curl -f localhost:9200"), interval=1.0, timeout=5.0, retries=3, start_period=0.0)
    program = parse_application(app(health_check={"command": ["test", "-f", "/ready"], "interval": 0.5, "retries": 10.0}))
    assert program.application.health_check == HealthCheck(command=("CMD", "test", "-f", "/ready"), interval=0.5, retries=10)
