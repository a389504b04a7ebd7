"""Which host port an application's container publishes each internal port on.

The external port belongs to the router on every node, this one included, which forwards it
to a host port of the container's (see docs/architecture.md). That host port is chosen here
rather than left to Docker: Docker picks a new ephemeral port at every start, so a container
restarted by its restart policy or by hand would leave every route pointing at a dead port.
Pure but for the reservations, which are shared by every engine of this process.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import itertools
import threading
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field

from flocker_provider.errors import PortTaken
from flocker_provider.planning.models import Node

HOST_PORT_FIRST = 20000
HOST_PORT_COUNT = 12768  # up to 32767
HOST_PORT_ATTEMPTS = 8


@dataclass
class NodePorts:
    """External ports about to be routed on a node by an application being converged in this
    process; the lock makes choosing a container's host ports and starting it one step for a
    reservation, so that a container either avoids a reserved port or is there, to be moved off it."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    reserved: collections.Counter[int] = field(default_factory=collections.Counter)


_NODE_PORTS: dict[str, NodePorts] = {}
_NODE_PORTS_GUARD = threading.Lock()


def node_ports(node: Node) -> NodePorts:
    with _NODE_PORTS_GUARD:
        return _NODE_PORTS.setdefault(node.docker_host, NodePorts())


@contextlib.contextmanager
def reserved_ports(nodes: Iterable[Node], ports: Collection[int]) -> Iterator[None]:
    """While inside, no container started on ``nodes`` gets one of ``ports`` as a host port: they
    are external ports about to be routed, and every node's router binds them."""
    held = [node_ports(node) for node in dict.fromkeys(nodes)]
    for entry in held:
        with entry.lock:
            entry.reserved.update(ports)
    try:
        yield
    finally:
        for entry in held:
            with entry.lock:
                entry.reserved.subtract(ports)


def host_port(container: str, internal: int, attempt: int) -> int:
    """The host port a container publishes ``internal`` on: the same on every node and every
    start, below the kernel's ephemeral range (32768-60999), where outgoing connections and
    Docker's own picks live; another candidate per attempt when one is taken."""
    digest = hashlib.sha256(f"{container}/{internal}/{attempt}".encode()).digest()
    return HOST_PORT_FIRST + int.from_bytes(digest[:4], "big") % HOST_PORT_COUNT


def host_ports(container: str, internals: Iterable[int], attempt: int, avoid: Collection[int]) -> dict[int, int]:
    """Internal port -> host port: the ``attempt``-th candidate of each that is not in ``avoid``
    nor another internal port's; with nothing to avoid, ``host_port(container, internal, attempt)``."""
    chosen: dict[int, int] = {}
    for internal in dict.fromkeys(internals):
        candidates = (host_port(container, internal, n) for n in range(HOST_PORT_COUNT * 4))
        usable = (port for port in candidates if port not in avoid and port not in chosen.values())
        port = next(itertools.islice(usable, attempt, None), None)
        if port is None:
            raise PortTaken(f"no host port left for {container}: the routes take the whole range {HOST_PORT_FIRST}-32767")
        chosen[internal] = port
    return chosen
