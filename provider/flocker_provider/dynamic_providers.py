"""The Pulumi-facing hooks: check, diff, create, read, update, delete.

Each hook reads inputs, discovers what the nodes really run, asks the planner for a
plan and hands it to the executor. The engine gives diff/update/delete the old
*outputs*, so every input is echoed into the outputs and compared by key here.
"""

from __future__ import annotations

import functools
import shlex
from collections.abc import Callable
from typing import Any, TypeVar, cast

from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    ResourceProvider,
    UpdateResult,
)
from pulumi.output import Unknown

from flocker_provider.docker_layer.docker_node import NodeUnreachable, connect, translated
from flocker_provider.docker_layer.engine_protocol import Engine
from flocker_provider.errors import InvalidInput, NotOurs, PlanError, ProviderError, brief, told
from flocker_provider.execution.executor import Engines, execute
from flocker_provider.execution.migration import move_volume, plan_line
from flocker_provider.inputs import (
    ApplicationInputs,
    InvalidInputs,
    RoutingInputs,
    VolumeInputs,
    inventory_entries,
    node_from_props,
    node_props,
    parse_application,
    parse_volume,
)
from flocker_provider.planning import labels as L
from flocker_provider.planning.containers import container_spec, router_spec
from flocker_provider.planning.host_port_choice import reserved_ports
from flocker_provider.planning.models import Node, Owner, Port, RunningContainer
from flocker_provider.planning.planner import Routing, plan_application, plan_strays, plan_volume
from flocker_provider.progress import report
from flocker_provider.secret_values import SECRET_PATHS, learn, redacted, sealed

# Keys the provider adds to the outputs; everything else in the outputs is an input.
APPLICATION_OUTPUTS = ("container_id", "addresses", "running", "strays")
VOLUME_OUTPUTS = ("volume_name", "last_move", "retired_copies", "missing")
_INTERNAL = ("__provider", SECRET_PATHS)
# Outputs made of inputs under other names: secret when one of those is (secret_values.py).
APPLICATION_DERIVED = {"addresses": ("node", "node_address", "ports"), "strays": ("node", "route_nodes")}
VOLUME_DERIVED = {key: ("node", "node_address", "docker_host", "tls") for key in ("last_move", "retired_copies")}
# Inputs the SDK derives from `node` (the inventory's entry, and the inventory itself when
# `node` is an Output): unknown with it during preview.
NODE_DERIVED = ("node_address", "docker_host", "tls", "node_error", "route_nodes")
# Inputs a volume only reads during a move: a node added to the cluster changes them for
# every volume, and that alone must not show (or run) an update.
VOLUME_MOVE_SETTINGS = ("route_nodes", "hold_seconds", "router_image", "downtime_budget", "stall_timeout")
T = TypeVar("T")
Hook = TypeVar("Hook", bound=Callable[..., Any])


def _names(kind: str) -> Callable[[Hook], Hook]:
    """A hook whose failures of ours name its resource (``name`` of its last argument, the
    properties it works on) and whose Docker errors become ours; a bug passes as it is."""

    def decorate(hook: Hook) -> Hook:
        @functools.wraps(hook)
        def named(self: ResourceProvider, *args: Any) -> Any:
            for props in args:
                if isinstance(props, dict):
                    learn(props)
            try:
                return hook(self, *args)
            except Exception as exc:
                failure = translated(exc)
                if isinstance(failure, ProviderError):
                    failure.within(resource=f"{kind} {args[-1].get('name')}")
                raise failure from failure.__cause__

        return cast(Hook, named)

    return decorate


def _check(news: dict, parse: Any, conflicts: Any = None) -> CheckResult:
    # During preview some inputs may still be unknown; they are checked again in `up`.
    if _has_unknown(news):
        return CheckResult(news, [])
    try:
        inputs = parse(news)
    except InvalidInputs as exc:
        return CheckResult(news, [CheckFailure(p, redacted(r)) for p, r in exc.failures])
    return CheckResult(news, [CheckFailure(f.property, redacted(f.reason)) for f in conflicts(inputs)] if conflicts else [])


