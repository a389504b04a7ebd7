"""The Docker layer's part for the stack's router on a node: starting it, replacing it without
refusing a connection, writing and reading its route files, and removing it with its last
route. A mixin of ``DockerNode`` (as docker-py assembles its API client); the router's own
program is on_node/router.py, the writer it is fed through route_writer.py.
"""

from __future__ import annotations

import io
import json
import re
import secrets
import socket
import tarfile
import threading
import time
from collections.abc import Callable, Collection

import docker
import docker.errors
from docker.models.containers import Container

from flocker_provider import on_node
from flocker_provider.docker_layer.route_writer import COMMAND, ROUTES_DIR, RouteSession, problems, route_lines
from flocker_provider.errors import RoutingFailed
from flocker_provider.on_node.router import RETIRE_SECONDS, RETIRE_SIGNAL, TAKEOVER_FILE
from flocker_provider.planning import labels as L
from flocker_provider.planning.containers import MountedContainer, RouterSpec
from flocker_provider.planning.models import Node

PROBE_TIMEOUT = 1.0
# The router removes its iptables rules when it gets SIGTERM (well under a second); a router
# killed without that time would leave them, and only a router of the same stack starting on
# that node again would clean them up.
ROUTER_STOP_TIMEOUT = 10
# How long a take-over waits for the new router to hold the ports before removing the old
# one anyway, and how often it looks (an exec each).
TAKEOVER_READY_SECONDS = 10
TAKEOVER_POLL = 0.05
# A router that retires on RETIRE_SIGNAL (on_node/router.py) says so by this label's value;
# one without it (made by an older provider) is killed as before.
RETIRES_ON = RETIRE_SIGNAL.name
# How long past the router's own limit the provider waits for a retiring router to exit.
RETIRE_MARGIN = 5.0
# Several resources change routes at once (the engine runs up to 4 operations in
# parallel): starting a router, writing its files and removing it with its last route
# must not interleave, or a route could be written into a router that is going away.
# One lock per router, so that the routers of different nodes are written at once.
_ROUTER_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_ROUTER_LOCKS_GUARD = threading.Lock()


