"""The engine contract (tests/contract/engine_contract.py) against the in-memory fake; the
same tests run against a real node in tests/integration/test_engine_contract.py."""

from __future__ import annotations

import inspect

import pytest
from fake_engine import FakeEngine

from flocker_provider.docker_layer.docker_node import DockerNode
from flocker_provider.docker_layer.engine_protocol import Engine, VolumesAndContainers
from flocker_provider.planning.models import Node
from tests.contract.engine_contract import EngineContract, Subject


@pytest.fixture
def subject() -> Subject:
    engine = FakeEngine(Node("node1", "10.0.0.1", "tcp://10.0.0.1:2375"))
    return Subject(engine, "contract-fake", "flocker/base:local", engine.add_foreign_container, engine.add_foreign_volume)


class TestFakeEngine(EngineContract):
    """The contract, in memory."""


def _methods(protocol: type) -> dict[str, list[inspect.Parameter]]:
    """Name -> parameters of each method ``protocol`` lists, its bases' included."""
    found = {}
    for base in reversed(protocol.__mro__):
        for name, member in vars(base).items():
            if inspect.isfunction(member) and not name.startswith("_"):
                found[name] = list(inspect.signature(member).parameters.values())
    return found


@pytest.mark.parametrize(("engine", "protocol"), [(DockerNode, Engine), (FakeEngine, VolumesAndContainers)])
def test_an_engine_has_every_method_of_its_protocol_with_its_parameters(engine: type, protocol: type) -> None:
    """No type checker runs here: this is what it would check of the engines' arguments."""
    for name, parameters in _methods(protocol).items():
        assert list(inspect.signature(getattr(engine, name)).parameters.values()) == parameters, name