def _routed_before(olds: dict) -> set[tuple[str, int]]:
    """(node, external port) pairs the last operation routed to this application: our router
    holds them, so nothing else can have taken them since."""
    try:
        old = parse_application(olds)
    except InvalidInputs:  # a create: nothing before
        return set()
    return {(node.name, port.external) for node in old.routing.nodes for port in old.application.ports}


def _port_conflicts(inputs: ApplicationInputs, routed: set[tuple[str, int]]) -> list[CheckFailure]:
    """External ports that something else already holds on a node (a read: nothing changes).
    Only ports new on a node are asked about: a no-change preview or `up` of 50 applications
    spent 38 s on 200 connections and their reads, where Pulumi's own floor is ~4 s."""
    failures = []
    router = _routing(inputs.owner, inputs.routing).router
    for node in inputs.routing.nodes:
        new = [(i, port) for i, port in enumerate(inputs.application.ports) if (node.name, port.external) not in routed]
        if not new:
            continue
        try:
            with connect(node) as engine:
                for i, port in new:
                    user = engine.port_user(port.external, router)
                    if user is not None:
                        failures.append(
                            CheckFailure(
                                f"ports[{i}].external",
                                f"application {inputs.owner.resource}: external port {port.external} is already taken "
                                f"on node {node.name} by {user}",
                            )
                        )
        except NodeUnreachable:
            continue  # reported by the step that needs the node; preview must not fail for it
    return failures


def _routing(owner: Owner, inputs: RoutingInputs) -> Routing:
    return Routing(router_spec(owner.project, owner.stack, inputs.image), inputs.nodes, inputs.hold_seconds)


