"""A stand-in Docker engine for the real DockerNode: one node's containers, volumes and TCP
ports, which published host ports and the router's listeners share, as on a real node (a
container cannot publish a port the router listens on, and a router cannot route a port a
container publishes)."""

from __future__ import annotations

import contextlib
import io
import itertools
import re
import tarfile
from collections.abc import Iterator
from types import SimpleNamespace

import docker.errors
import pytest

from flocker_provider import dynamic_providers
from flocker_provider.docker_layer import router_lifecycle
from flocker_provider.docker_layer.docker_node import DockerNode
from flocker_provider.docker_layer.route_writer import COMMAND
from flocker_provider.execution import executor, migration
from flocker_provider.execution.executor import Engines
from flocker_provider.planning.models import Node

_ids = itertools.count()


class FakeHost:
    """A node: its containers and volumes, who holds each of its TCP ports, and the images it
    lacks (which no registry has either)."""

    def __init__(self) -> None:
        self.containers: dict[str, FakeContainer] = {}
        self.volumes: dict[str, dict] = {}
        self.bound: dict[int, str] = {}
        self.starts: list[str] = []
        self.missing_images: set[str] = set()

    def bind(self, port: int, holder: str) -> bool:
        if self.bound.setdefault(port, holder) != holder:
            return False
        return True

    def release(self, holder: str) -> None:
        self.bound = {port: who for port, who in self.bound.items() if who != holder}


class FakeContainer:
    def __init__(self, host: FakeHost, name: str, labels: dict, ports: dict | None, environment: dict | None = None) -> None:
        self.host, self.name, self.labels = host, name, dict(labels)
        self.environment = dict(environment or {})
        self.id = f"{name}-{next(_ids)}"
        self.status = "created"
        self.bindings = {key: [{"HostIp": ip, "HostPort": str(port)}] for key, (ip, port) in (ports or {}).items()}
        self.routes: dict[int, bytes] = {}
        self.restart_policy = "as created"
        self.vanishing = False  # removed by someone else between a list and its inspect

    @property
    def attrs(self) -> dict:
        running = self.status == "running"
        return {
            "Config": {"Env": [f"{name}={value}" for name, value in self.environment.items()]},
            "HostConfig": {"PortBindings": self.bindings},
            "NetworkSettings": {"Ports": self.bindings if running else {}},
            "State": {"StartedAt": self.id},
            "RestartCount": 0,
        }

    def start(self) -> None:
        ports = [int(b["HostPort"]) for bound in self.bindings.values() for b in bound]
        taken = [port for port in ports if not self.host.bind(port, self.name)]
        if taken:
            self.host.release(self.name)
            raise docker.errors.APIError(f"Bind for 0.0.0.0:{taken[0]} failed: port is already allocated")
        self.status = "running"
        self.host.starts.append(self.name)

    def stop(self, timeout: int = 10) -> None:
        self.status = "exited"
        self.host.release(self.name)

    def remove(self, force: bool = False) -> None:
        self.stop()
        del self.host.containers[self.name]

    def rename(self, name: str) -> None:
        assert name not in self.host.containers, f"Docker refuses a second container named {name}"
        self.host.containers[name] = self.host.containers.pop(self.name)
        self.name = name

    def reload(self) -> None:
        pass

    def update(self, restart_policy: dict) -> None:
        self.restart_policy = restart_policy["Name"]

    def logs(self, tail: int | None = None) -> bytes:
        return b""

    def exec_run(self, cmd: list[str]) -> SimpleNamespace:
        """The router's route writer: a route is in force once the router listens on its port."""
        answers = []
        if cmd[: len(COMMAND)] == COMMAND:
            for line in cmd[len(COMMAND) :]:
                port, _, body = line.partition(" ")
                if self.host.bind(int(port), self.name):
                    self.routes[int(port)] = body.encode()
                    answers.append(f"ok {port}")
                else:
                    answers.append(f"late {port}")
        elif cmd[:2] == ["rm", "-f"]:
            for path in cmd[2:]:
                port = int(re.search(r"(\d+)\.json$", path).group(1))
                self.routes.pop(port, None)
                self.host.bound.pop(port, None)
        return SimpleNamespace(exit_code=0, output="\n".join(answers).encode())

    def put_archive(self, path: str, data: bytes) -> bool:
        return True

    def get_archive(self, path: str) -> tuple[list[bytes], dict]:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            for port, body in self.routes.items():
                member = tarfile.TarInfo(f"ports/{port}.json")
                member.size = len(body)
                archive.addfile(member, io.BytesIO(body))
        return [buffer.getvalue()], {}


