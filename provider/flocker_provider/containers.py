"""The Docker-level description of one application's container, derived from the model."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from . import labels as L
from . import on_node
from .models import Application, HealthCheck, Link, Owner, Port, RestartPolicy


@dataclass(frozen=True)
class ContainerSpec:
    """Everything Docker needs to run an application; equal specs mean nothing to change."""

    name: str
    image: str
    environment: tuple[tuple[str, str], ...] = ()
    ports: tuple[Port, ...] = ()
    volume_name: str | None = None
    mountpoint: str | None = None
    mem_limit: int | None = None
    cpu_shares: int | None = None
    restart_policy: RestartPolicy = RestartPolicy()
    command: tuple[str, ...] | None = None
    links: tuple[Link, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    health_check: HealthCheck | None = None

    def config_hash(self) -> str:
        body = asdict(self)
        body["labels"] = [kv for kv in self.labels if kv[0] not in (L.CONFIG_HASH, L.SPEC)]
        if self.health_check is None:
            # Containers started before health checks existed keep their hash: no restart on upgrade.
            del body["health_check"]
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]

    def docker_labels(self) -> dict[str, str]:
        found = dict(self.labels)
        found[L.CONFIG_HASH] = self.config_hash()
        found[L.SPEC] = self.to_json()
        return found

    def on_node(self, address: str) -> tuple[dict[str, str], dict[str, str]]:
        """Environment and extra host entries of the container on the node at ``address``.

        Links name the container's own node, whose router forwards the target's external
        port to wherever the target runs. They are filled in here, when the container
        starts, so the spec does not depend on the node: a container moved with its volume
        starts from the same spec and its own update then has nothing to change.
        """
        environment = dict(self.environment)
        for link in self.links:
            environment.update(link_environment(link, address))
        return environment, {link.alias: address for link in self.links}

    def to_json(self) -> str:
        """The spec as its label records it, the environment by its names only: any value may be
        a secret, and labels are shown wherever containers are listed (``docker ps``, the list
        API), where the container's own environment is not. The values are read back from it
        (``from_json``). The config hash is of the values too: whoever may read a label may
        ``docker inspect`` the environment itself, so it tells them nothing more."""
        body = asdict(self)
        body["environment"] = [name for name, _ in self.environment]
        return json.dumps(body, sort_keys=True)

    @staticmethod
    def from_json(text: str, container_env: Sequence[str] = ()) -> ContainerSpec:
        """The spec of a container, from its label and its ``Config.Env`` (``NAME=value`` each)."""
        raw = json.loads(text)
        values = dict(entry.split("=", 1) for entry in container_env if "=" in entry)
        return ContainerSpec(
            name=raw["name"],
            image=raw["image"],
            # Containers labelled before recorded the values too.
            environment=tuple((entry, values[entry]) if isinstance(entry, str) else tuple(entry) for entry in raw["environment"]),
            ports=tuple(Port(**p) for p in raw["ports"]),
            volume_name=raw["volume_name"],
            mountpoint=raw["mountpoint"],
            mem_limit=raw["mem_limit"],
            cpu_shares=raw["cpu_shares"],
            restart_policy=RestartPolicy(**raw["restart_policy"]),
            command=tuple(raw["command"]) if raw["command"] is not None else None,
            # Containers started before links were node-independent have none recorded.
            links=tuple(Link(**link) for link in raw.get("links", [])),
            labels=tuple(tuple(kv) for kv in raw["labels"]),
            health_check=_health_check_from_json(raw.get("health_check")),
        )


def _health_check_from_json(raw: dict | None) -> HealthCheck | None:
    return None if raw is None else HealthCheck(**{**raw, "command": tuple(raw["command"])})


@dataclass(frozen=True)
class RouterSpec:
    """The router of one stack on a node: a container on the host network, routes in a volume."""

    name: str
    volume: str
    image: str
    labels: tuple[tuple[str, str], ...]

    @property
    def predecessor(self) -> str:
        """The name an older router runs under while this one takes over from it."""
        return f"{self.name}.old"

    def program_hash(self) -> str:
        """Changes with the router's modules or image, so an upgraded provider replaces old routers."""
        return hashlib.sha256(self.image.encode() + b"\0" + on_node.archive(on_node.ROUTER)).hexdigest()[:16]


def router_spec(project: str, stack: str, image: str) -> RouterSpec:
    owner = Owner(project=project, stack=stack, resource="router")
    return RouterSpec(
        name=L.router_name(stack),
        volume=L.router_name(stack),
        image=image,
        labels=tuple(sorted(L.owner_labels(owner, L.KIND_ROUTER).items())),
    )


@dataclass(frozen=True)
class MountedContainer:
    """A container of ours found mounting a volume, with the spec it was started from."""

    name: str
    spec: ContainerSpec
    running: bool


def link_environment(link: Link, address: str) -> tuple[tuple[str, str], ...]:
    """Docker-link-style variables, as Flocker injected them."""
    alias = link.alias.upper().replace("-", "_")
    base = f"{alias}_PORT_{link.local_port}_TCP"
    return (
        (base, f"tcp://{address}:{link.remote_port}"),
        (f"{base}_ADDR", address),
        (f"{base}_PORT", str(link.remote_port)),
        (f"{base}_PROTO", "tcp"),
    )


def container_spec(app: Application, owner: Owner, volume_name: str | None) -> ContainerSpec:
    return ContainerSpec(
        name=L.container_name(owner),
        image=app.image,
        environment=app.environment,
        ports=tuple(sorted(app.ports, key=lambda p: (p.external, p.internal))),
        volume_name=volume_name,
        mountpoint=app.volume.mountpoint if app.volume else None,
        mem_limit=app.mem_limit,
        cpu_shares=app.cpu_shares,
        restart_policy=app.restart_policy,
        command=app.command,
        health_check=app.health_check,
        links=tuple(sorted(app.links, key=lambda link: (link.alias, link.local_port, link.remote_port))),
        labels=tuple(sorted(L.owner_labels(owner, L.KIND_APPLICATION).items())),
    )
