"""The Docker-level description of one application's container, derived from the model."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass

from flocker_provider import on_node
from flocker_provider.planning import labels as L
from flocker_provider.planning.models import Application, HealthCheck, Link, Owner, Port, RestartPolicy
from flocker_provider.secret_values import SHOWN_AS

# The spec's fields each input becomes: a field is sealed when its input is a secret.
SEALED_BY_INPUT = {
    "image": "image",
    "environment": "environment",
    "ports": "ports",
    "volume": "mountpoint",
    "mem_limit": "mem_limit",
    "cpu_shares": "cpu_shares",
    "restart_policy": "restart_policy",
    "command": "command",
    "links": "links",
    "health_check": "health_check",
    "flush_command": "flush_command",
}
# The container's environment entry that holds its sealed fields (see ContainerSpec.recorded).
SEALED_VARIABLE = "FLOCKER_PULUMI_SEALED"


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
    # Fields given as secrets (sorted): kept out of the labels (see recorded).
    sealed: tuple[str, ...] = ()
    # Run in the container by a move before its last pre-copy round (steps.FlushApplication).
    flush_command: tuple[str, ...] | None = None

    @property
    def shown_image(self) -> str:
        """The image as lines and errors name it: a move's are its volume's, which does not know
        the application's secrets to blank them, and its report is recorded in the state."""
        return SHOWN_AS if "image" in self.sealed else self.image

    def config_hash(self) -> str:
        """Of every value, the sealed ones too; written as it is only for a spec with none sealed."""
        body = asdict(self)
        body["labels"] = [kv for kv in self.labels if kv[0] not in (L.CONFIG_HASH, L.SPEC)]
        # Containers started before health checks, secrets or flush commands existed keep
        # their hash: no restart on upgrade. A field made a secret, or no longer one, changes
        # it: the container is started again, labelled the new way.
        for optional in ("health_check", "sealed", "flush_command"):
            if not body[optional]:
                del body[optional]
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]

    def recorded(self) -> tuple[dict[str, str], dict[str, str]]:
        """The container's labels, and the environment entries of ours it starts with: how
        ``from_json`` and ``recorded_hash`` read the spec back.

        Labels are shown wherever containers are listed (``docker ps``, the list API, and
        whatever collects them: monitoring exports them), where the container's own
        environment is not; a move needs the spec from the container itself (one that arrived
        by a move runs the staging gate's ``Cmd``, not the application's). So the sealed
        fields are kept in an environment entry of ours, shown only to whoever may ``docker
        inspect`` the container, who sees its image, command and environment anyway. The
        config hash of a spec with sealed fields is written keyed, with a key kept in that
        entry: a plain hash of every other field and a guessable secret (an image tag) would
        let a label's reader check guesses."""
        labels = {**dict(self.labels), L.SPEC: self.to_json()}
        if not self.sealed:
            return {**labels, L.CONFIG_HASH: self.config_hash()}, {}
        key = secrets.token_hex(16)
        body = asdict(self)
        entry = {"key": key, "fields": {field: body[field] for field in self.sealed if field != "environment"}}
        return {**labels, L.CONFIG_HASH: _keyed(key, self.config_hash())}, {SEALED_VARIABLE: json.dumps(entry, sort_keys=True)}

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
        """The spec as its label records it: the environment by its names only (any value may be
        a secret; the values are read back from the container's environment), and without the
        sealed fields (``recorded``)."""
        body = asdict(self)
        body["environment"] = [name for name, _ in self.environment]
        for field in self.sealed:
            if field != "environment":
                del body[field]
        if not self.sealed:
            del body["sealed"]  # the label of a spec without secrets is the one of before
        if body.get("flush_command", ()) is None:
            del body["flush_command"]  # nor is the one of a spec without a flush command
        return json.dumps(body, sort_keys=True)

    @staticmethod
    def from_json(text: str, container_env: Sequence[str] = ()) -> ContainerSpec:
        """The spec of a container, from its label and its ``Config.Env`` (``NAME=value`` each)."""
        values = _variables(container_env)
        raw = {**json.loads(text), **_sealed_entry(values).get("fields", {})}
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
            sealed=tuple(raw.get("sealed", ())),
            flush_command=tuple(raw["flush_command"]) if raw.get("flush_command") is not None else None,
        )


def recorded_hash(labels: Mapping[str, str], container_env: Sequence[str]) -> str:
    """The config hash of the spec a container was started from, as ``recorded`` wrote it: the
    label's own, or for a spec with sealed fields the one of the spec read back, when the keyed
    label confirms it ("" otherwise: the container is replaced)."""
    found = labels.get(L.CONFIG_HASH, "")
    if L.SPEC not in labels or not json.loads(labels[L.SPEC]).get("sealed"):
        return found
    spec = ContainerSpec.from_json(labels[L.SPEC], container_env)
    key = str(_sealed_entry(_variables(container_env)).get("key", ""))
    return spec.config_hash() if key and hmac.compare_digest(_keyed(key, spec.config_hash()), found) else ""


def _keyed(key: str, config_hash: str) -> str:
    return hmac.new(bytes.fromhex(key), config_hash.encode(), hashlib.sha256).hexdigest()[:16]


def _variables(container_env: Sequence[str]) -> dict[str, str]:
    return dict(entry.split("=", 1) for entry in container_env if "=" in entry)


def _sealed_entry(values: Mapping[str, str]) -> dict:
    return json.loads(values[SEALED_VARIABLE]) if SEALED_VARIABLE in values else {}


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


def container_spec(app: Application, owner: Owner, volume_name: str | None, secret_inputs: Collection[str] = ()) -> ContainerSpec:
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
        flush_command=app.flush_command,
        links=tuple(sorted(app.links, key=lambda link: (link.alias, link.local_port, link.remote_port))),
        labels=tuple(sorted(L.owner_labels(owner, L.KIND_APPLICATION).items())),
        sealed=tuple(sorted(field for key, field in SEALED_BY_INPUT.items() if key in secret_inputs)),
    )
