"""``FlockerCluster``: the nodes resources run on, as a value, so that one program can drive
several clusters. Without one, a resource runs on the stack config's (``flocker:nodesFile``,
``flocker:dockerHostTemplate``, ``flocker:tlsDir``, or their environment variables)."""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi

from flocker_provider.nodes import (
    DEFAULT_TEMPLATE,
    Inventory,
    NodeFileError,
    inventory_from_entries,
    inventory_from_settings,
    load_node_file,
    tls_from_dir,
)
from flocker_provider.planning.models import Node, TLSConfig


@functools.cache
def _stack_inventory() -> Inventory:
    # Once per program: every resource without a cluster reads the same node file.
    config = pulumi.Config("flocker")
    try:
        return inventory_from_settings(config.get("nodesFile"), config.get("dockerHostTemplate"), config.get("tlsDir"))
    except NodeFileError as exc:
        raise pulumi.RunError(str(exc)) from exc


@dataclass(frozen=True)
class FlockerCluster:
    """The nodes a resource may be placed on, and every one of which routes its applications'
    external ports. A value: two made of the same node file are the same cluster (they share
    port claims and links); ``name`` only names it in messages.

    A node not listed is reached by its address through ``docker_host_template``
    (``ssh://root@{address}`` by default), with the client certificates of ``tls_dir``.
    """

    inventory: Inventory
    name: str = field(compare=False)

    @classmethod
    def from_node_file(
        cls,
        path: str | os.PathLike[str],
        *,
        docker_host_template: str | None = None,
        tls_dir: str | os.PathLike[str] | None = None,
        name: str | None = None,
    ) -> FlockerCluster:
        """The nodes of a node file (``{"nodes": [{"name", "address", "docker_host", "tls"}]}``)."""
        try:
            inventory = load_node_file(os.fspath(path), docker_host_template or DEFAULT_TEMPLATE, _tls(tls_dir))
        except NodeFileError as exc:
            raise pulumi.RunError(str(exc)) from exc
        return cls(inventory, name or os.fspath(path))

    @classmethod
    def from_nodes(
        cls,
        name: str,
        nodes: Sequence[Mapping[str, Any]],
        *,
        docker_host_template: str | None = None,
        tls_dir: str | os.PathLike[str] | None = None,
    ) -> FlockerCluster:
        """Nodes given as a node file lists them: ``{"name", "address"}``, optionally ``docker_host``
        (default ``ssh://root@ADDRESS``) and ``tls`` (a directory, or ``{"ca_cert", "client_cert", "client_key"}``)."""
        where = f"FlockerCluster {name}"
        try:
            inventory = inventory_from_entries(
                [dict(node) for node in nodes], where, docker_host_template or DEFAULT_TEMPLATE, _tls(tls_dir), source=f"cluster {name}"
            )
        except NodeFileError as exc:
            raise pulumi.RunError(f"{exc.problem}; correct the nodes given to {where}") from exc
        return cls(inventory, name)

    @classmethod
    def from_stack_config(cls) -> FlockerCluster:
        """The stack config's nodes, as a resource given no cluster uses."""
        return cls(_stack_inventory(), "stack config")

    @property
    def nodes(self) -> tuple[Node, ...]:
        """The listed nodes, sorted by name, so that only a node really added or removed changes what routes."""
        return tuple(sorted(self.inventory.nodes, key=lambda n: n.name))

    def resolve(self, node: str) -> Node:
        """The node ``node`` (a listed name or address, or any address) names; LookupError for people."""
        return self.inventory.resolve(node)

    def shared_nodes(self, other: FlockerCluster) -> list[str]:
        """The names of this cluster's nodes that are ``other``'s too (the same address or engine)."""
        theirs = {n.address for n in other.inventory.nodes} | {n.docker_host for n in other.inventory.nodes}
        return [n.name for n in self.nodes if n.address in theirs or n.docker_host in theirs]


def _tls(tls_dir: str | os.PathLike[str] | None) -> TLSConfig | None:
    return tls_from_dir(os.fspath(tls_dir)) if tls_dir else None
