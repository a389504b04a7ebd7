"""Where nodes are and how to reach their Docker engines.

A node is named in a resource by a name from the node file (``.cluster/nodes.json``
of the local cluster, or one you write for real hosts) or by a bare address. A bare
address is reached through a template, ``ssh://root@{address}`` by default, as
Flocker reached its nodes over SSH.

An engine on plain TCP (no TLS) off this machine is refused unless its node file entry says
``"insecure_plain_tcp": true``: whoever reaches that port drives a root dockerd, and any
container on any node can reach it.
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from flocker_provider.errors import NodeFileError
from flocker_provider.planning.models import Node, TLSConfig

DEFAULT_TEMPLATE = "ssh://root@{address}"
NODES_FILE_ENV = "FLOCKER_NODES_FILE"
TEMPLATE_ENV = "FLOCKER_DOCKER_HOST_TEMPLATE"
TLS_DIR_ENV = "FLOCKER_TLS_DIR"
INSECURE_KEY = "insecure_plain_tcp"


@dataclass(frozen=True)
class Inventory:
    """Known nodes plus the rule for addresses that are not listed."""

    nodes: tuple[Node, ...] = ()
    template: str = DEFAULT_TEMPLATE
    tls: TLSConfig | None = None
    # Where the nodes are listed ("node file PATH"), for messages; with it, a name that is
    # not listed and not an address is a typo rather than a host name.
    source: str | None = None

    def resolve(self, ref: str) -> Node:
        """The node ``ref`` names; raises LookupError with a message for people."""
        ref = ref.strip()
        for node in self.nodes:
            if ref in (node.name, node.address):
                return node
        if not ref:
            raise LookupError("node is empty; name a node from the node file or give an address")
        if self.source is not None and not _looks_like_address(ref):
            known = ", ".join(n.name for n in self.nodes) or "none"
            raise LookupError(f"unknown node '{ref}': not in {self.source} (known: {known}) and not an address")
        node = Node(name=ref, address=ref, docker_host=self.template.format(address=ref), tls=self.tls)
        why = plain_tcp_refusal(node)
        if why is not None:
            raise LookupError(
                f"node {ref}: {why}; set flocker:tlsDir (ca.pem, cert.pem, key.pem) for engines run with --tlsverify, "
                f'reach it over SSH (an ssh:// template), or list it in a node file with "{INSECURE_KEY}": true'
            )
        return node


def _looks_like_address(ref: str) -> bool:
    # An IPv4/IPv6 literal or a dotted host name: anything else is a typo of a node name.
    return ":" in ref or ref.count(".") >= 1


def plain_tcp_refusal(node: Node) -> str | None:
    """What is wrong with reaching ``node``'s engine as it is given, if anything: plain TCP
    without TLS to an address off this machine. Loopback stays open: what ends there (a
    tunnel, a proxy of one's own) is this machine's."""
    parts = urlsplit(node.docker_host)
    if node.tls is not None or parts.scheme not in ("tcp", "http") or _is_loopback(parts.hostname or ""):
        return None
    return (
        f"{node.docker_host} is plain TCP without TLS: whoever reaches that port, any container on any node "
        "included, drives the engine as root"
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def tls_from_dir(path: str) -> TLSConfig:
    """Docker's convention: ca.pem, cert.pem, key.pem in one directory."""
    return TLSConfig(
        ca_cert=os.path.join(path, "ca.pem"),
        client_cert=os.path.join(path, "cert.pem"),
        client_key=os.path.join(path, "key.pem"),
    )


def _node_from_entry(entry: object, path: str, index: int) -> Node:
    if not isinstance(entry, dict):
        raise NodeFileError(f"{path}: nodes[{index}]: expected a mapping with name, address, docker_host")
    missing = [k for k in ("name", "address") if not isinstance(entry.get(k), str) or not entry.get(k)]
    if missing:
        raise NodeFileError(f"{path}: nodes[{index}]: missing {', '.join(missing)}")
    tls = entry.get("tls")
    tls_config = None
    if isinstance(tls, dict):
        tls_config = TLSConfig(tls["ca_cert"], tls["client_cert"], tls["client_key"])
    elif isinstance(tls, str):
        tls_config = tls_from_dir(tls)
    docker_host = entry.get("docker_host") or DEFAULT_TEMPLATE.format(address=entry["address"])
    node = Node(name=entry["name"], address=entry["address"], docker_host=docker_host, tls=tls_config)
    insecure = entry.get(INSECURE_KEY, False)
    if not isinstance(insecure, bool):
        raise NodeFileError(f"{path}: nodes[{index}] ({node.name}): {INSECURE_KEY}: expected true or false, got {insecure!r}")
    why = None if insecure else plain_tcp_refusal(node)
    if why is not None:
        raise NodeFileError(
            f'{path}: nodes[{index}] ({node.name}): {why}; give the entry "tls" (a directory with ca.pem, cert.pem, '
            "key.pem) for an engine run with --tlsverify, on port 2376, reach it over SSH (ssh://user@host), or, on a "
            f'network no one else reaches, opt in with "{INSECURE_KEY}": true in the entry'
        )
    return node


def load_node_file(path: str, template: str = DEFAULT_TEMPLATE, tls: TLSConfig | None = None) -> Inventory:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError as exc:
        raise NodeFileError(f"{path}: node file not found") from exc
    except (OSError, ValueError) as exc:
        raise NodeFileError(f"{path}: cannot read node file: {exc}") from exc
    entries = data.get("nodes") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise NodeFileError(f'{path}: expected {{"nodes": [...]}}')
    return inventory_from_entries(entries, path, template, tls, source=f"node file {path}")


def inventory_from_entries(
    entries: list[object], where: str, template: str = DEFAULT_TEMPLATE, tls: TLSConfig | None = None, *, source: str
) -> Inventory:
    """Nodes as a node file lists them; ``where`` prefixes a mistake in an entry, ``source``
    names the list for an unknown node."""
    nodes = tuple(_node_from_entry(e, where, i) for i, e in enumerate(entries))
    return Inventory(nodes=nodes, template=template, tls=tls, source=source)


def inventory_from_settings(nodes_file: str | None, template: str | None, tls_dir: str | None) -> Inventory:
    """Settings come from Pulumi config or the environment; the environment wins."""
    nodes_file = os.environ.get(NODES_FILE_ENV) or nodes_file
    template = os.environ.get(TEMPLATE_ENV) or template or DEFAULT_TEMPLATE
    tls_dir = os.environ.get(TLS_DIR_ENV) or tls_dir
    tls = tls_from_dir(tls_dir) if tls_dir else None
    if nodes_file:
        return load_node_file(nodes_file, template, tls)
    return Inventory(template=template, tls=tls)
