"""Turning Pulumi property dicts into models, with every problem named for people.

The engine sends numbers as floats and leaves values unknown during preview, so this
module is the one place that knows the wire shape of our resources' inputs.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from flocker_provider.planning import labels as L
from flocker_provider.planning.containers import SEALED_VARIABLE
from flocker_provider.planning.models import (
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
from flocker_provider.secret_values import secret_keys

Failure = tuple[str, str]  # (property, reason)

# Any image with rsync, python3 and a POSIX shell will do (it also runs the router);
# `make images` builds this one.
DEFAULT_TRANSFER_IMAGE = "flocker/base:local"
DEFAULT_HOLD_SECONDS = 30.0
DEFAULT_STALL_TIMEOUT = 30.0
# A week: longer than any start or move should take, short enough to be a number of seconds.
MAX_TIMEOUT = 7 * 24 * 3600

# Names are checked here, before they reach Docker, by Docker's own rules; application.yml and
# deployment.yml are checked by the same ones (flocker_config imports them).
# Docker's rule for container (and volume) names: an application's container is flocker-<stack>-<name>.
DOCKER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
# Pulumi's rule for stack names, which are part of every container, volume and router name.
STACK_NAME = re.compile(r"[a-zA-Z0-9_.-]*")
# An alias is a host name in the linking container's /etc/hosts and the prefix of its
# variables (ES_PORT_9200_TCP): no dots, no spaces.
LINK_ALIAS = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_-]*")
# Docker splits NAME=value at the first '='; a space or control character makes a name no shell can use.
ENV_NAME = re.compile(r"[^=\s\x00-\x1f\x7f]+")
# A host name or IPv4 address, or an IPv6 address: node names and addresses end up in ssh://
# and tcp:// URLs and on ssh's command line, where anything else could be read as an option.
NODE_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*|[0-9a-fA-F.]*:[0-9a-fA-F:.]*")
# A volume mounted over these hides what the container needs to run, or hands the kernel's own
# interfaces to the application, as data that would be copied when it moves.
SYSTEM_DIRECTORIES = ("/etc",)
SYSTEM_TREES = ("/proc", "/sys", "/dev")
TLS_KEYS = ("ca_cert", "client_cert", "client_key")


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
    # The inputs given as secrets (their names): the container's spec keeps them out of its labels.
    secret_inputs: frozenset[str] = frozenset()


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
    # Seconds a move's copy may go without progress before its step fails (a cut link would
    # otherwise wait for TCP's own timeouts, or for move_timeout).
    stall_timeout: float = DEFAULT_STALL_TIMEOUT


@dataclass(frozen=True)
class RoutingInputs:
    """Every node that routes the stack's external ports, how long a cutover may hold
    connections, and the image the router runs in (the transfer image)."""

    nodes: tuple[Node, ...]
    hold_seconds: float
    image: str


def checked_mountpoint(path: object) -> str:
    """``path`` normalised (a trailing '/' or a '.' is no configuration change); ValueError says
    why it cannot be a volume's mountpoint."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"expected an absolute path such as '/var/lib/data', got {path!r}")
    if ".." in path.split("/"):
        raise ValueError(f"expected a path without '..', got {path!r}")
    if ":" in path or not path.isprintable():
        # Docker reads what follows a ':' as the mount's options.
        raise ValueError(f"expected a path without ':' or control characters, got {path!r}")
    # normpath keeps a leading '//' (POSIX leaves its meaning open); in a container it is '/'.
    normal = "/" + posixpath.normpath(path).lstrip("/")
    if normal == "/":
        raise ValueError("the volume cannot be mounted over the container's root '/'")
    if normal in SYSTEM_DIRECTORIES or any(normal == tree or normal.startswith(f"{tree}/") for tree in SYSTEM_TREES):
        raise ValueError(f"the volume cannot be mounted at {normal!r}: /etc, and /proc, /sys, /dev and all in them, belong to the system")
    return normal


def _matches(value: object, rule: re.Pattern[str]) -> bool:
    return isinstance(value, str) and rule.fullmatch(value) is not None


def _int(value: Any, prop: str, failures: list[Failure], low: int, high: int | None = None) -> int:
    # is_integer: NaN and infinity are floats int() cannot convert.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
        failures.append((prop, f"expected a whole number, got {value!r}"))
        return low
    number = int(value)
    if number < low or (high is not None and number > high):
        bound = f"{low}-{high}" if high is not None else f">= {low}"
        failures.append((prop, f"expected a number {bound}, got {number}"))
    return number


def _optional_int(value: Any, prop: str, failures: list[Failure]) -> int | None:
    # Docker's fields are 64-bit: a larger number would be refused only by the engine, mid-deploy.
    return None if value is None else _int(value, prop, failures, 1, 2**63 - 1)


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