def lookup(table: dict, name: str, kind: str) -> object:
    if name not in table:
        raise docker.errors.NotFound(f"No such {kind}: {name}")
    return table[name]


class FakeContainers:
    def __init__(self, host: FakeHost) -> None:
        self.host = host

    def get(self, name: str) -> object:
        return lookup(self.host.containers, name, "container")

    def list(self, all: bool = False, filters: dict | None = None, ignore_removed: bool = False) -> list[FakeContainer]:
        wanted = [label.partition("=") for label in (filters or {}).get("label", [])]
        found = [
            c
            for c in self.host.containers.values()
            if (all or c.status == "running") and all_match(c.labels, wanted) and "volume" not in (filters or {})
        ]
        # As docker-py: it lists, then inspects each; one removed in between is NotFound, unless ignored.
        for c in found:
            if c.vanishing and not ignore_removed:
                raise docker.errors.NotFound(f"No such container: {c.id}")
        return [c for c in found if not c.vanishing]

    def create(
        self, image: str, name: str, ports: dict | None = None, labels: dict | None = None, environment: dict | None = None, **_: object
    ) -> FakeContainer:
        assert name not in self.host.containers, name
        container = self.host.containers[name] = FakeContainer(self.host, name, labels or {}, ports, environment)
        return container

    def run(self, image: str, name: str, labels: dict, **_: object) -> FakeContainer:
        container = self.create(image, name=name, labels=labels)
        container.start()
        return container


def all_match(labels: dict, wanted: list[tuple[str, str, str]]) -> bool:
    return all(labels.get(key) == value if sep else key in labels for key, sep, value in wanted)


class FakeClient:
    def __init__(self, host: FakeHost) -> None:
        self.containers = FakeContainers(host)
        self.host = host
        self.volumes = SimpleNamespace(
            get=lambda name: SimpleNamespace(
                attrs={"Labels": lookup(host.volumes, name, "volume")}, remove=lambda force=False: host.volumes.pop(name)
            ),
            create=lambda name, labels: host.volumes.update({name: labels}),
        )
        self.images = SimpleNamespace(get=self._image, pull=self._pull)
        self.api = None  # no attached execs: route writes go an exec each

    def _image(self, image: str) -> SimpleNamespace:
        if image in self.host.missing_images:
            raise docker.errors.ImageNotFound(f"No such image: {image}")
        return SimpleNamespace(attrs={"Config": {}})

    def _pull(self, repository: str, tag: str) -> None:
        raise docker.errors.APIError("500 Server Error", explanation=f"pull access denied for {repository}, repository does not exist")

    def ping(self) -> bool:
        return True

    def df(self) -> dict:
        return {"Volumes": [{"Name": name, "UsageData": {"Size": 0}} for name in self.host.volumes]}


def fake_nodes(monkeypatch: pytest.MonkeyPatch, nodes: tuple[Node, ...]) -> dict[Node, FakeHost]:
    """The hooks (and the moves they run) reach ``nodes`` as stand-ins, from now to the test's end."""
    fakes = {node: FakeHost() for node in nodes}

    @contextlib.contextmanager
    def connect(node: Node) -> Iterator[DockerNode]:
        yield DockerNode(node, FakeClient(fakes[node]))  # type: ignore[arg-type]

    for module in (dynamic_providers, migration):
        monkeypatch.setattr(module, "connect", connect)
        monkeypatch.setattr(module, "Engines", lambda: Engines(connect))
    monkeypatch.setattr(executor, "CONFIRM_SECONDS", 0)

    def refused(address: tuple[str, int], timeout: float) -> None:
        raise ConnectionRefusedError(address)

    # The check's probe for programs outside Docker: none on these nodes.
    monkeypatch.setattr(router_lifecycle.socket, "create_connection", refused)
    return fakes