def _has_unknown(value: Any) -> bool:
    """Whether preview left part of ``value`` unknown: the dynamic provider host hands such
    parts over as ``Unknown`` objects (not the wire's sentinel string)."""
    if isinstance(value, dict):
        return any(_has_unknown(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_unknown(v) for v in value)
    return isinstance(value, Unknown)


def _unknown_line(kind: str, news: dict) -> bool:
    """Says which inputs preview cannot know yet (Outputs of resources not made yet); whether any."""
    keys = sorted({"node" if k in NODE_DERIVED else k for k, v in news.items() if k not in _INTERNAL and _has_unknown(v)})
    if keys:
        report(f"plan: {kind} {news.get('name')}: {', '.join(keys)} not known until apply")
    return bool(keys)


def _resealed(olds: dict, news: dict) -> bool:
    """An input made a secret, or no longer one, its value the same: only an update records the
    outputs again, as secret as the inputs now are (the engine keeps the old ones otherwise)."""
    return (olds.get(SECRET_PATHS) or []) != (news.get(SECRET_PATHS) or [])


def _changed_keys(olds: dict, news: dict, outputs: tuple[str, ...]) -> list[str]:
    keys = (set(olds) | set(news)) - set(outputs) - set(_INTERNAL)
    return sorted(k for k in keys if _comparable(k, olds.get(k)) != _comparable(k, news.get(k)))


def _comparable(key: str, value: Any) -> Any:
    # The inventory recorded as a list by earlier versions is the same as its text now: no update.
    return inventory_entries(value) if key == "route_nodes" else value


class ApplicationProvider(ResourceProvider):
    @_names("application")
    def check(self, olds: dict, news: dict) -> CheckResult:
        return _check(news, parse_application, lambda inputs: _port_conflicts(inputs, _routed_before(olds)))

    @_names("application")
    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        changed = _changed_keys(olds, news, APPLICATION_OUTPUTS)
        unknown = _unknown_line("application", news)
        if "node" in changed and olds.get("node") and not unknown:
            # A node change is a move (an update), never a replace: a replace would delete
            # the old container before anything is ready on the new node.
            report(f"plan: application {news.get('name')} moves from {olds['node']} to {news['node']}")
        # Only a refresh (`read`) says False: the container stopped since the last
        # operation (a node restarted, a crash its restart policy did not cover).
        stopped = olds.get("running") is False
        if stopped:
            # Also shown by a refresh, whose diff does not know of a node change to come.
            report(f"found: application {news.get('name')} is not running on {olds.get('node')}: the update starts it")
        # Only a refresh finds them too: started by hand where the application has no place.
        strays = olds.get("strays") or []
        for stray in strays:
            report(f"found: {_stray_line(str(news.get('name')), str(olds.get('node')), stray)}: the update stops it there")
        changes = bool(changed) or stopped or bool(strays) or _resealed(olds, news)
        return DiffResult(changes=changes, replaces=[], delete_before_replace=False)

    @_names("application")
    def create(self, props: dict) -> CreateResult:
        inputs = _parse_or_raise(parse_application, props)
        _require_volume(inputs)
        try:
            outs = _converge_application(inputs, (inputs.node,), (), ())
        except Exception as exc:
            # The engine records nothing of a failed create: what it started would run on
            # outside the stack, holding its ports and its volume, and block `destroy`.
            told(exc, _undo_create(inputs, exc))
            raise
        return CreateResult(id_=L.container_name(inputs.owner), outs=sealed({**props, **outs}, props, APPLICATION_DERIVED))

    @_names("application")
    def update(self, _id: str, olds: dict, news: dict) -> UpdateResult:
        inputs = _parse_or_raise(parse_application, news)
        old = _parse_or_raise(parse_application, olds)
        _require_volume(inputs)
        dropped = tuple(n for n in old.routing.nodes if n not in inputs.routing.nodes)
        try:
            outs = _converge_application(inputs, (old.node, inputs.node), old.application.ports, dropped)
        except Exception as exc:
            told(exc, _roll_back(old, inputs))
            raise
        return UpdateResult(outs=sealed({**news, **outs}, news, APPLICATION_DERIVED))

    @_names("application")
    def read(self, id_: str, props: dict) -> ReadResult:
        inputs = _parse_or_raise(parse_application, props)
        name = L.container_name(inputs.owner)
        with Engines() as engines:
            try:
                found = engines[inputs.node].discover_application(name)
            except NodeUnreachable as exc:
                return ReadResult(id_, sealed(_unread(props, exc, f"application {name}"), props, APPLICATION_DERIVED))
            strays = [_stray_record(engines[node], c, inputs) for node, c in _strays(engines, inputs, (inputs.node,)).items()]
        if found is None:
            report(f"found: application {inputs.owner.resource} is gone from {inputs.node.name}: the next `pulumi up` starts it again")
            for stray in strays:  # no diff follows to say it: the create stops it
                report(f"found: {_stray_line(inputs.owner.resource, inputs.node.name, stray)}: the next `pulumi up` stops it there")
            return ReadResult("", {})  # the engine drops it from state, `up` creates it
        outs = {**props, "container_id": found.container_id, "running": found.running, "strays": strays}
        return ReadResult(id_, sealed(outs, props, APPLICATION_DERIVED))

    @_names("application")
    def delete(self, _id: str, props: dict) -> None:
        _remove_application(_parse_or_raise(parse_application, props))


def _require_volume(inputs: ApplicationInputs) -> None:
    """An application's volume is on its node before its container is made: Docker would
    create a missing one, empty (and not ours), in its place."""
    if inputs.volume_name is None:
        return
    with connect(inputs.node) as engine:
        if engine.discover_volume(inputs.volume_name).exists:
            return
    raise PlanError(
        f"application {inputs.owner.resource} mounts volume {inputs.volume_name}, which is missing: "
        "its container is not made, Docker would create an empty volume in its place",
        node=inputs.node.name,
        remedy="restore the volume as its own resource's error says (`pulumi up` shows it first), then run `pulumi up` again",
    )


def _remove_application(inputs: ApplicationInputs) -> None:
    name = L.container_name(inputs.owner)
    with Engines() as engines:
        discovered = {inputs.node: engines[inputs.node].discover_application(name)}
        # A move whose `pulumi` was killed after the destination's start left the
        # application running there, on a node the state does not name.
        discovered.update(
            _left_behind(
                engines,
                [n for n in inputs.routing.nodes if n not in discovered],
                f"application {name} left there by an interrupted move stays",
                lambda engine: engine.container_owner_is(name, inputs.owner),
                lambda engine: engine.discover_application(name),
            )
        )
        routing = _routing(inputs.owner, inputs.routing)
        execute(plan_application(inputs.owner.resource, None, discovered, routing, inputs.application.ports), engines)


def _roll_back(old: ApplicationInputs, new: ApplicationInputs) -> str:
    """After a failed update: the previous configuration converged again, so that a change
    that does not come up (a broken image, a failing health check) leaves the application
    serving as it did, not down; the engine keeps the previous inputs in the state.

    Not when the application moved with its volume: the volume's move decided where the
    data lives, and starting the old configuration on the retired copy would fork it.
    """
    if old.node != new.node and new.volume_name is not None:
        return ""
    try:
        _converge_application(old, (old.node, new.node), new.application.ports, ())
    except Exception as exc:  # the first failure is the story; this one only adds to it
        return f"rolling back to the previous configuration failed too ({brief(exc)})"
    return f"rolled back: the previous configuration serves again on {old.node.name}"


def _undo_create(inputs: ApplicationInputs, failure: Exception) -> str:
    try:
        _remove_application(inputs)
    except Exception as exc:  # the first failure is the story; this one only adds to it
        why = "" if brief(exc) == brief(failure) else f" ({brief(exc)})"
        return f"removing what it had started failed too{why}; `pulumi up` takes over what is left once the cause is fixed"
    return "what it had started was removed again"


def _converge_application(
    inputs: ApplicationInputs, nodes: tuple[Node, ...], old_ports: tuple[Port, ...], dropped: tuple[Node, ...]
) -> dict[str, Any]:
    spec = container_spec(inputs.application, inputs.owner, inputs.volume_name, inputs.secret_inputs)
    routing = _routing(inputs.owner, inputs.routing)
    externals = [p.external for p in inputs.application.ports]
    with Engines() as engines, reserved_ports(inputs.routing.nodes, externals):
        _move_off_host_ports(inputs, externals, routing, engines)
        discovered = {node: engines[node].discover_application(spec.name) for node in dict.fromkeys(nodes)}
        strays = _strays(engines, inputs, nodes)
        for node, stray in strays.items():
            report(_stopping_line(inputs, node, _stray_record(engines[node], stray, inputs)))
        plan = plan_application(inputs.owner.resource, (inputs.node, spec), discovered, routing, old_ports, dropped)
        execute((*plan_strays(strays), *plan), engines, inputs.wait_timeout)
        found = engines[inputs.node].discover_application(spec.name)
    return {
        "container_id": found.container_id if found else "",
        "running": found.running if found else False,
        "addresses": [f"{inputs.node.address}:{p.external}" for p in inputs.application.ports],
        "strays": [],
    }


def _strays(engines: Engines, inputs: ApplicationInputs, placed: tuple[Node, ...]) -> dict[Node, RunningContainer]:
    """The application's containers running on the other nodes of the inventory, where it has
    no place (started there by hand: `docker start`, or `docker run` with our labels)."""
    name = L.container_name(inputs.owner)
    found = _left_behind(
        engines,
        [n for n in inputs.routing.nodes if n not in placed],
        f"whether application {inputs.owner.resource} also runs there is not known",
        lambda engine: engine.container_owner_is(name, inputs.owner),
        lambda engine: engine.discover_application(name),
    )
    return {node: c for node, c in found.items() if c is not None and c.running}


def _stray_record(engine: Engine, stray: RunningContainer, inputs: ApplicationInputs) -> dict[str, Any]:
    """What a refresh records of a stray container, for the diff to say: where, which, and
    what copy of the application's volume is on its node (what it wrote to)."""
    copy = None
    if inputs.volume_name is not None:
        try:
            state = engine.discover_volume(inputs.volume_name)
        except NotOurs:
            copy = "not ours"
        else:
            copy = ("retired" if state.retired else "ours") if state.exists else None
    return {
        "node": engine.node.name,
        "container": stray.name,
        "container_id": stray.container_id,
        "volume": inputs.volume_name,
        "copy": copy,
    }


def _stray_line(resource: str, node: str, stray: dict[str, Any]) -> str:
    return (
        f"application {resource} also runs on {stray['node']} (container {stray['container']} "
        f"{str(stray['container_id'])[:12]}), not only on {node}"
    )


def _stopping_line(inputs: ApplicationInputs, node: Node, stray: dict[str, Any]) -> str:
    """Said before the stray is stopped: what is kept of it, where, and what to do with it."""
    live = f"not in the live copy on {inputs.node.name}"
    volume = stray["volume"]
    if stray["copy"] == "retired":
        wrote = (
            f"what it wrote is in volume {volume} there, the retired copy of an earlier move, {live}; that copy stays as it "
            f"is, marked retired (a move back to {node.name} copies the live data over it, and `pulumi destroy` removes it: "
            "copy out what you need first)"
        )
    elif stray["copy"] == "not ours":
        wrote = f"what it wrote is in volume {volume} there, which flocker-pulumi did not make and leaves alone, {live}"
    elif stray["copy"] is not None:
        wrote = f"what it wrote is in volume {volume} there, {live}; that volume stays as it is"
    else:
        wrote = f"what it wrote stays with it, {live}"
    remove = shlex.join(node.docker_cli("rm", stray["container"]))
    return (
        f"{_stray_line(inputs.owner.resource, inputs.node.name, stray)}: stopping it there for good (its restart policy too), "
        f"kept, not removed: {wrote}. Remove the container once you have what you need (`{remove}`)"
    )


def _move_off_host_ports(inputs: ApplicationInputs, externals: list[int], routing: Routing, engines: Engines) -> None:
    """The stack's containers whose host port is one of this application's external ports start
    again on another one (connections to them held meanwhile), or the routers could not bind
    it: the host port was chosen before the port was routed (a program that gains this
    application; with ``reserved_ports``, no container started from now on takes it)."""
    for node in inputs.routing.nodes:
        try:
            holders = engines[node].host_port_holders(externals, routing.router)
        except NodeUnreachable:
            continue  # reported by the step that needs the node
        for holder in holders:
            report(f"{holder.name} on {node.name} publishes a host port that {inputs.owner.resource} routes: it starts on another one")
            application = dict(holder.spec.labels).get(L.RESOURCE, holder.name)
            # Found out of date, it is replaced in place the way a changed application is.
            stale = RunningContainer(holder.name, "", running=True, config_hash="")
            execute(plan_application(application, (node, holder.spec), {node: stale}, routing), engines, inputs.wait_timeout)


class VolumeProvider(ResourceProvider):
    @_names("volume")
    def check(self, _olds: dict, news: dict) -> CheckResult:
        return _check(news, parse_volume)

    @_names("volume")
    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        changed = _changed_keys(olds, news, VOLUME_OUTPUTS + VOLUME_MOVE_SETTINGS)
        unknown = _unknown_line("volume", news)
        if "node" in changed and olds.get("node") and not unknown:
            report(plan_line(_parse_or_raise(parse_volume, olds), _parse_or_raise(parse_volume, news)))
        # Only a refresh (`read`) says so; the update refuses to make it again empty.
        missing = olds.get("missing") is True
        if missing:
            report(f"found: {_missing_line(olds)}")
        return DiffResult(changes=bool(changed) or missing or _resealed(olds, news), replaces=[], delete_before_replace=False)

    @_names("volume")
    def create(self, props: dict) -> CreateResult:
        inputs = _parse_or_raise(parse_volume, props)
        _converge_volume(inputs, recorded=False)
        return CreateResult(id_=inputs.name, outs={**props, "volume_name": inputs.name, "missing": False})

    @_names("volume")
    def update(self, _id: str, olds: dict, news: dict) -> UpdateResult:
        inputs = _parse_or_raise(parse_volume, news)
        old = _parse_or_raise(parse_volume, olds)
        outs = {**news, "volume_name": inputs.name, "last_move": olds.get("last_move")}
        retired = [n for n in olds.get("retired_copies") or [] if n.get("node") != inputs.node.name]
        if old.node != inputs.node:
            routing = _routing(inputs.owner, inputs.routing)
            outs["last_move"] = move_volume(old, inputs, _volume_labels(inputs), routing).as_output()
            if inputs.keep_retired:
                retired.append(node_props(old.node))
            else:
                with connect(old.node) as engine:
                    engine.remove_volume(old.name)
        else:
            _converge_volume(inputs, recorded=True)
        return UpdateResult(outs=sealed({**outs, "retired_copies": retired, "missing": False}, news, VOLUME_DERIVED))

    @_names("volume")
    def read(self, id_: str, props: dict) -> ReadResult:
        inputs = _parse_or_raise(parse_volume, props)
        try:
            with connect(inputs.node) as engine:
                state = engine.discover_volume(inputs.name)
        except NodeUnreachable as exc:
            return ReadResult(id_, sealed(_unread(props, exc, f"volume {inputs.name}"), props, VOLUME_DERIVED))
        if not state.exists:
            # Kept, and said: dropped from the state, the next `up` would create it empty.
            report(f"found: {_missing_line(props)}")
            return ReadResult(id_, sealed({**props, "missing": True}, props, VOLUME_DERIVED))
        if state.retired:
            # Handed over by a move whose `pulumi` was killed before it recorded the new node:
            # kept as recorded, so that the next update moves it and finishes that move (its
            # leftovers included). Dropped, it would be created afresh where the program puts it.
            report(f"volume {inputs.name} on {inputs.node.name} was handed over by an interrupted move: the next update finishes it")
            return ReadResult(id_, sealed({**props, "missing": False}, props, VOLUME_DERIVED))
        return ReadResult(id_, sealed({**props, "volume_name": inputs.name, "missing": False}, props, VOLUME_DERIVED))

    @_names("volume")
    def delete(self, _id: str, props: dict) -> None:
        inputs = _parse_or_raise(parse_volume, props)
        nodes = [inputs.node] + [node_from_props(n) for n in props.get("retired_copies") or []]
        with Engines() as engines:
            discovered = {node: engines[node].discover_volume(inputs.name) for node in nodes}
            # Partial copies (with a staged container) of a move whose `pulumi` was killed.
            discovered.update(
                _left_behind(
                    engines,
                    [n for n in inputs.routing.nodes if n not in discovered],
                    f"a copy of {inputs.name} left there by an interrupted move stays",
                    lambda engine: engine.volume_owner_is(inputs.name, inputs.owner),
                    lambda engine: engine.discover_volume(inputs.name),
                )
            )
            execute(plan_volume(None, discovered), engines)


def _converge_volume(inputs: VolumeInputs, recorded: bool) -> None:
    with Engines() as engines:
        discovered = {inputs.node: engines[inputs.node].discover_volume(inputs.name)}
        execute(plan_volume((inputs.node, inputs.name, _volume_labels(inputs)), discovered, recorded), engines)


def _missing_line(props: dict) -> str:
    return (
        f"volume {props.get('name')} is missing on {props.get('node')}: `pulumi up` will not create it again empty "
        "(its error says how to restore it, or to start over)"
    )


def _unread(props: dict, exc: NodeUnreachable, what: str) -> dict:
    """A refresh that cannot reach a node keeps what the state says, and says so: with
    `refresh: always`, failing instead would block every `up`, moving off that node too."""
    report(f"warning: {brief(exc)}; {what} is left as the last operation recorded it")
    return props


def _left_behind(
    engines: Engines, nodes: list[Node], unreachable: str, owned: Callable[[Engine], bool], discover: Callable[[Engine], T]
) -> dict[Node, T]:
    """What a resource has on the other nodes of the inventory, which the state does not know
    of (left by an interrupted move, started there by hand). Only the resource's own
    (``owned``); for a node that does not answer, ``unreachable`` says what that leaves."""
    found = {}
    for node in nodes:
        try:
            if owned(engines[node]):
                found[node] = discover(engines[node])
        except NodeUnreachable as exc:
            report(f"warning: {brief(exc)}; {unreachable}")
    return found


def _volume_labels(inputs: VolumeInputs) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(L.owner_labels(inputs.owner, L.KIND_VOLUME).items()))


def _parse_or_raise(parse: Any, props: dict) -> Any:
    try:
        return parse(props)
    except InvalidInputs as exc:
        raise InvalidInput(f"invalid inputs: {exc}") from exc
