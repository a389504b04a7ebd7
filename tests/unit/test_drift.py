"""Drift: what the hooks do with a volume deleted by hand on its node, and with a container of
an application started by hand on another node (no engine needed)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from docker_fakes import FakeContainers, fake_nodes

from flocker_provider import dynamic_providers
from flocker_provider.dynamic_providers import ApplicationProvider, VolumeProvider
from flocker_provider.errors import PlanError
from flocker_provider.execution.executor import Engines
from flocker_provider.inputs import node_props
from flocker_provider.planning import labels as L
from flocker_provider.planning.models import Node, NodeVolumeState, Owner

NODE = {"node": "node1", "node_address": "10.0.0.1", "docker_host": "tcp://10.0.0.1:2375", "tls": None}
VOLUME = {"name": "store", "project": "p", "stack": "s", **NODE, "volume_name": "flocker-s-store", "missing": False}
APPLICATION = {
    "name": "store",
    "project": "p",
    "stack": "s",
    **NODE,
    "image": "es:1",
    "volume": {"name": "flocker-s-store", "node": "node1", "mountpoint": "/data"},
}


class NoVolumes:
    """A node's engine on which every volume is gone; anything else asked of it is a test failure."""

    def discover_volume(self, name: str) -> NodeVolumeState:
        return NodeVolumeState(name, exists=False)


@pytest.fixture
def volumes_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    @contextlib.contextmanager
    def connect(_node: Node) -> Iterator[NoVolumes]:
        yield NoVolumes()

    monkeypatch.setattr(dynamic_providers, "connect", connect)
    monkeypatch.setattr(dynamic_providers, "Engines", lambda: Engines(connect))  # type: ignore[arg-type]


@pytest.mark.usefixtures("volumes_gone")
def test_a_refresh_keeps_a_missing_volume_and_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    # Dropped from the state instead, the next `up` would create it, empty.
    read = VolumeProvider().read("flocker-s-store", VOLUME)
    assert read.id == "flocker-s-store" and read.outs["missing"] is True
    assert "found: volume store is missing on node1: `pulumi up` will not create it again empty" in capsys.readouterr().out
    diff = VolumeProvider().diff("flocker-s-store", read.outs, VOLUME)
    assert diff.changes and not diff.replaces


@pytest.mark.usefixtures("volumes_gone")
def test_an_update_refuses_to_create_a_missing_volume_again() -> None:
    with pytest.raises(PlanError, match="volume flocker-s-store is missing") as refused:
        VolumeProvider().update("flocker-s-store", {**VOLUME, "missing": True}, VOLUME)
    assert "restore it on node1" in str(refused.value) and "pulumi state delete" in str(refused.value)


@pytest.mark.usefixtures("volumes_gone")
def test_an_application_whose_volume_is_missing_is_not_started() -> None:
    """Docker would create the volume it mounts, empty and unlabelled."""
    with pytest.raises(PlanError, match="application store mounts volume flocker-s-store, which is missing"):
        ApplicationProvider().create(APPLICATION)
    with pytest.raises(PlanError, match="which is missing"):
        ApplicationProvider().update("flocker-s-store", APPLICATION, {**APPLICATION, "image": "es:2"})


N1, N2, N3 = NODES = tuple(Node(f"node{i}", f"10.0.0.{i}", f"tcp://10.0.0.{i}:2375") for i in (1, 2, 3))
ROUTING = {"route_nodes": [node_props(n) for n in NODES], "hold_seconds": 5.0, "router_image": "flocker/base:local"}
STORE = {
    "name": "store",
    "project": "p",
    "stack": "s",
    **node_props(N2),
    "node_error": None,
    "image": "es:1",
    "ports": [{"internal": 9200, "external": 9200}],
    "volume": {"name": "flocker-s-store", "node": "node2", "mountpoint": "/data"},
    **ROUTING,
}
NAME = "flocker-s-store"


