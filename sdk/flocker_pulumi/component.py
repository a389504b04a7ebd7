"""``FlockerDeployment``: Flocker's application.yml + deployment.yml (or fig) as one component.

Its children must be indistinguishable from a program that declares the same stack with
``FlockerApplication`` by hand: moving from the YAML files to code (or back) is then no
change at all for the engine.
"""

from __future__ import annotations

import heapq
import os
from typing import Any

import pulumi

from flocker_provider.planning.models import Application, RestartPolicy

from .cluster import FlockerCluster
from .flocker_config import ConfigError, Configuration, ConfiguredApplication, load_configuration
from .resources import FlockerApplication, FlockerVolume

# The component's type token; its children keep their own types (flocker:Volume, flocker:Application).
TYPE = "flocker:index:Deployment"


class FilesError(ConfigError, pulumi.RunError):
    """A mistake in Flocker's files: a ``ConfigError``, and a ``RunError`` so that Pulumi reports
    it as its message alone (a traceback would say it is a bug of ours)."""


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


def declare_application(
    item: ConfiguredApplication, opts: pulumi.ResourceOptions, cluster: FlockerCluster | None = None
) -> FlockerApplication:
    """One application that runs on a node, as ``FlockerApplication`` (with a ``FlockerVolume``
    named after it when it has a volume, as Flocker named them), both with ``opts``, on ``cluster``.

    Defaults are left out the way a person would leave them out (no environment is ``{}``,
    the ``never`` restart policy is ``None``), so the inputs equal hand-written ones.
    """
    app: Application = item.application
    if item.node is None:
        raise ValueError(f"application '{app.name}' runs on no node: it is not declared")
    volume = None
    if app.volume is not None:
        data = FlockerVolume(app.name, node=item.node, maximum_size=item.volume_maximum_size, cluster=cluster, opts=opts)
        volume = {"volume": data, "mountpoint": app.volume.mountpoint}
    restart = None
    if app.restart_policy != RestartPolicy():
        restart = {"name": app.restart_policy.name, "maximum_retry_count": app.restart_policy.maximum_retry_count}
    return FlockerApplication(
        app.name,
        image=app.image,
        node=item.node,
        ports=[{"internal": p.internal, "external": p.external} for p in app.ports],
        environment=dict(app.environment),
        volume=volume,
        links=[{"alias": link.alias, "local_port": link.local_port, "remote_port": link.remote_port} for link in app.links],
        mem_limit=app.mem_limit,
        cpu_shares=app.cpu_shares,
        restart_policy=restart,
        command=list(app.command) if app.command is not None else None,
        cluster=cluster,
        opts=opts,
    )


def load_files(deployment_file: str | os.PathLike[str], application_file: str | os.PathLike[str]) -> Configuration:
    """Both files read, and their links checked to be declarable; every mistake a ``FilesError``
    naming the file (and the application and key), before anything is declared."""
    try:
        configuration = load_configuration(deployment_file, application_file)
    except ConfigError as exc:
        raise FilesError(exc.file, exc.reason, application=exc.application, key=exc.key, line=exc.line) from None
    try:
        declaration_order(configuration)
    except ValueError as exc:
        # Link order problems are the application file's too.
        raise FilesError(os.fspath(application_file), str(exc)) from None
    return configuration


class FlockerDeployment(pulumi.ComponentResource):
    """Flocker's files as resources: a ``FlockerApplication`` for every application deployment.yml
    places on a node, with a ``FlockerVolume`` named after it when it has a volume, all children
    of this component. Applications on no node are left out, as Flocker did not run them (a
    resource gone from the program is removed).

    Give ``deployment_file`` and ``application_file`` (Flocker's or Fig's format), or a
    ``configuration`` loaded already; ``cluster``, the ``FlockerCluster`` the nodes of
    deployment.yml are of (default: the stack config's). A mistake in the files raises ``FilesError`` (a
    ``ConfigError`` naming the file, application and key) before any resource is registered.

    Output ``applications``: per application declared, ``{"node", "addresses"}``, as
    ``flocker-deploy`` shows them. ``application_resources``: name -> ``FlockerApplication``.

    The children are aliased to the same names at the stack's root: a stack made by an earlier
    ``flocker-deploy`` (or a program declaring them by hand), whose resources had no parent,
    keeps them rather than deleting them and creating them again.
    """

    applications: pulumi.Output[dict[str, dict[str, Any]]]
    application_resources: dict[str, FlockerApplication]

    def __init__(
        self,
        resource_name: str,
        *,
        deployment_file: str | os.PathLike[str] | None = None,
        application_file: str | os.PathLike[str] | None = None,
        configuration: Configuration | None = None,
        cluster: FlockerCluster | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        if configuration is None:
            if deployment_file is None or application_file is None:
                raise TypeError(f"FlockerDeployment {resource_name}: give deployment_file and application_file, or configuration")
            configuration = load_files(deployment_file, application_file)
        elif deployment_file is not None or application_file is not None:
            raise TypeError(f"FlockerDeployment {resource_name}: give deployment_file and application_file, or configuration, not both")
        try:
            order = declaration_order(configuration)
        except ValueError as exc:
            raise pulumi.RunError(f"FlockerDeployment {resource_name}: {exc}") from exc
        super().__init__(TYPE, resource_name, None, opts)

        # Alias() with the parent given as the root: the same name and type, with no parent.
        child = pulumi.ResourceOptions(parent=self, aliases=[pulumi.Alias(parent=pulumi.ROOT_STACK_RESOURCE)])
        self.application_resources = {item.application.name: declare_application(item, child, cluster) for item in order}
        self.applications = pulumi.Output.from_input(
            {name: {"node": app.node, "addresses": app.addresses} for name, app in self.application_resources.items()}
        )
        self.register_outputs({"applications": self.applications})
