"""Turning a loaded application.yml/deployment.yml into resources, as flocker-deploy did.

The result must be indistinguishable from a program that declares the same stack with
``FlockerApplication`` by hand: moving from the YAML files to code (or back) is then
no change at all for the engine.
"""

from __future__ import annotations

import heapq
from typing import Any

import pulumi

from flocker_provider.models import Application, RestartPolicy

from .flocker_config import Configuration, ConfiguredApplication
from .resources import FlockerApplication


def declaration_order(configuration: Configuration) -> list[ConfiguredApplication]:
    """The applications that run somewhere, link targets first, otherwise alphabetical.

    ``FlockerApplication`` resolves a link when it is constructed, so the application
    publishing a link's ``remote_port`` must already be declared. Raises ValueError when
    that cannot be arranged (a link cycle, or a target that runs on no node).
    """
    placed = {item.application.name: item for item in configuration.applications if item.node is not None}
    publisher = {port.external: item.application.name for item in configuration.applications for port in item.application.ports}

    targets: dict[str, set[str]] = {}
    for name, item in placed.items():
        targets[name] = set()
        for link in item.application.links:
            target = publisher.get(link.remote_port)
            if target is None:
                # The loader refuses such files; a hand-built Configuration may still hold one.
                raise ValueError(f"application '{name}': link '{link.alias}' to port {link.remote_port}: no application publishes it")
            if target not in placed:
                raise ValueError(
                    f"application '{name}': link '{link.alias}' to port {link.remote_port}: "
                    f"application '{target}' publishing it runs on no node"
                )
            targets[name].add(target)

    # Kahn's algorithm with a heap, so among the ready applications the first by name goes next.
    waiting = {name: set(names) for name, names in targets.items()}
    ready = [name for name, names in waiting.items() if not names]
    heapq.heapify(ready)
    order: list[ConfiguredApplication] = []
    while ready:
        name = heapq.heappop(ready)
        order.append(placed[name])
        for other, names in waiting.items():
            if name in names:
                names.discard(name)
                if not names:
                    heapq.heappush(ready, other)
    if len(order) < len(placed):
        stuck = sorted(set(placed) - {item.application.name for item in order})
        raise ValueError(f"applications {', '.join(repr(n) for n in stuck)} link to each other in a cycle; one must be declared first")
    return order


def application_arguments(item: ConfiguredApplication) -> dict[str, Any]:
    """The keyword arguments of ``FlockerApplication`` for one configured application.

    Defaults are left out the way a person would leave them out (no environment is ``{}``,
    the ``never`` restart policy is ``None``), so the inputs equal hand-written ones.
    """
    app: Application = item.application
    if item.node is None:
        raise ValueError(f"application '{app.name}' runs on no node: it is not declared")
    volume = None
    if app.volume is not None:
        volume = {"mountpoint": app.volume.mountpoint, "maximum_size": item.volume_maximum_size}
    restart = None
    if app.restart_policy != RestartPolicy():
        restart = {"name": app.restart_policy.name, "maximum_retry_count": app.restart_policy.maximum_retry_count}
    return {
        "image": app.image,
        "node": item.node,
        "ports": [{"internal": p.internal, "external": p.external} for p in app.ports],
        "environment": dict(app.environment),
        "volume": volume,
        "links": [{"alias": link.alias, "local_port": link.local_port, "remote_port": link.remote_port} for link in app.links],
        "mem_limit": app.mem_limit,
        "cpu_shares": app.cpu_shares,
        "restart_policy": restart,
        "command": list(app.command) if app.command is not None else None,
    }


def declare_configuration(configuration: Configuration) -> dict[str, FlockerApplication]:
    """Declare every application that deployment.yml places on a node; name -> resource.

    Applications on no node are left out: Flocker did not run them, and a resource that
    disappears from the program is removed by the engine, which is what taking an
    application off every node meant.
    """
    try:
        order = declaration_order(configuration)
    except ValueError as exc:
        raise pulumi.RunError(str(exc)) from exc
    return {item.application.name: FlockerApplication(item.application.name, **application_arguments(item)) for item in order}