def test_a_copy_started_by_hand_on_another_node_is_found_then_stopped_for_good_and_kept(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """After a move from node1 to node2, its container run by hand on node1 (on the retired
    copy there): found by a refresh, said by the diff, stopped (not removed) by the update,
    which leaves the copy on node2 serving and routed to, and the retired copy as it was."""
    hosts = fake_nodes(monkeypatch, NODES)
    volume_labels = L.owner_labels(Owner("p", "s", "store"), L.KIND_VOLUME)
    hosts[N2].volumes[NAME] = volume_labels
    created = ApplicationProvider().create(STORE)
    placed = hosts[N2].containers[NAME]
    hosts[N1].volumes[NAME] = volume_labels
    FakeContainers(hosts[N1]).create("flocker/base:local", name=f"{NAME}-retired", labels={L.VOLUME: NAME, L.RETIRED: "true"})
    stray = FakeContainers(hosts[N1]).run("es:1", name=NAME, labels=placed.labels)
    capsys.readouterr()

    read = ApplicationProvider().read(created.id, created.outs)
    assert read.outs["strays"] == [{"node": "node1", "container": NAME, "container_id": stray.id, "volume": NAME, "copy": "retired"}]
    diff = ApplicationProvider().diff(created.id, read.outs, STORE)
    found = f"found: application store also runs on node1 (container {NAME} {stray.id[:12]}), not only on node2: the update stops it there"
    assert diff.changes and found in capsys.readouterr().out

    starts = list(hosts[N2].starts)
    updated = ApplicationProvider().update(created.id, read.outs, STORE)
    said = capsys.readouterr().out
    assert (
        f"application store also runs on node1 (container {NAME} {stray.id[:12]}), not only on node2: stopping it there for good "
        f"(its restart policy too), kept, not removed: what it wrote is in volume {NAME} there, the retired copy of an earlier "
        "move, not in the live copy on node2; that copy stays as it is, marked retired"
    ) in said, said
    assert f"`docker -H tcp://10.0.0.1:2375 rm {NAME}`" in said
    assert (stray.status, stray.restart_policy) == ("exited", "no") and hosts[N1].containers[NAME] is stray
    assert hosts[N1].volumes[NAME] == volume_labels and f"{NAME}-retired" in hosts[N1].containers
    # The placed copy served throughout: not restarted, and every node routes to it.
    assert placed.status == "running" and hosts[N2].starts == starts and updated.outs["strays"] == []
    target = f"10.0.0.2:{placed.bindings['9200/tcp'][0]['HostPort']}"
    assert all(f'"target": "{target}"' in h.containers["flocker-s.router"].routes[9200].decode() for h in hosts.values())

    again = ApplicationProvider().read(created.id, updated.outs)
    assert again.outs["strays"] == [] and not ApplicationProvider().diff(created.id, again.outs, STORE).changes


def test_a_create_stops_a_copy_running_elsewhere(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Removed by hand where it was placed and run on node3 instead: the refresh drops it (gone
    from node2) and says what runs elsewhere; the create starts it on node2 and stops node3's,
    whose volume (made by Docker for the mount, not ours) it leaves alone."""
    hosts = fake_nodes(monkeypatch, NODES)
    hosts[N2].volumes[NAME] = L.owner_labels(Owner("p", "s", "store"), L.KIND_VOLUME)
    created = ApplicationProvider().create(STORE)
    labels = hosts[N2].containers.pop(NAME).labels
    hosts[N3].volumes[NAME] = {}
    stray = FakeContainers(hosts[N3]).run("es:1", name=NAME, labels=labels)
    capsys.readouterr()

    assert ApplicationProvider().read(created.id, created.outs).id == ""
    assert (
        f"found: application store also runs on node3 (container {NAME} {stray.id[:12]}), not only on node2: "
        "the next `pulumi up` stops it there"
    ) in capsys.readouterr().out
    ApplicationProvider().create(STORE)
    assert f"volume {NAME} there, which flocker-pulumi did not make and leaves alone" in capsys.readouterr().out
    assert hosts[N2].containers[NAME].status == "running" and (stray.status, stray.restart_policy) == ("exited", "no")
    assert hosts[N3].volumes[NAME] == {}
