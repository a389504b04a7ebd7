"""What each container we create may do (docs/architecture.md, "What our containers may do"):
the routers get the node's network and NET_ADMIN; a move's source helper, whose volume is
mounted read-only, gets SYS_ADMIN (btrfs's extent search wants it); applications and the other
helpers get nothing beyond Docker's defaults.

Each node is a stand-in engine (docker_fakes.py) under the real DockerNode; what the Docker
layer asks `containers.create` for is recorded."""

from __future__ import annotations

import pytest
from docker_fakes import FakeClient, FakeContainers, FakeHost, fake_nodes

from flocker_provider.docker_layer.docker_node import DockerNode
from flocker_provider.dynamic_providers import ApplicationProvider
from flocker_provider.inputs import node_props
from flocker_provider.planning.models import Node

NODES = tuple(Node(f"node{i}", f"10.0.0.{i}", f"tcp://10.0.0.{i}:2375") for i in (1, 2))
# Options that give a container more than Docker's defaults.
PRIVILEGES = ("privileged", "cap_add", "network_mode", "pid_mode", "ipc_mode", "devices", "security_opt", "userns_mode", "sysctls")


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict]:
    """Container name -> the privileges its creation asked for."""
    found: dict[str, dict] = {}
    create = FakeContainers.create

    def recorded(self: FakeContainers, image: str, name: str, **kwargs: object) -> object:
        found[name] = {key: kwargs[key] for key in PRIVILEGES if kwargs.get(key)}
        kept = {k: v for k, v in kwargs.items() if k in ("labels", "environment")}
        # The stand-in publishes fixed host ports only; a helper's is ephemeral (None).
        kept["ports"] = {k: v for k, v in (kwargs.get("ports") or {}).items() if v is not None}  # type: ignore[union-attr]
        return create(self, image, name=name, **kept)

    monkeypatch.setattr(FakeContainers, "create", recorded)
    return found


def test_routers_get_net_admin_the_source_helper_sys_admin(monkeypatch: pytest.MonkeyPatch, asked: dict[str, dict]) -> None:
    fake_nodes(monkeypatch, NODES)
    props = {
        "name": "web",
        "project": "p",
        "stack": "s",
        **node_props(NODES[0]),
        "node_error": None,
        "image": "app:1",
        "ports": [{"internal": 80, "external": 8080}],
        "route_nodes": [node_props(n) for n in NODES],
        "hold_seconds": 5.0,
        "router_image": "flocker/base:local",
    }
    ApplicationProvider().create(props)
    engine = DockerNode(NODES[1], FakeClient(FakeHost()))  # type: ignore[arg-type]
    engine.run_helper("flocker/base:local", "v-receive-1", ["true"], {}, "v", {"FLOCKER_SECRET": "x"}, 8730)
    engine.run_helper("flocker/base:local", "v-send-1", ["true"], {}, "v", read_only=True, searches_extents=True)
    routers = {name: options for name, options in asked.items() if name.endswith(".router")}
    assert routers
    assert all(options == {"network_mode": "host", "cap_add": ["NET_ADMIN"]} for options in routers.values()), routers
    assert asked["flocker-s-web"] == {} and asked["v-receive-1"] == {}, asked
    assert asked["v-send-1"] == {"cap_add": ["SYS_ADMIN"]}, asked
