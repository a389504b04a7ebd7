"""deployment.yml: ``{version: 1, nodes: {address: [application, ...]}}``."""

from __future__ import annotations

from dataclasses import dataclass

from . import fields
from .errors import Where, describe


@dataclass(frozen=True)
class NodeEntry:
    """One application name listed on a node, and where it was written."""

    node: str
    application: str
    where: Where


@dataclass(frozen=True)
class Deployment:
    nodes: tuple[str, ...]
    entries: tuple[NodeEntry, ...]


def parse_deployment(file: str, document: dict) -> Deployment:
    """Shape only; whether the names exist is checked against application.yml later."""
    where = Where(file)
    fields.check_version(where, document)
    fields.require_keys(where, document, {"nodes": "a mapping of node addresses to application lists"})
    fields.check_known_keys(where, document, ("version", "nodes"))
    nodes = fields.expect_mapping(
        where.at("nodes"),
        document["nodes"],
        "a mapping of node addresses to application lists",
    )
    addresses: list[str] = []
    entries: list[NodeEntry] = []
    for address, listed in nodes.items():
        address = fields.node_address(where.at("nodes"), address)
        at = where.at("nodes").at(address)
        names = fields.expect_list(at, listed, "a list of application names (use [] for none)")
        seen: set[str] = set()
        for index, name in enumerate(names):
            if not isinstance(name, str):
                at.at(index).fail(f"expected an application name, got {describe(name)}")
            if name in seen:
                Where(file, name, at.at(index).key).fail(f"listed twice on node '{address}'")
            seen.add(name)
            entries.append(NodeEntry(address, name, Where(file, name, at.at(index).key)))
        addresses.append(address)
    return Deployment(tuple(addresses), tuple(entries))
