"""`FlockerVolume` and `FlockerApplication`: the resources users write in their programs."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import pulumi
import pulumi.dynamic

from flocker_provider.dynamic_providers import ApplicationProvider, VolumeProvider
from flocker_provider.inputs import DEFAULT_HOLD_SECONDS, DEFAULT_STALL_TIMEOUT, DEFAULT_TRANSFER_IMAGE, inventory_text, node_props
from flocker_provider.planning import labels as L
from flocker_provider.planning.models import Owner
from flocker_provider.secret_values import SECRET_PATHS, SHOWN_AS

from .cluster import FlockerCluster
from .flocker_config import parse_size

T = TypeVar("T")
U = TypeVar("U")
# The inputs the SDK makes of `node` (how to reach it, from the inventory).
NODE_KEYS = ("node", "node_address", "docker_host", "tls", "node_error")
# Inputs secret only because `node` is, whose value is among theirs (routing_inputs): the
# provider blanks that value already, and the rest of theirs is no secret to blank.
SECRET_WITH_NODE = ("route_nodes",)


def _is_later(value: object) -> bool:
    """An Output (of another resource, a secret, unknown during preview) or another awaitable."""
    return isinstance(value, pulumi.Output) or inspect.isawaitable(value)


def _then(value: pulumi.Input[T], make: Callable[[T], U]) -> U | pulumi.Output[U]:
    """``make`` of ``value``: now when it is a plain value (its errors raised as the program
    runs, before anything changes), once it is known when it is an Output (secret if it is,
    unknown in preview while it is). Only the top level waits: Outputs inside stay as they are,
    each keeping its own secretness."""
    if not _is_later(value):
        return make(value)  # type: ignore[arg-type]

    def made(known: T) -> U:
        try:
            return make(known)
        except pulumi.RunError as exc:
            # The value may be a secret: the message names the resource and key without it.
            raise pulumi.RunError(str(exc).replace(str(known), SHOWN_AS)) from None

    return pulumi.Output.from_input(value).apply(made)


def _known_now(value: object, what: str, why: str) -> None:
    if _is_later(value):
        raise pulumi.RunError(f"{what} must be known as the program runs, not an Output: {why}")


async def _secret_paths(props: Mapping[str, Any]) -> list[list[str | int]]:
    """Where the secrets among ``props`` are (paths, never values): the provider, handed every
    input in plain text, keeps them out of what it prints, raises and records (secret_values.py)."""
    found: list[list[str | int]] = []

    async def walk(value: Any, path: list[str | int]) -> None:
        if isinstance(value, pulumi.Output):
            if await value.is_secret():
                found.append(path)
                return
            value = await value.future()
        if isinstance(value, Mapping):
            for key in value:
                await walk(value[key], [*path, key])
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                await walk(item, [*path, i])

    for key, value in props.items():
        if key not in SECRET_WITH_NODE:
            await walk(value, [key])
    return found


def _with_secret_paths(props: dict[str, Any]) -> dict[str, Any]:
    # A task, not a bare coroutine: a resource whose registration fails never awaits it.
    return {**props, SECRET_PATHS: asyncio.ensure_future(_secret_paths(dict(props)))}


def node_inputs(node: str, cluster: FlockerCluster) -> dict[str, Any]:
    """How to reach ``node`` of ``cluster``; an unknown node becomes a check failure naming it."""
    try:
        return {**node_props(cluster.resolve(node)), "node_error": None}
    except LookupError as exc:
        return {"node": node, "node_address": "", "docker_host": "", "tls": None, "node_error": str(exc)}


def _node_inputs(node: pulumi.Input[str], cluster: FlockerCluster) -> dict[str, Any]:
    """``node_inputs``, each an Output of its own when ``node`` is one (secret with it)."""
    resolved = _then(node, functools.partial(node_inputs, cluster=cluster))
    if isinstance(resolved, pulumi.Output):
        found = {key: resolved.apply(lambda entry, key=key: entry[key]) for key in NODE_KEYS}
        # Set only when the check fails, which records nothing; secret, the provider would
        # blank the whole sentence where it blanks only the node's name in it.
        found["node_error"] = pulumi.Output.unsecret(found["node_error"])
        return found
    return resolved


def _hold(hold_seconds: float | None) -> float:
    hold = hold_seconds if hold_seconds is not None else pulumi.Config("flocker").get_float("holdSeconds")
    return hold if hold is not None else DEFAULT_HOLD_SECONDS


def _transfer_image(image: str | None) -> str:
    return image or pulumi.Config("flocker").get("transferImage") or DEFAULT_TRANSFER_IMAGE


def routing_inputs(node: pulumi.Input[str], hold_seconds: pulumi.Input[float] | None, cluster: FlockerCluster) -> dict[str, Any]:
    """Every node of the cluster routes every application's external ports. The inventory is
    an Output of ``node`` when that is one: a secret node's name, among the inventory's, is
    then encrypted in the state with it (it is known, and unknown in preview, with ``node``)."""
    route_nodes = inventory_text(cluster.nodes)
    return {
        "route_nodes": _then(node, lambda _: route_nodes),
        "hold_seconds": _then(hold_seconds, _hold),
        # The router runs in the transfer image (python3): one image to provide per cluster.
        "router_image": _transfer_image(None),
    }


def _size(resource_name: str, value: int | str | None) -> int | None:
    if value is None or isinstance(value, int):
        return value
    try:
        return parse_size(value)
    except ValueError as exc:
        raise pulumi.RunError(f"volume {resource_name}: maximum_size: {exc}") from exc


def _owner(resource_name: str) -> Owner:
    return Owner(project=pulumi.get_project(), stack=pulumi.get_stack(), resource=resource_name)


class FlockerVolume(pulumi.dynamic.Resource, module="flocker", name="Volume"):
    """A Docker volume on one node. Changing ``node`` moves the data (two-phase push).

    ``keep_retired``: after a move the old copy stays on the old node, marked retired,
    so a move back only sends what changed; set False to remove it once the move is done.
    ``downtime_budget``: seconds phase 2 may take, as predicted from the pre-copy rounds;
    the application is stopped once the prediction fits, or once the rounds stop shrinking it.
    ``stall_timeout``: seconds a move's copy may go without progress (a cut link between the
    nodes) before the move fails, the application still serving on the source.
    ``cluster``: the ``FlockerCluster`` whose nodes ``node`` names and which route (default:
    the stack config's); a plain value.

    Every argument may be an Output (of another resource, a secret, unknown during preview).
    """

    volume_name: pulumi.Output[str]
    node: pulumi.Output[str]
    last_move: pulumi.Output[Any]
    retired_copies: pulumi.Output[Any]

    def __init__(
        self,
        resource_name: str,
        node: pulumi.Input[str],
        maximum_size: pulumi.Input[int | str] | None = None,
        keep_retired: pulumi.Input[bool] = True,
        move_timeout: pulumi.Input[float] = 3600,
        transfer_image: pulumi.Input[str] | None = None,
        hold_seconds: pulumi.Input[float] | None = None,
        downtime_budget: pulumi.Input[float] = 0.3,
        stall_timeout: pulumi.Input[float] = DEFAULT_STALL_TIMEOUT,
        cluster: FlockerCluster | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        cluster = _in_program(f"volume {resource_name}", cluster)
        props = {
            "name": resource_name,
            "project": pulumi.get_project(),
            "stack": pulumi.get_stack(),
            **_node_inputs(node, cluster),
            "maximum_size": _then(maximum_size, functools.partial(_size, resource_name)),
            "keep_retired": keep_retired,
            "move_timeout": move_timeout,
            "downtime_budget": downtime_budget,
            "stall_timeout": stall_timeout,
            **routing_inputs(node, hold_seconds, cluster),
            "transfer_image": _then(transfer_image, _transfer_image),
            "volume_name": None,
            "last_move": None,
            "retired_copies": None,
        }
        super().__init__(VolumeProvider(), resource_name, _with_secret_paths(props), opts)
        # Known at construction (not an output), so applications can use it in preview.
        self.docker_volume_name = L.volume_name(_owner(resource_name))
        # Resolved, as the application's own node is: an address and its node-file name
        # are the same node (flocker-deploy's files name nodes by address).
        self.node_name = props["node"]
        self.cluster = cluster


class FlockerApplication(pulumi.dynamic.Resource, module="flocker", name="Application"):
    """One container on one node, as Flocker's application.yml described it.

    ``volume`` is ``{"volume": FlockerVolume, "mountpoint": "/path"}``, or just
    ``{"mountpoint": "/path"}`` (optionally with ``maximum_size`` and ``stall_timeout``), which
    creates a volume named after the application on the same node, as Flocker did.
    ``links`` are ``{"alias", "local_port", "remote_port"}``: the linking container
    gets Docker-link-style variables and the alias as a host name, both naming its own
    node, whose router forwards ``remote_port`` to wherever the target runs.
    ``hold_seconds``: how long new connections wait during a move or a replacement
    (default: config ``flocker:holdSeconds``, else 30).
    ``health_check`` is ``{"command": "shell line" or [program, args...], "interval": 1,
    "timeout": 5, "retries": 3, "start_period": 0}`` (seconds): Docker runs it in the
    container, and the application counts as up, and gets traffic, once it succeeds.
    ``flush_command`` ([program, args...]): run in the container when a move has copied its
    volume once, while it still serves; then the move copies once more and stops it. For an
    application that keeps written data in memory (PostgreSQL's dirty pages: ``["psql", "-U",
    "postgres", "-c", "CHECKPOINT"]``), the stop then has less to write and the move's
    downtime less to copy. Its failure is reported and the move goes on.
    ``cluster``: the ``FlockerCluster`` whose nodes ``node`` names and which route (default:
    the stack config's); a plain value. Port claims and links are per cluster: a link finds its
    target among the applications of its own cluster only, and so does a ``volume`` resource.

    Every argument may be an Output (of another resource, a secret, unknown during preview), or
    hold Outputs, except what the program needs as it runs: the ``ports`` list and each entry,
    whose ``external`` port must be a plain number (links find their target by it, and every
    node routes it to one application), ``links`` and each entry's ``remote_port`` (for the
    same reason), and the ``volume`` mapping (it decides whether a volume is created). Their
    other values may be Outputs.
    """

    container_id: pulumi.Output[str]
    addresses: pulumi.Output[list]
    running: pulumi.Output[bool]
    node: pulumi.Output[str]

    def __init__(
        self,
        resource_name: str,
        image: pulumi.Input[str],
        node: pulumi.Input[str],
        ports: Sequence[Mapping[str, pulumi.Input[int]]] | None = None,
        environment: pulumi.Input[Mapping[str, pulumi.Input[str]]] | None = None,
        volume: Mapping[str, Any] | None = None,
        links: Sequence[Mapping[str, pulumi.Input[Any]]] | None = None,
        mem_limit: pulumi.Input[int] | None = None,
        cpu_shares: pulumi.Input[int] | None = None,
        restart_policy: pulumi.Input[Mapping[str, pulumi.Input[Any]]] | None = None,
        command: pulumi.Input[Sequence[pulumi.Input[str]]] | None = None,
        health_check: pulumi.Input[Mapping[str, pulumi.Input[Any]]] | None = None,
        flush_command: pulumi.Input[Sequence[pulumi.Input[str]]] | None = None,
        wait_timeout: pulumi.Input[float] = 120,
        hold_seconds: pulumi.Input[float] | None = None,
        cluster: FlockerCluster | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        opts = opts or pulumi.ResourceOptions()
        what = f"application {resource_name}"
        cluster = _in_program(what, cluster)
        _known_now(ports, f"{what}: ports", "give a list; its entries' internal ports may be Outputs")
        _known_now(links, f"{what}: links", "give a list; its entries' alias and local_port may be Outputs")
        _known_now(volume, f"{what}: volume", "give a mapping, it decides whether a volume is created; its values may be Outputs")
        volume_props, volume_resource = _volume(resource_name, node, volume, opts, hold_seconds, cluster)
        _claim_ports(resource_name, ports or [], cluster)
        # Targets first: a link's port is routed once its target exists.
        targets = [_link_target(resource_name, link, cluster) for link in links or []]
        depends = [r for r in [volume_resource, *targets] if r is not None]
        if depends:
            opts = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=depends))
        props = {
            "name": resource_name,
            "project": pulumi.get_project(),
            "stack": pulumi.get_stack(),
            **_node_inputs(node, cluster),
            "image": image,
            "ports": [dict(p) for p in ports or []],
            "environment": _then(environment, lambda env: dict(env or {})),
            "volume": volume_props,
            "links": [dict(link) for link in links or []],
            "mem_limit": mem_limit,
            "cpu_shares": cpu_shares,
            "restart_policy": _then(restart_policy, lambda policy: dict(policy) if policy else None),
            "command": _then(command, lambda args: list(args) if args else None),
            "health_check": _then(health_check, lambda check: dict(check) if check else None),
            "flush_command": _then(flush_command, lambda args: list(args) if args else None),
            "wait_timeout": wait_timeout,
            **routing_inputs(node, hold_seconds, cluster),
            "container_id": None,
            "addresses": None,
            "running": None,
        }
        super().__init__(ApplicationProvider(), resource_name, _with_secret_paths(props), opts)
        self.volume = volume_resource
        self.cluster = cluster
        for port in ports or []:
            _published[cluster][int(port["external"])] = (resource_name, self)


# Per cluster used so far in this program, external port -> (application, resource) of its
# applications declared so far: every node routes an external port to one application, and
# links find their target by it, as in Flocker. Another cluster's nodes route other ports.
_published: dict[FlockerCluster, dict[int, tuple[str, FlockerApplication]]] = {}


def _in_program(what: str, cluster: FlockerCluster | None) -> FlockerCluster:
    """``cluster`` (by default the stack config's), sharing no node with another cluster of the program.

    A node runs one router per stack, whose routes are by external port: two clusters of one
    stack sharing a node would take each other's routes there.
    """
    if cluster is None:
        cluster = FlockerCluster.from_stack_config()
    elif not isinstance(cluster, FlockerCluster):
        raise pulumi.RunError(f"{what}: cluster: expected a FlockerCluster (a plain value, not an Output), got {type(cluster).__name__}")
    if cluster not in _published:
        for other in _published:
            shared = cluster.shared_nodes(other)
            if shared:
                raise pulumi.RunError(
                    f"{what}: clusters '{other.name}' and '{cluster.name}' share node {', '.join(shared)}: "
                    "a node's router serves one cluster of a stack; use one FlockerCluster for both, or clusters of different nodes"
                )
        _published[cluster] = {}
    return cluster


def _claim_ports(resource_name: str, ports: Sequence[Mapping[str, pulumi.Input[int]]], cluster: FlockerCluster) -> None:
    for i, port in enumerate(ports):
        _known_now(port, f"application {resource_name}: ports[{i}]", "give a mapping; its internal port may be an Output")
        external = port.get("external")
        _known_now(
            external,
            f"application {resource_name}: ports[{i}].external",
            "links find their target by it, and every node routes it to one application; its internal port may be an Output",
        )
        holder = _published[cluster].get(int(external)) if isinstance(external, (int, float)) else None
        # The same name again is the same resource (a program run twice in one process).
        if holder is not None and holder[0] != resource_name:
            raise pulumi.RunError(
                f"applications {holder[0]} and {resource_name} both publish external port {external}: "
                "every node routes an external port to one application; give one of them another port"
            )


def _link_target(resource_name: str, link: Mapping[str, pulumi.Input[Any]], cluster: FlockerCluster) -> FlockerApplication:
    _known_now(link, f"application {resource_name}: a link", "give a mapping; its alias and local_port may be Outputs")
    remote = link.get("remote_port")
    _known_now(remote, f"application {resource_name}: a link's remote_port", "the link finds its target application by it")
    port = int(remote) if isinstance(remote, (int, float)) else None
    target = _published[cluster].get(port) if port is not None else None
    if target is None:
        for other, published in _published.items():
            if other != cluster and port in published:
                # Its routers, which a link goes through, are on the other cluster's nodes only.
                raise pulumi.RunError(
                    f"application {resource_name} on cluster '{cluster.name}': link '{link.get('alias')}' to port {remote}: "
                    f"application {published[port][0]} publishing it is on cluster '{other.name}'; "
                    "a link reaches only applications of its own cluster"
                )
        raise pulumi.RunError(
            f"application {resource_name}: link '{link.get('alias')}' to port {remote}: no application "
            "declared before this one publishes that external port; declare the target first"
        )
    return target[1]


def _volume(
    resource_name: str,
    node: pulumi.Input[str],
    volume: Mapping[str, Any] | None,
    opts: pulumi.ResourceOptions,
    hold_seconds: pulumi.Input[float] | None,
    cluster: FlockerCluster,
) -> tuple[dict[str, Any] | None, FlockerVolume | None]:
    if not volume:
        return None, None
    resource = volume.get("volume")
    if resource is not None and resource.cluster != cluster:
        raise pulumi.RunError(
            f"application {resource_name} on cluster '{cluster.name}': volume {resource.pulumi_resource_name} "
            f"is on cluster '{resource.cluster.name}'; an application mounts only a volume of its own cluster"
        )
    if resource is None:
        resource = FlockerVolume(
            resource_name,
            node=node,
            maximum_size=volume.get("maximum_size"),
            stall_timeout=volume.get("stall_timeout", DEFAULT_STALL_TIMEOUT),
            # A move is the volume's, and so is holding new connections during it.
            hold_seconds=hold_seconds,
            cluster=cluster,
            opts=pulumi.ResourceOptions(parent=opts.parent, provider=None),
        )
    return {
        "name": resource.docker_volume_name,
        "node": resource.node_name,
        "mountpoint": volume.get("mountpoint"),
    }, resource
