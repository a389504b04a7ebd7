"""Inputs given as Outputs (of other resources, secrets, unknown during preview), and secrets
kept out of what the provider prints, raises and records.

Programs run under Pulumi's mocks; the provider's hooks are called as the engine calls them,
with every input in plain text and the SDK's ``secret_inputs`` beside them.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pulumi
import pytest
from docker_fakes import fake_nodes
from pulumi.output import Unknown
from pulumi.runtime import rpc
from pulumi_mocks import node_file, record

from flocker_provider import provider_host, secret_values
from flocker_provider.dynamic_providers import ApplicationProvider, VolumeProvider
from flocker_provider.errors import InvalidInput
from flocker_provider.inputs import node_props
from flocker_provider.planning.models import Node
from flocker_provider.progress import report
from flocker_provider.secret_values import SECRET_PATHS, SHOWN_AS, learn, sealed
from flocker_pulumi import FlockerApplication, FlockerVolume
from flocker_pulumi import resources as resources_module

NODES = [
    {"name": f"node{i}", "address": f"10.9.0.{i}", "docker_host": f"tcp://10.9.0.{i}:2375", "insecure_plain_tcp": True} for i in (1, 2)
]
SECRET = "hunter2-Zq81x"


@pytest.fixture(autouse=True)
def nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    yield from node_file(tmp_path, monkeypatch, NODES)


@pytest.fixture(autouse=True)
def secrets_of_this_test(monkeypatch: pytest.MonkeyPatch) -> None:
    """The provider process remembers every secret it was given; a test's are its own."""
    monkeypatch.setattr(secret_values, "_known", set())


def later(value: Any) -> pulumi.Output[Any]:
    return pulumi.Output.from_input(value)


def unknown() -> pulumi.Output[Any]:
    """A value preview does not know (an output of a resource not made yet)."""
    loop = asyncio.get_event_loop()
    value, known, secret = loop.create_future(), loop.create_future(), loop.create_future()
    value.set_result(None)
    known.set_result(False)
    secret.set_result(False)
    return pulumi.Output(set(), value, known, secret)


def program(wrap: Callable[[Any], Any]) -> Callable[[], None]:
    """Both resources with every input the program may give as an Output given through ``wrap``."""

    def declare() -> None:
        data = FlockerVolume(
            "data",
            node=wrap("node1"),
            maximum_size=wrap("1G"),
            keep_retired=wrap(False),
            move_timeout=wrap(600),
            transfer_image=wrap("mover:1"),
            hold_seconds=wrap(5),
            downtime_budget=wrap(0.5),
            stall_timeout=wrap(10),
        )
        FlockerApplication(
            "store",
            image=wrap("store:1"),
            node=wrap("node1"),
            ports=[{"internal": wrap(9200), "external": 9200}],
            environment=wrap({"LEVEL": wrap("info")}),
            volume={"volume": data, "mountpoint": wrap("/data")},
            mem_limit=wrap(2**28),
            cpu_shares=wrap(512),
            restart_policy=wrap({"name": wrap("on-failure"), "maximum_retry_count": 3}),
            command=wrap(["serve", wrap("--fast")]),
            health_check=wrap({"command": wrap("true"), "interval": 1}),
            wait_timeout=wrap(60),
            hold_seconds=wrap(5),
        )
        FlockerApplication(
            "shipper",
            image="shipper:1",
            node=wrap("node2"),
            links=[{"alias": wrap("es"), "local_port": wrap(9200), "remote_port": 9200}],
        )

    return declare