class RouterLifecycle:
    """What ``DockerNode`` provides to these methods."""

    node: Node
    client: docker.DockerClient
    _started_with: Callable[..., Container]
    _containers: Callable[..., list[Container]]
    find_container: Callable[[str], Container | None]
    ensure_image: Callable[[str], None]
    create_volume: Callable[[str, dict[str, str]], None]
    remove_volume: Callable[[str], None]
    remove_container: Callable[..., None]
    host_port_holders: Callable[[Collection[int], RouterSpec], tuple[MountedContainer, ...]]
    published_port_owner: Callable[[int], str | None]

    def __init__(self) -> None:
        # Route sessions by router container id; None once opening one failed here (a
        # transport that cannot hijack a connection): then an exec per write.
        self._route_sessions: dict[str, RouteSession] | None = {}

    def close_route_sessions(self) -> None:
        for session in (self._route_sessions or {}).values():
            session.close()

    # -- reads -------------------------------------------------------------------------

    def read_routes(self, router: RouterSpec) -> dict[int, dict]:
        """The route files of our router on this node (a read through the archive API)."""
        container = self.find_container(router.name)
        return {} if container is None else self._route_files(container)

    def _route_files(self, container: Container) -> dict[int, dict]:
        try:
            stream, _ = container.get_archive(ROUTES_DIR)
        except docker.errors.NotFound:
            return {}
        routes = {}
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
            for member in archive.getmembers():
                match = re.fullmatch(r"ports/(\d+)\.json", member.name)
                handle = archive.extractfile(member) if match else None
                if handle is not None:
                    routes[int(match.group(1))] = json.loads(handle.read())
        return routes

    def _routed_ports(self) -> set[int]:
        """The external ports of every stack's router on this node (routers bind them all)."""
        routers = self._containers(all=True, filters={"label": [f"{L.MANAGED}=true", f"{L.KIND}={L.KIND_ROUTER}"]})
        return {port for router in routers for port in self._route_files(router)}

    def port_user(self, port: int, router: RouterSpec) -> str | None:
        """Who, other than the stack's own router, already holds external ``port`` on this node."""
        if port in self.read_routes(router):
            # Ours, of this stack: this application's, or one the program no longer declares
            # (the SDK rejects two applications of one program with the same port), whose
            # routes this application takes over.
            return None
        if self.host_port_holders((port,), router):
            # The host port of one of the stack's applications, chosen before the port was
            # routed: converging this application moves it to another one first.
            return None
        owner = self.published_port_owner(port)
        if owner is not None:
            return f"container {owner}"
        # A program on the node itself (or another stack's router on the host network) is
        # invisible to the Docker API; a connection it accepts is what shows it.
        try:
            socket.create_connection((self.node.address, port), timeout=PROBE_TIMEOUT).close()
        except OSError:
            return None
        return f"a program flocker-pulumi did not start, listening on {self.node.address}:{port}"

    # -- changes -----------------------------------------------------------------------

    def point_routes(self, router: RouterSpec, routes: dict[int, dict]) -> None:
        """Write route files (``{"target", "hold_seconds", "application"}`` per external port)
        and return once the router has put every one in force."""
        with self._router_lock(router):
            container = self._ensure_router(router)
            answers = self._write_routes(container, route_lines(routes))
            found = problems(answers, sorted(routes), router.name)
            if found:
                raise RoutingFailed("; ".join(found), node=self.node.name)

    def prepare_routes(self, router: RouterSpec) -> None:
        """The router running and a route session open, before a move's application stops."""
        with self._router_lock(router):
            container = self._ensure_router(router)
            if self._route_sessions is not None and container.id not in self._route_sessions:
                self._open_session(container.id)

    def _write_routes(self, container: Container, lines: list[str]) -> list[str]:
        if self._route_sessions is not None:
            session = self._route_sessions.get(container.id) or self._open_session(container.id)
            if session is not None:
                try:
                    return session.write(lines)
                except Exception:  # a broken session: the write is idempotent, so an exec does it again
                    session.close()
                    del self._route_sessions[container.id]
        result = container.exec_run([*COMMAND, *lines])
        return result.output.decode(errors="replace").splitlines()

    def _open_session(self, container_id: str) -> RouteSession | None:
        assert self._route_sessions is not None
        try:
            session = self._route_sessions[container_id] = RouteSession(self.client.api, container_id)
        except Exception:  # a transport that cannot hijack the connection: an exec per write from now on
            self._route_sessions = None
            return None
        return session

    def remove_routes(self, router: RouterSpec, application: str, ports: tuple[int, ...]) -> None:
        """Remove ``application``'s route files; the router and its volume go once none is left."""
        with self._router_lock(router):
            if self.find_container(router.name) is None:
                return
            found = self.read_routes(router)
            mine = [p for p in ports if p in found and found[p].get("application") == application]
            if mine:
                # Through a running router (started again if it had stopped): a stopped
                # container cannot run the removal, and other applications' routes must stay.
                result = self._ensure_router(router).exec_run(["rm", "-f", *(f"{ROUTES_DIR}/{p}.json" for p in mine)])
                if result.exit_code != 0:
                    raise RoutingFailed(f"removing routes failed: {result.output.decode(errors='replace')}", node=self.node.name)
            if not self.read_routes(router):
                self.remove_container(router.name, timeout=ROUTER_STOP_TIMEOUT)
                self.remove_container(router.predecessor, timeout=ROUTER_STOP_TIMEOUT)  # of a take-over cut short
                self.remove_volume(router.volume)

    # -- the router container ----------------------------------------------------------

    def _router_lock(self, router: RouterSpec) -> threading.Lock:
        with _ROUTER_LOCKS_GUARD:
            return _ROUTER_LOCKS.setdefault((self.node.docker_host, router.name), threading.Lock())

    def _ensure_router(self, router: RouterSpec) -> Container:
        predecessor = self.find_container(router.predecessor)
        if predecessor is not None:  # a take-over that did not finish
            predecessor.remove(force=True)
        container = self.find_container(router.name)
        wanted = router.program_hash()
        if container is not None and container.status == "running" and container.labels.get(L.CONFIG_HASH) == wanted:
            return container
        if container is not None and container.status == "running":
            return self._take_over(router, container, wanted)
        if container is not None:
            container.remove(force=True)  # stopped: nothing to hand over
        return self._run_router(router, wanted)

    def _take_over(self, router: RouterSpec, old: Container, wanted: str) -> Container:
        """An older router replaced without refusing connections (see ``--take-over`` in
        on_node/router.py): the new one starts beside it, reads the routes and holds new
        connections at their SYN; then the old one goes (SIGKILL: its iptables rules, marked
        like the new one's, are the new one's now) and the new one binds its ports. An old one
        that can retire is asked to (it closes its listeners and finishes its connections) rather
        than killed."""
        old.rename(router.predecessor)
        token = secrets.token_hex(8)
        try:
            new = self._run_router(router, wanted, take_over=token)
        except Exception:
            old.rename(router.name)  # still serving: it stays until a new one can start
            raise
        deadline = time.monotonic() + TAKEOVER_READY_SECONDS
        while time.monotonic() < deadline:
            if new.exec_run(["cat", f"/routes/{TAKEOVER_FILE}"]).output.strip() == token.encode():
                break
            new.reload()
            if new.status != "running":
                break  # the old one must go anyway: the new one restarts (restart policy) and binds then
            time.sleep(TAKEOVER_POLL)
        if old.labels.get(L.RETIRES_ON) == RETIRES_ON:
            self._retire(old)
        old.remove(force=True)
        return new

    def _retire(self, old: Container) -> None:
        try:
            old.update(restart_policy={"Name": "no"})  # its exit is final
            old.kill(signal=RETIRES_ON)
            old.wait(timeout=RETIRE_SECONDS + RETIRE_MARGIN)
        except (docker.errors.APIError, OSError):
            pass  # gone already, or still draining past its limit: removed by force now

    def _run_router(self, router: RouterSpec, wanted: str, take_over: str | None = None) -> Container:
        self.ensure_image(router.image)
        self.create_volume(router.volume, dict(router.labels))
        # --kernel-forwarding: the router DNATs routes to other nodes with iptables (see
        # docs/architecture.md); with the tag its rules are told apart from everyone else's.
        command = on_node.command("router", "--routes-dir", ROUTES_DIR, "--kernel-forwarding", "--rule-tag", router.name)
        return self._started_with(
            on_node.ROUTER,
            router.image,
            command=[*command, "--take-over", take_over] if take_over else command,
            name=router.name,
            # The host network: the router listens on the node's own addresses.
            network_mode="host",
            # iptables in the node's network namespace. Without it (some hosts do not grant it)
            # the router logs that once and proxies every connection.
            cap_add=["NET_ADMIN"],
            labels={**dict(router.labels), L.CONFIG_HASH: wanted, L.RETIRES_ON: RETIRES_ON},
            volumes={router.volume: {"bind": "/routes", "mode": "rw"}},
            restart_policy={"Name": "always"},
        )
