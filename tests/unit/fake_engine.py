"""An engine in memory: ``engine_protocol.VolumesAndContainers``, which the contract suite
(tests/contract/engine_contract.py) holds it and the real DockerNode to, plus a record of the
route writes it is asked for (routers are not modelled: the contract does not cover them).

docker_fakes.py fakes docker-py instead, under the real DockerNode, to test the layer itself.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from flocker_provider.docker_layer.engine_protocol import ExitWatcher
from flocker_provider.errors import ContainerFailed, NotOurs
from flocker_provider.planning import labels as L
from flocker_provider.planning.containers import ContainerSpec, MountedContainer, RouterSpec, recorded_hash
from flocker_provider.planning.host_port_choice import host_ports
from flocker_provider.planning.models import Node, NodeVolumeState, Owner, RunningContainer

_ids = itertools.count()


@dataclass
class _Container:
    labels: dict[str, str]
    spec: ContainerSpec | None = None  # an application's; None for a copy's marker (retired or partial)
    volume: str | None = None
    running: bool = False
    environment: tuple[str, ...] = ()  # Config.Env, as Docker would hold it
    # False once stopped for good: its restart policy is gone (the engine restarting would not start it).
    restarts: bool = True
    id: str = field(default_factory=lambda: f"fake-{next(_ids)}")


class FakeEngine:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.volumes: dict[str, dict[str, str]] = {}
        self.containers: dict[str, _Container] = {}
        # External port -> the route last written for it, on any router.
        self.routes: dict[int, dict] = {}
        # Commands run in containers, in order, and what a test has one answer.
        self.commands: list[tuple[str, tuple[str, ...]]] = []
        self.answers: dict[tuple[str, ...], tuple[int | None, str]] = {}

    # -- what only a test does: objects of our names that flocker-pulumi did not create

    def add_foreign_container(self, name: str) -> None:
        self.containers[name] = _Container(labels={})

    def add_foreign_volume(self, name: str) -> None:
        self.volumes[name] = {}

    # -- volumes -----------------------------------------------------------------------

    def discover_volume(self, name: str) -> NodeVolumeState:
        if name not in self.volumes:
            return NodeVolumeState(name, exists=False)
        if not L.is_ours(self.volumes[name]):
            raise NotOurs(f"a volume named {name} exists that flocker-pulumi did not create", node=self.node.name)
        markers = self._markers(name)
        retired = L.retirement(name) in markers and L.RETIRED in markers[L.retirement(name)]
        return NodeVolumeState(name, exists=True, retired=retired, partial=any(L.PARTIAL in m for m in markers.values()))

    def volume_owner_is(self, name: str, owner: Owner) -> bool:
        return L.same_owner(self.volumes.get(name), owner)

    def create_volume(self, name: str, labels: dict[str, str]) -> None:
        if not self.discover_volume(name).exists:
            self.volumes[name] = dict(labels)

    def remove_volume(self, name: str) -> None:
        if self.discover_volume(name).exists:
            self.make_live(name)
            del self.volumes[name]

    def _markers(self, volume: str) -> dict[str, dict[str, str]]:
        return {name: c.labels for name, c in self.containers.items() if c.spec is None and c.labels.get(L.VOLUME) == volume}

    def retire_volume(self, volume: str, image: str, labels: dict[str, str]) -> None:
        if self.discover_volume(volume).retired:
            return
        prepared = self.containers.pop(L.prepared_retirement(volume), None)
        marker = {**labels, L.KIND: "retired-copy", L.RETIRED: "true", L.VOLUME: volume}
        self.containers[L.retirement(volume)] = prepared or _Container(labels=marker, volume=volume)

    def prepare_retirement(self, volume: str, image: str, labels: dict[str, str]) -> None:
        if not {L.retirement(volume), L.prepared_retirement(volume)} & set(self._markers(volume)):
            marker = {**labels, L.KIND: "retired-copy", L.RETIRED: "true", L.VOLUME: volume}
            self.containers[L.prepared_retirement(volume)] = _Container(labels=marker, volume=volume)

    def forget_retirement(self, volume: str) -> None:
        if L.prepared_retirement(volume) in self._markers(volume):
            del self.containers[L.prepared_retirement(volume)]

    def mark_partial(self, volume: str, image: str, labels: dict[str, str]) -> None:
        if not any(L.PARTIAL in m for m in self._markers(volume).values()):
            marker = {**labels, L.KIND: "partial-copy", L.PARTIAL: "true", L.VOLUME: volume}
            self.containers[f"{volume}.partial"] = _Container(labels=marker, volume=volume)

    def make_live(self, volume: str) -> None:
        for name in [name for name, c in self.containers.items() if c.spec is None and c.labels.get(L.VOLUME) == volume]:
            del self.containers[name]

    def mounting_containers(self, volume: str) -> tuple[MountedContainer, ...]:
        found = [MountedContainer(c.spec.name, c.spec, c.running) for c in self.containers.values() if c.spec and c.volume == volume]
        return tuple(sorted(found, key=lambda c: c.name))

    # -- containers --------------------------------------------------------------------

    def _find(self, name: str) -> _Container | None:
        container = self.containers.get(name)
        if container is not None and not L.is_ours(container.labels):
            raise NotOurs(f"a container named {name} exists that flocker-pulumi did not create", node=self.node.name)
        return container

    def discover_application(self, name: str) -> RunningContainer | None:
        container = self._find(name)
        if container is None:
            return None
        return RunningContainer(name, container.id, container.running, recorded_hash(container.labels, container.environment))

    def container_owner_is(self, name: str, owner: Owner) -> bool:
        container = self.containers.get(name)
        return container is not None and L.same_owner(container.labels, owner)

    def start_container(self, spec: ContainerSpec) -> str:
        assert spec.name not in self.containers, f"Docker refuses a second container named {spec.name}"
        labels, ours = spec.recorded()
        environment = tuple(f"{name}={value}" for name, value in {**spec.on_node(self.node.address)[0], **ours}.items())
        container = self.containers[spec.name] = _Container(labels, spec, spec.volume_name, running=True, environment=environment)
        return container.id

    def start_existing(self, name: str) -> None:
        container = self._find(name)
        if container is not None:
            container.running = True

    def wait_running(self, name: str, timeout: float) -> None:
        container = self._find(name)
        if container is None or not container.running:
            raise ContainerFailed(f"{name} is not running", node=self.node.name)

    def watch_exit(self, name: str) -> ExitWatcher | None:
        self._find(name)
        # In memory nothing ends on its own: no watch, as over a transport that cannot hijack.
        return None

    def run_in_container(self, name: str, command: tuple[str, ...], timeout: float) -> tuple[int | None, str]:
        container = self._find(name)
        if container is None or not container.running:
            raise ContainerFailed(f"{name} is not running", node=self.node.name)
        self.commands.append((name, command))
        # Nothing runs in memory: a test says what a command answers; true and false answer as they do.
        return self.answers.get(command, (1, "") if command == ("false",) else (0, ""))

    def stop_container(self, name: str, timeout: int = 10) -> None:
        container = self._find(name)
        if container is not None:
            container.running = False

    def stop_for_good(self, name: str, timeout: int = 10) -> None:
        container = self._find(name)
        if container is not None:
            container.running = False
            container.restarts = False

    def remove_container(self, name: str, timeout: int = 10) -> None:
        if self._find(name) is not None:
            del self.containers[name]

    def published_ports(self, name: str) -> dict[int, int]:
        container = self._find(name)
        if container is None or container.spec is None:
            raise ContainerFailed(f"container {name} is not there to route to", node=self.node.name)
        if not container.running:
            return {}
        # The real layer's choice when no port is taken: the same on every start.
        return host_ports(name, [port.internal for port in container.spec.ports], 0, ())

    # -- routes, recorded --------------------------------------------------------------

    def point_routes(self, router: RouterSpec, routes: dict[int, dict]) -> None:
        self.routes.update(routes)

    def read_routes(self, router: RouterSpec) -> dict[int, dict]:
        return dict(self.routes)
