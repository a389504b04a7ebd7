"""Drift: what the hooks do with a volume deleted by hand on its node (no engine needed)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from flocker_provider import dynamic_providers
from flocker_provider.dynamic_providers import ApplicationProvider, VolumeProvider
from flocker_provider.errors import PlanError
from flocker_provider.execution.executor import Engines
from flocker_provider.planning.models import Node, NodeVolumeState

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


@pytest.fixture(autouse=True)
def volumes_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    @contextlib.contextmanager
    def connect(_node: Node) -> Iterator[NoVolumes]:
        yield NoVolumes()

    monkeypatch.setattr(dynamic_providers, "connect", connect)
    monkeypatch.setattr(dynamic_providers, "Engines", lambda: Engines(connect))  # type: ignore[arg-type]


def test_a_refresh_keeps_a_missing_volume_and_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    # Dropped from the state instead, the next `up` would create it, empty.
    read = VolumeProvider().read("flocker-s-store", VOLUME)
    assert read.id == "flocker-s-store" and read.outs["missing"] is True
    assert "found: volume store is missing on node1: `pulumi up` will not create it again empty" in capsys.readouterr().out
    diff = VolumeProvider().diff("flocker-s-store", read.outs, VOLUME)
    assert diff.changes and not diff.replaces


def test_an_update_refuses_to_create_a_missing_volume_again() -> None:
    with pytest.raises(PlanError, match="volume flocker-s-store is missing") as refused:
        VolumeProvider().update("flocker-s-store", {**VOLUME, "missing": True}, VOLUME)
    assert "restore it on node1" in str(refused.value) and "pulumi state delete" in str(refused.value)


def test_an_application_whose_volume_is_missing_is_not_started() -> None:
    """Docker would create the volume it mounts, empty and unlabelled."""
    with pytest.raises(PlanError, match="application store mounts volume flocker-s-store, which is missing"):
        ApplicationProvider().create(APPLICATION)
    with pytest.raises(PlanError, match="which is missing"):
        ApplicationProvider().update("flocker-s-store", APPLICATION, {**APPLICATION, "image": "es:2"})
