"""Turning Pulumi property dicts into models, with every problem named for people.

The engine sends numbers as floats and leaves values unknown during preview, so this
module is the one place that knows the wire shape of our resources' inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import labels as L
from .models import (
    RESTART_POLICIES,
    Application,
    HealthCheck,
    Link,
    Node,
    Owner,
    Port,
    RestartPolicy,
    TLSConfig,
    VolumeMount,
)

Failure = tuple[str, str]  # (property, reason)

# Any image with rsync, python3 and a POSIX shell will do (it also runs the router);
# `make images` builds this one.
DEFAULT_TRANSFER_IMAGE = "flocker/base:local"
DEFAULT_HOLD_SECONDS = 30.0


class InvalidInputs(Exception):
    def __init__(self, failures: list[Failure]) -> None:
        super().__init__("; ".join(f"{p}: {r}" for p, r in failures))
        self.failures = failures


@dataclass(frozen=True)
class ApplicationInputs:
    owner: Owner
    node: Node
    application: Application
    volume_name: str | None
    volume_node: str | None
    wait_timeout: float
    routing: RoutingInputs


@dataclass(frozen=True)
class VolumeInputs:
    owner: Owner
    node: Node
    name: str
    maximum_size: int | None
    keep_retired: bool
    move_timeout: float
    transfer_image: str
    routing: RoutingInputs
    # Seconds a move may keep the application stopped for phase 2, as predicted: pre-copy
    # goes on until the prediction fits (or stops shrinking). QEMU's default downtime limit.
    downtime_budget: float = 0.3


@dataclass(frozen=True)
class RoutingInputs:
    """Every node that routes the stack's external ports, how long a cutover may hold
    connections, and the image the router runs in (the transfer image)."""

    nodes: tuple[Node, ...]
    hold_seconds: float
    image: str


def _int(value: Any, prop: str, failures: list[Failure], low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        failures.append((prop, f"expected a whole number, got {value!r}"))
        return low
    number = int(value)
    if number < low or (high is not None and number > high):
        bound = f"{low}-{high}" if high is not None else f">= {low}"
        failures.append((prop, f"expected a number {bound}, got {number}"))
    return number


def _optional_int(value: Any, prop: str, failures: list[Failure]) -> int | None:
    return None if value is None else _int(value, prop, failures, 1)


def node_from_props(props: dict) -> Node:
    tls = props.get("tls")
    tls_config = TLSConfig(tls["ca_cert"], tls["client_cert"], tls["client_key"]) if tls else None
    return Node(
        name=str(props.get("node") or ""),
        address=str(props.get("node_address") or ""),
        docker_host=str(props.get("docker_host") or ""),
        tls=tls_config,
    )


def node_props(node: Node) -> dict[str, Any]:
    """The inverse of `node_from_props`, for nodes remembered in outputs."""
    tls = node.tls
    return {
        "node": node.name,
        "node_address": node.address,
        "docker_host": node.docker_host,
        "tls": {"ca_cert": tls.ca_cert, "client_cert": tls.client_cert, "client_key": tls.client_key} if tls else None,
    }


def _node(props: dict, failures: list[Failure]) -> Node:
    if props.get("node_error"):
        failures.append(("node", props["node_error"]))
    return node_from_props(props)


def _owner(props: dict) -> Owner:
    return Owner(project=str(props.get("project", "")), stack=str(props.get("stack", "")), resource=str(props["name"]))


def _ports(raw: Any, failures: list[Failure]) -> tuple[Port, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        failures.append(("ports", "expected a list of {internal, external}"))
        return ()
    ports = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict) or set(entry) - {"internal", "external"} or len(entry) != 2:
            failures.append((f"ports[{i}]", f"expected {{internal, external}}, got {entry!r}"))
            continue
        ports.append(
            Port(
                internal=_int(entry["internal"], f"ports[{i}].internal", failures, 1, 65535),
                external=_int(entry["external"], f"ports[{i}].external", failures, 1, 65535),
            )
        )
    externals = [p.external for p in ports]
    for port in sorted({p for p in externals if externals.count(p) > 1}):
        failures.append(("ports", f"external port {port} is published twice"))
    return tuple(ports)


def _links(raw: Any, failures: list[Failure]) -> tuple[Link, ...]:
    if not raw:
        return ()
    links = []
    for i, entry in enumerate(raw):
        alias = entry.get("alias") if isinstance(entry, dict) else None
        if not isinstance(alias, str) or not alias:
            failures.append((f"links[{i}].alias", "expected a non-empty alias"))
            continue
        links.append(
            Link(
                alias=alias,
                local_port=_int(entry.get("local_port"), f"links[{i}].local_port", failures, 1, 65535),
                remote_port=_int(entry.get("remote_port"), f"links[{i}].remote_port", failures, 1, 65535),
            )
        )
    return tuple(links)


def _routing(props: dict, node: Node, failures: list[Failure]) -> RoutingInputs:
    raw = props.get("route_nodes") or []
    nodes = {n.name: n for n in (node_from_props(entry) for entry in raw if isinstance(entry, dict))}
    # The hosting node routes too, even when it is a bare address outside the node file.
    if node.name:
        nodes.setdefault(node.name, node)
    hold = props.get("hold_seconds")
    if hold is None:
        hold = DEFAULT_HOLD_SECONDS
    elif isinstance(hold, bool) or not isinstance(hold, (int, float)) or not 0 < hold <= 3600:
        failures.append(("hold_seconds", f"expected seconds between 0 and 3600, got {hold!r}"))
        hold = DEFAULT_HOLD_SECONDS
    image = str(props.get("router_image") or DEFAULT_TRANSFER_IMAGE)
    return RoutingInputs(nodes=tuple(sorted(nodes.values(), key=lambda n: n.name)), hold_seconds=float(hold), image=image)


def _restart_policy(raw: Any, failures: list[Failure]) -> RestartPolicy:
    if raw is None:
        return RestartPolicy()
    name = raw.get("name") if isinstance(raw, dict) else None
    if name not in RESTART_POLICIES:
        failures.append(("restart_policy.name", f"expected one of {', '.join(RESTART_POLICIES)}, got {name!r}"))
        return RestartPolicy()
    count = raw.get("maximum_retry_count")
    if count is not None:
        if name != "on-failure":
            failures.append(("restart_policy.maximum_retry_count", "only allowed with on-failure"))
        count = _int(count, "restart_policy.maximum_retry_count", failures, 0)
    return RestartPolicy(name=name, maximum_retry_count=count)


HEALTH_CHECK_KEYS = ("command", "interval", "timeout", "retries", "start_period")


def _seconds(value: Any, prop: str, failures: list[Failure], default: float, low: float) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= 3600:
        failures.append((prop, f"expected seconds between {low:g} and 3600, got {value!r}"))
        return default
    return float(value)


def _health_check(raw: Any, failures: list[Failure]) -> HealthCheck | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        failures.append(("health_check", f"expected {{command, interval, timeout, retries, start_period}}, got {raw!r}"))
        return None
    for key in sorted(set(raw) - set(HEALTH_CHECK_KEYS)):
        failures.append((f"health_check.{key}", f"unknown key; expected one of {', '.join(HEALTH_CHECK_KEYS)}"))
    command = raw.get("command")
    if isinstance(command, str) and command.strip():
        test: tuple[str, ...] = ("CMD-SHELL", command)
    elif isinstance(command, list) and command and all(isinstance(c, str) and c for c in command):
        test = ("CMD", *command)
    else:
        failures.append(("health_check.command", f"expected a shell command line or a list of arguments, got {command!r}"))
        test = ()
    # Docker runs the first check one interval after the start: that much is added to a move's downtime.
    return HealthCheck(
        command=test,
        interval=_seconds(raw.get("interval"), "health_check.interval", failures, 1.0, 0.1),
        timeout=_seconds(raw.get("timeout"), "health_check.timeout", failures, 5.0, 0.1),
        retries=_int(raw.get("retries", 3), "health_check.retries", failures, 1, 1000),
        start_period=_seconds(raw.get("start_period"), "health_check.start_period", failures, 0.0, 0.0),
    )


def parse_application(props: dict) -> ApplicationInputs:
    failures: list[Failure] = []
    node = _node(props, failures)
    image = props.get("image")
    if not isinstance(image, str) or not image.strip():
        failures.append(("image", "expected an image name such as 'repo:tag'; got an empty value"))
        image = ""
    environment = props.get("environment") or {}
    for key, value in environment.items():
        if not isinstance(value, str):
            failures.append((f"environment.{key}", f"must be a string; got type '{type(value).__name__}'"))
    volume = props.get("volume")
    mount = None
    if volume:
        mountpoint = volume.get("mountpoint")
        if not isinstance(mountpoint, str) or not mountpoint.startswith("/"):
            failures.append(("volume.mountpoint", f"must be an absolute path, got {mountpoint!r}"))
        else:
            mount = VolumeMount(volume=str(volume.get("name") or ""), mountpoint=mountpoint)
    links = _links(props.get("links"), failures)
    command = props.get("command")
    application = Application(
        name=str(props["name"]),
        image=image.strip(),
        ports=_ports(props.get("ports"), failures),
        environment=tuple(sorted((str(k), str(v)) for k, v in environment.items())),
        volume=mount,
        links=links,
        mem_limit=_optional_int(props.get("mem_limit"), "mem_limit", failures),
        cpu_shares=_optional_int(props.get("cpu_shares"), "cpu_shares", failures),
        restart_policy=_restart_policy(props.get("restart_policy"), failures),
        command=tuple(str(c) for c in command) if command else None,
        health_check=_health_check(props.get("health_check"), failures),
    )
    volume_node = str(volume.get("node")) if volume and volume.get("node") else None
    if volume_node and props.get("node") and volume_node != props.get("node"):
        failures.append(
            (
                "node",
                f"application is on '{props.get('node')}' but its volume is on '{volume_node}'; "
                "give both the same node (moving the volume moves the application with it)",
            )
        )
    routing = _routing(props, node, failures)
    if failures:
        raise InvalidInputs(failures)
    return ApplicationInputs(
        owner=_owner(props),
        node=node,
        application=application,
        volume_name=mount.volume if mount else None,
        volume_node=volume_node,
        wait_timeout=float(props.get("wait_timeout") or 120),
        routing=routing,
    )


def parse_volume(props: dict) -> VolumeInputs:
    failures: list[Failure] = []
    node = _node(props, failures)
    maximum_size = _optional_int(props.get("maximum_size"), "maximum_size", failures)
    budget = props.get("downtime_budget", 0.3)
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget <= 3600:
        failures.append(("downtime_budget", f"expected seconds between 0 and 3600, got {budget!r}"))
    routing = _routing(props, node, failures)
    if failures:
        raise InvalidInputs(failures)
    owner = _owner(props)
    return VolumeInputs(
        owner=owner,
        node=node,
        name=L.volume_name(owner),
        maximum_size=maximum_size,
        keep_retired=bool(props.get("keep_retired", True)),
        move_timeout=float(props.get("move_timeout") or 3600),
        transfer_image=str(props.get("transfer_image") or DEFAULT_TRANSFER_IMAGE),
        routing=routing,
        downtime_budget=float(budget),
    )