def inputs(recorded: list[tuple[str, str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    return {name: {k: v for k, v in props.items() if k != SECRET_PATHS} for _, name, props in recorded}


def test_every_input_may_be_an_output_and_declares_what_the_plain_value_does() -> None:
    plain = record(program(lambda value: value), "p").resources
    outputs = record(program(later), "p").resources
    assert json.dumps(inputs(outputs), sort_keys=True) == json.dumps(inputs(plain), sort_keys=True)
    # The node an Output is still resolved in the inventory.
    assert inputs(outputs)["store"]["node_address"] == "10.9.0.1"
    assert inputs(outputs)["data"]["maximum_size"] == 2**30


def test_secrets_are_found_where_they_are_and_named_by_path_only() -> None:
    def declare() -> None:
        FlockerApplication(
            "store",
            image="store:1",
            node=pulumi.Output.secret("node1"),
            environment={"LEVEL": "info", "PASSWORD": pulumi.Output.secret(SECRET)},
        )

    (_, _, props), *_ = record(declare, "p").resources
    paths = props[SECRET_PATHS]
    assert ["environment", "PASSWORD"] in paths
    # How to reach a secret node is as secret as its name.
    assert {"node", "node_address", "docker_host"} <= {path[0] for path in paths}
    assert ["environment", "LEVEL"] not in paths
    assert SECRET not in json.dumps(paths)


def test_values_unknown_during_preview_are_accepted() -> None:
    def declare() -> None:
        FlockerApplication("store", image=unknown(), node=unknown(), ports=[{"internal": unknown(), "external": 80}], environment=unknown())
        FlockerVolume("data", node=unknown(), maximum_size=unknown(), hold_seconds=unknown())

    recorder = record(declare, "p")
    assert sorted(name for _, name, _ in recorder.resources) == ["data", "store"]


@pytest.mark.parametrize(
    ("declare", "named"),
    [
        (lambda: FlockerApplication("web", image="w", node="node1", ports=[{"internal": 80, "external": later(80)}]), "ports[0].external"),
        (lambda: FlockerApplication("web", image="w", node="node1", ports=later([{"internal": 80, "external": 80}])), "ports"),
        (lambda: FlockerApplication("web", image="w", node="node1", volume=later({"mountpoint": "/d"})), "volume"),
        (
            lambda: FlockerApplication("web", image="w", node="node1", links=[{"alias": "a", "local_port": 1, "remote_port": later(80)}]),
            "remote_port",
        ),
    ],
)
def test_what_must_be_known_as_the_program_runs_is_named_when_it_is_an_output(declare: Callable[[], Any], named: str) -> None:
    with pytest.raises(Exception, match=rf"application web: .*{re.escape(named)}.* must be known as the program runs, not an Output"):
        record(declare, "p")


def app(**changes: Any) -> dict[str, Any]:
    return {
        "name": "store",
        "project": "p",
        "stack": "s",
        "node": "node1",
        "node_address": "10.9.0.1",
        "docker_host": "tcp://10.9.0.1:2375",
        "tls": None,
        "node_error": None,
        "image": "store:1",
        "route_nodes": [],
        SECRET_PATHS: [],
        **changes,
    }


def test_preview_with_unknown_inputs_checks_later_and_says_what_is_not_known(capsys: pytest.CaptureFixture[str]) -> None:
    # As the dynamic provider host hands them over (deserialize_properties keeping unknowns).
    news = app(image=Unknown(), node=Unknown(), node_address=Unknown(), docker_host=Unknown(), tls=Unknown())
    assert ApplicationProvider().check({}, news).failures == []
    assert ApplicationProvider().diff("id", app(), news).changes
    assert "flocker: plan: application store: image, node not known until apply" in capsys.readouterr().out
    # A volume whose node is not known yet: no move line to work out, no failure.
    volume = {k: v for k, v in news.items() if k != "image"}
    assert VolumeProvider().diff("id", {**app(), "name": "store"}, {**volume, "name": "store"}).changes
    assert "flocker: plan: volume store: node not known until apply" in capsys.readouterr().out


def test_a_secret_is_blanked_from_check_failures_errors_and_progress(capsys: pytest.CaptureFixture[str]) -> None:
    news = app(ports=[{"internal": SECRET, "external": 80}], **{SECRET_PATHS: [["ports", 0, "internal"]]})
    failures = ApplicationProvider().check({}, news).failures
    assert failures and all(SECRET not in f.reason for f in failures)
    assert SHOWN_AS in failures[0].reason
    try:
        raise InvalidInput(f"a value {SECRET} quoted")
    except InvalidInput:
        assert SECRET not in provider_host.format_exc()
    try:
        raise KeyError(SECRET)  # a bug's traceback quotes it too
    except KeyError:
        assert SECRET not in provider_host.format_exc()
    report(f"starting with {SECRET}")
    assert SECRET not in capsys.readouterr().out


def test_outputs_made_of_a_secret_input_are_secrets() -> None:
    props = app(node="secret-node-Q7", **{SECRET_PATHS: [["node"]]})
    learn(props)
    outs = sealed({**props, "addresses": ["10.9.0.1:80"], "container_id": "c"}, props, {"addresses": ("node", "ports")})
    assert rpc.is_rpc_secret(outs["addresses"])
    assert outs["container_id"] == "c"
    # Same-named outputs the engine keeps secret itself; the rest stays as it is.
    assert outs["node"] == "secret-node-Q7"
    assert sealed({"addresses": ["a"]}, app(), {"addresses": ("node",)}) == {"addresses": ["a"]}


def test_an_input_made_a_secret_with_its_value_unchanged_is_an_update_that_records_it_sealed() -> None:
    props = app(ports=[{"internal": 80, "external": 80}])
    secret = {**props, SECRET_PATHS: [["node"]]}
    assert ApplicationProvider().diff("id", props, secret).changes
    assert VolumeProvider().diff("id", secret, props).changes
    # A stack recorded before secret_inputs existed has none: no update for that alone.
    recorded_before = {k: v for k, v in props.items() if k != SECRET_PATHS}
    assert not ApplicationProvider().diff("id", recorded_before, props).changes


def test_an_error_of_the_program_about_a_value_given_as_an_output_names_the_key_without_it() -> None:
    async def size_of_a_secret() -> object:
        return await resources_module._then(pulumi.Output.secret(SECRET), functools.partial(resources_module._size, "data")).future()

    with pytest.raises(pulumi.RunError, match=r"volume data: maximum_size: '\[secret\]' is not a size") as error:
        asyncio.run(size_of_a_secret())
    assert SECRET not in str(error.value)


def test_an_unknown_secret_node_is_a_check_failure_that_blanks_only_the_name() -> None:
    def declare() -> None:
        FlockerApplication("store", image="store:1", node=pulumi.Output.secret("node-Zq81"))

    (_, _, recorded), *_ = record(declare, "p").resources
    # As the engine hands them to a provider that cannot accept secrets: in plain text.
    props = {key: rpc.unwrap_rpc_secret(value) for key, value in recorded.items()}
    assert ["node_error"] not in props[SECRET_PATHS]
    failures = ApplicationProvider().check({}, props).failures
    assert [f.property for f in failures] == ["node"]
    assert "node-Zq81" not in failures[0].reason and failures[0].reason.startswith(f"unknown node '{SHOWN_AS}'")


def test_the_inventory_is_as_secret_as_the_node_whose_name_it_holds() -> None:
    def declare() -> None:
        FlockerApplication("store", image="store:1", node=pulumi.Output.secret("node1"))
        FlockerApplication("shipper", image="shipper:1", node="node2")

    # By name: the store registers once its secret node is resolved, after the shipper or before.
    declared = {name: inputs for _, name, inputs in record(declare, "p").resources}
    store, shipper = declared["store"], declared["shipper"]
    assert rpc.is_rpc_secret(store["route_nodes"])
    assert [n["node"] for n in json.loads(rpc.unwrap_rpc_secret(store["route_nodes"]))] == ["node1", "node2"]
    # Not blanked for it: the node's own value is, and the other nodes' are no secrets.
    assert ["route_nodes"] not in store[SECRET_PATHS]
    assert not rpc.is_rpc_secret(shipper["route_nodes"])


def test_secret_settings_are_in_no_label_of_the_container_and_unchanged_do_not_restart_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """On stand-in nodes under the real Docker layer: a secret image, command and health check
    are kept in the container's own environment, and the next update finds it up to date."""
    nodes = tuple(Node(n["name"], n["address"], n["docker_host"]) for n in NODES)
    hosts = fake_nodes(monkeypatch, nodes)
    tag, word, check = "tag-Wq31", "word-Hk72", "check-Lp09"
    props = app(
        image=f"store:{tag}",
        command=["serve", word],
        health_check={"command": f"test -n {check}"},
        route_nodes=[node_props(n) for n in nodes],
        **{SECRET_PATHS: [["image"], ["command", 1], ["health_check"]]},
    )
    ApplicationProvider().create(props)
    container = hosts[nodes[0]].containers["flocker-s-store"]
    assert not [value for value in container.labels.values() if any(secret in value for secret in (tag, word, check))]
    assert any(tag in entry and word in entry and check in entry for entry in container.attrs["Config"]["Env"])
    ApplicationProvider().update("flocker-s-store", props, props)
    assert hosts[nodes[0]].containers["flocker-s-store"] is container
    ApplicationProvider().update("flocker-s-store", props, {**props, "command": ["serve", "word-other"]})
    assert hosts[nodes[0]].containers["flocker-s-store"] is not container