def inventory_text(nodes: Iterable[Node]) -> str:
    """The nodes that route, as one JSON text: every resource carries the whole inventory, and
    the Pulumi engine writes each nested value of every property it sends or receives to its
    own log (3.260: `pulumi/logs`, no opt-out), so a list of five mappings in each of 200
    resources cost a preview 1.3 s more than the same data as one string (docs/architecture.md)."""
    return json.dumps([node_props(node) for node in nodes], separators=(",", ":"), sort_keys=True)


def inventory_entries(raw: Any) -> Any:
    """``route_nodes`` as the list of node mappings it stands for: stacks recorded before
    carry the list itself, newer ones its text; anything else is returned as it is."""
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def _node(props: dict, failures: list[Failure]) -> Node:
    if props.get("node_error"):
        failures.append(("node", str(props["node_error"])))
    elif not props.get("node"):
        failures.append(("node", "missing; name a node from the node file or give an address"))
    return _checked_node(props, "", failures)


def _checked_node(props: dict, prefix: str, failures: list[Failure]) -> Node:
    """``node_from_props`` for inputs, which may hold anything: what could not reach Docker safely is a failure."""
    for key in ("node", "node_address"):
        value = props.get(key)
        if value not in (None, "") and not _matches(value, NODE_NAME):
            failures.append((f"{prefix}{key}", f"expected a node name or address (letters, digits, '.', '-', '_', or IPv6), got {value!r}"))
    if not isinstance(props.get("docker_host") or "", str):
        failures.append((f"{prefix}docker_host", f"expected a Docker endpoint such as 'tcp://host:2376', got {props['docker_host']!r}"))
    tls = props.get("tls")
    if tls and not (isinstance(tls, dict) and all(isinstance(tls.get(key), str) for key in TLS_KEYS)):
        failures.append((f"{prefix}tls", f"expected {{{', '.join(TLS_KEYS)}}} as file names, got {tls!r}"))
        props = {**props, "tls": None}
    return node_from_props(props)


def _owner(props: dict, failures: list[Failure]) -> Owner:
    name, stack, project = props.get("name"), props.get("stack", ""), props.get("project", "")
    if not _matches(name, DOCKER_NAME):
        failures.append(
            ("name", f"expected a name of letters, digits, '_', '.' and '-', starting with a letter or digit (Docker's rule), got {name!r}")
        )
    if not _matches(stack, STACK_NAME):
        failures.append(("stack", f"expected a stack name of letters, digits, '_', '.' and '-', got {stack!r}"))
    if not isinstance(project, str):
        failures.append(("project", f"expected a project name, got {project!r}"))
    return Owner(project=str(project), stack=str(stack), resource=str(name))


def _text(props: dict, key: str, default: str, failures: list[Failure]) -> str:
    value = props.get(key) or default
    if not isinstance(value, str):
        failures.append((key, f"expected a string, got {value!r}"))
        return default
    return value


def _timeout(value: Any, prop: str, failures: list[Failure], default: float) -> float:
    # Nothing (or 0) is the default, as it always was.
    return _seconds(value or None, prop, failures, default, 0.1, MAX_TIMEOUT)


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
    if not isinstance(raw, list):
        failures.append(("links", f"expected a list of {{alias, local_port, remote_port}}, got {raw!r}"))
        return ()
    links = []
    for i, entry in enumerate(raw):
        alias = entry.get("alias") if isinstance(entry, dict) else None
        if not _matches(alias, LINK_ALIAS):
            reason = f"expected an alias of letters, digits, '_' and '-', starting with a letter or digit, got {alias!r}"
            failures.append((f"links[{i}].alias", reason))
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
    raw = inventory_entries(props.get("route_nodes")) or []
    if not isinstance(raw, list):
        failures.append(("route_nodes", f"expected a list of nodes or its JSON text, got {raw!r}"))
        raw = []
    nodes: dict[str, Node] = {}
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict):
            failures.append((f"route_nodes[{i}]", f"expected a node, got {entry!r}"))
            continue
        routed = _checked_node(entry, f"route_nodes[{i}].", failures)
        nodes[routed.name] = routed
    # The hosting node routes too, even when it is a bare address outside the node file.
    if node.name:
        nodes.setdefault(node.name, node)
    hold = props.get("hold_seconds")
    if hold is None:
        hold = DEFAULT_HOLD_SECONDS
    elif isinstance(hold, bool) or not isinstance(hold, (int, float)) or not 0 < hold <= 3600:
        failures.append(("hold_seconds", f"expected seconds between 0 and 3600, got {hold!r}"))
        hold = DEFAULT_HOLD_SECONDS
    image = _text(props, "router_image", DEFAULT_TRANSFER_IMAGE, failures)
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


def _seconds(value: Any, prop: str, failures: list[Failure], default: float, low: float, high: float = 3600) -> float:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        failures.append((prop, f"expected seconds between {low:g} and {high:g}, got {value!r}"))
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


def _environment(raw: Any, failures: list[Failure]) -> tuple[tuple[str, str], ...]:
    if not raw:
        return ()
    if not isinstance(raw, dict):
        failures.append(("environment", f"expected a mapping of variable names to strings, got {raw!r}"))
        return ()
    for key, value in raw.items():
        if not _matches(key, ENV_NAME):
            failures.append((f"environment.{key}", f"expected a variable name without '=', spaces or control characters, got {key!r}"))
        elif key == SEALED_VARIABLE:
            failures.append(
                (f"environment.{key}", "is flocker-pulumi's own (where a container keeps its secret settings): choose another name")
            )
        elif not isinstance(value, str):
            failures.append((f"environment.{key}", f"must be a string; got type '{type(value).__name__}'"))
        elif "\x00" in value:
            failures.append((f"environment.{key}", "a value cannot hold a NUL character"))
    return tuple(sorted((str(k), str(v)) for k, v in raw.items()))


def _volume(raw: Any, failures: list[Failure]) -> tuple[VolumeMount | None, str | None]:
    """The mount and the node the volume is on, if the application has one."""
    if not raw:
        return None, None
    if not isinstance(raw, dict):
        failures.append(("volume", f"expected {{name, node, mountpoint}}, got {raw!r}"))
        return None, None
    name, node = raw.get("name"), raw.get("node") or None
    if not _matches(name, DOCKER_NAME):
        failures.append(("volume.name", f"expected a Docker volume name, got {name!r}"))
    if node is not None and not _matches(node, NODE_NAME):
        failures.append(("volume.node", f"expected a node name or address, got {node!r}"))
    try:
        mountpoint = checked_mountpoint(raw.get("mountpoint"))
    except ValueError as exc:
        failures.append(("volume.mountpoint", str(exc)))
        return None, node
    return VolumeMount(volume=str(name), mountpoint=mountpoint), node


def _command(raw: Any, failures: list[Failure], prop: str = "command") -> tuple[str, ...] | None:
    if not raw:
        return None
    # A string would run as one argument per character.
    if not isinstance(raw, list) or not all(isinstance(arg, str) and "\x00" not in arg for arg in raw):
        failures.append((prop, f"expected a list of arguments (strings), got {raw!r}"))
        return None
    return tuple(raw)


def parse_application(props: dict) -> ApplicationInputs:
    failures: list[Failure] = []
    owner = _owner(props, failures)
    node = _node(props, failures)
    image = props.get("image")
    if not isinstance(image, str) or not image.strip():
        failures.append(("image", "expected an image name such as 'repo:tag'; got an empty value"))
        image = ""
    environment = _environment(props.get("environment"), failures)
    mount, volume_node = _volume(props.get("volume"), failures)
    links = _links(props.get("links"), failures)
    application = Application(
        name=owner.resource,
        image=image.strip(),
        ports=_ports(props.get("ports"), failures),
        environment=environment,
        volume=mount,
        links=links,
        mem_limit=_optional_int(props.get("mem_limit"), "mem_limit", failures),
        cpu_shares=_optional_int(props.get("cpu_shares"), "cpu_shares", failures),
        restart_policy=_restart_policy(props.get("restart_policy"), failures),
        command=_command(props.get("command"), failures),
        health_check=_health_check(props.get("health_check"), failures),
        flush_command=_command(props.get("flush_command"), failures, "flush_command"),
    )
    wait_timeout = _timeout(props.get("wait_timeout"), "wait_timeout", failures, 120.0)
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
        owner=owner,
        node=node,
        application=application,
        volume_name=mount.volume if mount else None,
        volume_node=volume_node,
        wait_timeout=wait_timeout,
        routing=routing,
        secret_inputs=frozenset(secret_keys(props)),
    )


def parse_volume(props: dict) -> VolumeInputs:
    failures: list[Failure] = []
    owner = _owner(props, failures)
    node = _node(props, failures)
    maximum_size = _optional_int(props.get("maximum_size"), "maximum_size", failures)
    budget = props.get("downtime_budget", 0.3)
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget <= 3600:
        failures.append(("downtime_budget", f"expected seconds between 0 and 3600, got {budget!r}"))
    keep_retired = True if props.get("keep_retired") is None else props["keep_retired"]
    if not isinstance(keep_retired, bool):
        failures.append(("keep_retired", f"expected true or false, got {keep_retired!r}"))
    move_timeout = _timeout(props.get("move_timeout"), "move_timeout", failures, 3600.0)
    # At least a second: the copy programs show progress four times per stall timeout.
    stall_timeout = _seconds(props.get("stall_timeout"), "stall_timeout", failures, DEFAULT_STALL_TIMEOUT, 1.0, MAX_TIMEOUT)
    transfer_image = _text(props, "transfer_image", DEFAULT_TRANSFER_IMAGE, failures)
    routing = _routing(props, node, failures)
    if failures:
        raise InvalidInputs(failures)
    return VolumeInputs(
        owner=owner,
        node=node,
        name=L.volume_name(owner),
        maximum_size=maximum_size,
        keep_retired=keep_retired,
        move_timeout=move_timeout,
        transfer_image=transfer_image,
        routing=routing,
        downtime_budget=float(budget),
        stall_timeout=stall_timeout,
    )
