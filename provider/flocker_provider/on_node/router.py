"""A TCP router that runs on every Docker node so that moving an application never refuses a connection.

Why this exists: ClusterHQ Flocker routed each application's external port on every node to the node
that ran it, but its proxies were rewritten at the moment of a move. During the move, connections
were refused (the old container was gone, nothing listened yet), and the proxies switched to the
destination before the application there was actually up. Clients saw resets and "connection
refused" for the whole cutover.

This router keeps every application's external port open on every node for as long as the
application exists, and the provider steers it through a tiny file per port:

    <routes-dir>/<port>.json   {"target": "ADDRESS:PORT" | null, "hold_seconds": 30}

* ``target`` set: new connections are forwarded there. If connecting fails (the application is
  starting), the router keeps retrying every RETRY_INTERVAL (0.01 s), re-reading the route each time, for up to
  ``hold_seconds`` after the connection arrived; the client only sees a slower connect.
* ``target`` null: a cutover is in progress. New connections are accepted and *held* (nothing is
  read or written) until a target appears, then forwarded with the bytes the client already sent.
* Changing the target never closes the listener; connections already spliced stay on the old
  target until it closes them, which is what lets a move drain gracefully.

Once a route file is in force, the router copies it to ``<routes-dir>/../applied/<port>.json``;
the provider's write waits until the copy equals what it wrote, so it knows (rather than
guesses from the poll interval) that a hold is in force on every node before it stops the
application. A starting router clears the copies of its predecessor.

The provider puts this package into a "router" container and runs this module there
(``on_node.command("router", "--routes-dir", "/routes/ports", ...)``), so it and the modules it
imports use only the Python 3.11 standard library and nothing of the project outside this package.

Kernel forwarding (``--kernel-forwarding``, kernel_forwarding.py): once a route's target on
another node has accepted a connection, iptables rules DNAT new connections to it, and the
proxy's listener underneath holds them again whenever the route changes.

Counters are written to ``<routes-dir>/../router-stats.json`` every second they changed, so that
tests and the provider can check how a cutover went (how many connections were held, for how long).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import ipaddress
import json
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

from .kernel_forwarding import KernelForwarding
from .router_log import log
from .routes import ROUTE_FILE, DirectoryChanges, RouteError, format_target, parse_route
from .splicing import Copy, Splice

# Both are part of a move's downtime: the provider waits until a hold is acknowledged, which
# happens at the next poll (at once when the writer wakes the router with SIGUSR1, see
# WAKE_FILE), and a connection held for a starting application waits up to one retry
# interval longer than it must (the route reaches a staged application a few tens of
# milliseconds before it listens). A poll is one stat of the routes directory unless that
# changed (routes.DirectoryChanges), a failed connect one local round trip: cheap at these rates.
POLL_INTERVAL = 0.03
# The router's pid, beside the routes directory: a route writer that finds it sends SIGUSR1 to
# have the file read now. Only a router that handles the signal writes it (the default action
# of SIGUSR1 would kill a router that does not).
WAKE_FILE = "router.pid"
# Taking over from a running predecessor (``--take-over TOKEN``): once the routes are read and
# new connections' SYNs to them are dropped (TCP sends a dropped SYN again after a second:
# held, not refused), this file beside the routes says TOKEN (the routes volume outlives
# routers: an earlier take-over's file must not pass for this one's). The provider then
# removes the predecessor, and the ports are bound within TAKEOVER_BIND_RETRY. The drop rules
# go once every port is listened on, or after TAKEOVER_SECONDS whatever happens.
TAKEOVER_FILE = "takeover.ready"
TAKEOVER_BIND_RETRY = 0.01
TAKEOVER_SECONDS = 10.0
# The predecessor is not killed: the provider sends it RETIRE_SIGNAL (SIGKILL would cut the
# connections it still forwards; a client saw one go in CI). A retiring router closes its
# listeners at once (the successor binds them within TAKEOVER_BIND_RETRY), stops reading routes
# and touching iptables (the rules are the successor's now), lets the connections it holds
# finish for up to RETIRE_SECONDS, then exits leaving the routes volume as it is.
RETIRE_SIGNAL = signal.SIGUSR2
RETIRE_SECONDS = 5.0
RETRY_INTERVAL = 0.01
BIND_RETRY_INTERVAL = 0.1
STATS_INTERVAL = 1.0
# A single attempt is capped so that a black-holed target cannot keep a held connection from
# noticing that the route now points somewhere else.
CONNECT_ATTEMPT_TIMEOUT = 1.0
# Hundreds of clients may reconnect at once right after a cutover; the default of 100 would drop SYNs.
LISTEN_BACKLOG = 1024
ACCEPT_BATCH = 64

# Kernel forwarding (kernel_forwarding.py). A target is probed until it accepts (then its DNAT
# rule goes in), first after PROBE_INTERVAL, then twice as long after each refusal up to
# PROBE_INTERVAL_MAX: a target that refuses for long (an application that does not listen, or
# has not started) costs hundreds of routes' routers a connect each per PROBE_INTERVAL_MAX, not
# per half second; a proxied connection that reaches it proves it at once anyway. A proven
# target is checked every HEALTH_INTERVAL, so that one that stops accepting (a crashed
# application) is taken out of the kernel's hands and new connections are held by the proxy again.
PROBE_INTERVAL = 0.5
PROBE_INTERVAL_MAX = 8.0
HEALTH_INTERVAL = 1.0


class Stats:
    """Counters since start, written to router-stats.json.

    A connection is "held" when it could not be forwarded at once, whether the target was null or
    refused; each held connection ends as held_released (then counted as forwarded too) or
    held_timed_out. max_hold_seconds is the longest wait of a released connection, i.e. how long a
    cutover made clients wait. connect_failures counts failed attempts, not connections.
    Connections the kernel forwards (kernel_ports: the external ports DNATed right now, with
    kernel_backend) never reach the router and are not counted.
    """

    def __init__(self) -> None:
        self.accepted = 0
        self.forwarded = 0
        self.held = 0
        self.held_released = 0
        self.held_timed_out = 0
        self.connect_failures = 0
        self.max_hold_seconds = 0.0
        self.active = 0
        self.waiting = 0
        self.kernel_backend: str | None = None
        self.kernel_ports: list[int] = []

    def as_dict(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "forwarded": self.forwarded,
            "held": self.held,
            "held_released": self.held_released,
            "held_timed_out": self.held_timed_out,
            "connect_failures": self.connect_failures,
            "max_hold_seconds": round(self.max_hold_seconds, 3),
            "active": self.active,
            "waiting": self.waiting,
            "kernel_backend": self.kernel_backend,
            "kernel_ports": self.kernel_ports,
        }


class Route:
    """One external port. Mutated in place on file changes so listeners and held connections see the new target."""

    def __init__(self, port: int, target: tuple[str, int] | None, hold_seconds: float) -> None:
        self.port = port
        self.target = target
        self.hold_seconds = hold_seconds
        self.removed = False
        self.listener: socket.socket | None = None
        self.bind_task: asyncio.Task[None] | None = None
        # The target last seen accepting a connection; only then may the kernel forward to it.
        self.proven: tuple[str, int] | None = None
        # Probes self.target for kernel forwarding; None when the kernel cannot forward to it.
        self.watch_task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    def update(self, target: tuple[str, int] | None, hold_seconds: float) -> None:
        self.target = target
        self.hold_seconds = hold_seconds
        self.notify()

    def notify(self) -> None:
        # A fresh event per change: waiters that grabbed the old one wake up, later ones wait for the next.
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_changed(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), max(timeout, 0.0))


class Router:
    def __init__(
        self,
        routes_dir: str | os.PathLike[str],
        listen_address: str = "0.0.0.0",
        use_splice: bool = True,
        kernel: KernelForwarding | None = None,
        take_over: str | None = None,
    ) -> None:
        self.routes_dir = Path(routes_dir)
        self.kernel = kernel
        self.stats_path = Path(os.path.abspath(self.routes_dir)).parent / "router-stats.json"
        self.applied_dir = Path(os.path.abspath(self.routes_dir)).parent / "applied"
        self.wake_path = Path(os.path.abspath(self.routes_dir)).parent / WAKE_FILE
        self.takeover_path = self.wake_path.with_name(TAKEOVER_FILE)
        # Until when new connections' SYNs are dropped while the predecessor goes; None: not taking over.
        self.taking_over_until: float | None = time.monotonic() + TAKEOVER_SECONDS if take_over else None
        self.takeover_token = take_over
        self.listen_address = listen_address
        self.use_splice = use_splice and hasattr(os, "splice")
        self.stats = Stats()
        self.routes: dict[int, Route] = {}
        # Stat signature of each route file as last read, so unchanged files are not re-parsed every poll
        # and a malformed file is logged once rather than ten times a second.
        self._seen: dict[int, tuple[int, int, int]] = {}
        self._changes = DirectoryChanges(self.routes_dir)
        # Route files applied to a port not listened on yet: acknowledged once it is, so that a
        # port held by someone else fails the provider's write instead of passing silently.
        self._unacknowledged: dict[int, bytes] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Accepted clients not yet forwarded (held or connecting), and forwarded connections.
        self._waiting: set[socket.socket] = set()
        self.connections: set[Splice | Copy] = set()
        self._dir_error: str | None = None
        self._stats_error: str | None = None
        self._stats_written: str | None = None
        self.retiring = False

    # Route files

    def poll(self) -> None:
        try:
            if self._changes.unchanged():
                return
            entries = list(os.scandir(self.routes_dir))
        except OSError as error:
            # Keep serving the last known routes: a missing mount is more likely transient than a wish to drop everything.
            if self._dir_error != str(error):
                self._dir_error = str(error)
                log(f"cannot read routes directory {self.routes_dir}: {error}")
            return
        self._dir_error = None
        self._changes.read()
        present: set[int] = set()
        for entry in entries:
            match = ROUTE_FILE.match(entry.name)
            if not match:
                continue
            port = int(match.group(1))
            if not 1 <= port <= 65535:
                continue
            try:
                st = entry.stat()
            except OSError:
                continue
            present.add(port)
            signature = (st.st_ino, st.st_mtime_ns, st.st_size)
            if self._seen.get(port) == signature:
                continue
            self._seen[port] = signature
            try:
                raw = Path(entry.path).read_bytes()
                target, hold = parse_route(raw)
            except FileNotFoundError:
                present.discard(port)
                self._seen.pop(port, None)
                continue
            except (OSError, RouteError) as error:
                log(f"ignoring route file {entry.name}: {error}")
                continue
            self._apply(port, target, hold)
            if self.routes[port].listener is None:
                self._unacknowledged[port] = raw
            else:
                self._acknowledge(port, raw)
        for port in list(self.routes):
            if port not in present:
                self._remove(port)
        for port in list(self._seen):
            if port not in present:
                del self._seen[port]

    def _apply(self, port: int, target: tuple[str, int] | None, hold: float) -> None:
        route = self.routes.get(port)
        if route is None:
            route = Route(port, target, hold)
            self.routes[port] = route
            route.bind_task = self.spawn(self._open_listener(route))
            self._target_changed(route)
            return
        if (route.target, route.hold_seconds) != (target, hold):
            log(f"port {port}: target {format_target(route.target)} -> {format_target(target)} (hold {hold:g} s)")
            route.update(target, hold)
            self._target_changed(route)

    def _acknowledge(self, port: int, raw: bytes) -> None:
        """``applied/<port>.json`` = the route file's bytes once the route is in force (the port
        listened on, the kernel's rule in place): the provider waits for it instead of guessing how long a
        poll takes, so a hold is known to be in force before the application stops."""
        temporary = self.applied_dir / f".{port}.json.tmp"
        try:
            temporary.write_bytes(raw)
            os.replace(temporary, self.applied_dir / f"{port}.json")
        except OSError as error:
            log(f"cannot acknowledge port {port}: {error}")

    def _clear_acknowledgements(self) -> None:
        # A fresh router has applied nothing yet: an acknowledgement from its predecessor must not count.
        with contextlib.suppress(OSError):
            shutil.rmtree(self.applied_dir)
        try:
            self.applied_dir.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            log(f"cannot create {self.applied_dir}: {error}")

    def _start_takeover(self) -> None:
        """Read the routes (their ports are still the predecessor's), drop new connections' SYNs
        to them, and say so: the provider removes the predecessor then."""
        with contextlib.suppress(OSError):
            self.takeover_path.unlink()
        self.poll()
        ports = sorted(self.routes)
        dropped = self.kernel is not None and self.kernel.drop_syns(ports)
        log(
            f"taking over ports {ports}"
            + (": new connections wait for their SYN's second try" if dropped else " (no iptables: refused meanwhile)")
        )
        try:
            self.takeover_path.write_text(f"{self.takeover_token}\n")
        except OSError as error:
            log(f"cannot write {self.takeover_path}: {error}")

    def _end_takeover(self, why: str) -> None:
        self.taking_over_until = None
        if self.kernel is not None:
            self.kernel.release_syns()
        log(f"took over ({why})")

    def _write_wake_file(self) -> None:
        temporary = self.wake_path.with_name(f".{WAKE_FILE}.tmp")
        try:
            temporary.write_text(f"{os.getpid()}\n")
            os.replace(temporary, self.wake_path)
        except OSError as error:
            log(f"cannot write {self.wake_path} (route writers will wait for polls): {error}")

    def _remove(self, port: int) -> None:
        self._unacknowledged.pop(port, None)
        with contextlib.suppress(OSError):
            (self.applied_dir / f"{port}.json").unlink()
        route = self.routes.pop(port)
        route.removed = True
        if route.bind_task is not None and not route.bind_task.done():
            route.bind_task.cancel()
        self._close_listener(route)
        # Wakes held connections, which then close: the application is gone.
        route.notify()
        self._target_changed(route)

    async def _open_listener(self, route: Route) -> None:
        logged: int | None = None
        while not route.removed:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setblocking(False)
                sock.bind((self.listen_address, route.port))
                sock.listen(LISTEN_BACKLOG)
            except OSError as error:
                sock.close()
                # EADDRINUSE is expected while a previous router or another program still holds the port.
                if logged != error.errno:
                    logged = error.errno
                    reason = "address in use" if error.errno == errno.EADDRINUSE else str(error)
                    log(f"cannot listen on {self.listen_address}:{route.port} ({reason}); retrying every {BIND_RETRY_INTERVAL:g} s")
                await asyncio.sleep(TAKEOVER_BIND_RETRY if self.taking_over_until is not None else BIND_RETRY_INTERVAL)
                continue
            route.listener = sock
            self._resume_accepting(route)
            if self.taking_over_until is not None and all(r.listener is not None for r in self.routes.values()):
                self._end_takeover("every port listened on")
            raw = self._unacknowledged.pop(route.port, None)
            if raw is not None:
                self._acknowledge(route.port, raw)
            log(f"listening on {self.listen_address}:{route.port} -> {format_target(route.target)}")
            return

    def _close_listener(self, route: Route) -> None:
        sock, route.listener = route.listener, None
        if sock is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()
            log(f"closed listener on {self.listen_address}:{route.port}")

    def _resume_accepting(self, route: Route) -> None:
        if route.listener is not None and not route.removed:
            asyncio.get_running_loop().add_reader(route.listener.fileno(), self._accept, route)

    # Kernel forwarding

    def _target_changed(self, route: Route) -> None:
        """Takes the kernel's DNAT rule away at once unless the new target is proven, and starts
        proving it. Synchronous (one iptables-restore, some milliseconds): the route is
        acknowledged only after this, and a hold must be in force before the application stops."""
        if self.kernel is None or not self.kernel.enabled:
            return
        if route.proven != route.target:
            route.proven = None
        if route.watch_task is not None:
            route.watch_task.cancel()
            route.watch_task = None
        if not route.removed and self.kernel.can_forward_to(route.target):
            assert route.target is not None
            route.watch_task = self.spawn(self._watch(route, route.target))
        self._sync_kernel()

    def _sync_kernel(self) -> None:
        if self.kernel is None or not self.kernel.enabled:
            return
        forwards = {
            port: route.target
            for port, route in self.routes.items()
            if route.target is not None and route.proven == route.target and route.watch_task is not None
        }
        if not self.kernel.apply(forwards, self.routes):
            # Off for good now (logged): the listeners take every connection again.
            for route in self.routes.values():
                if route.watch_task is not None:
                    route.watch_task.cancel()
                    route.watch_task = None

    def _proven(self, route: Route, target: tuple[str, int], accepts: bool) -> None:
        if route.removed or route.target != target or route.watch_task is None:
            return  # the route moved on meanwhile, or the kernel does not forward it
        if accepts and route.proven != target:
            route.proven = target
            log(f"port {route.port}: {format_target(target)} accepts; the kernel forwards new connections")
            self._sync_kernel()
        elif not accepts and route.proven == target:
            route.proven = None
            log(f"port {route.port}: {format_target(target)} stopped accepting; the proxy takes new connections")
            self._sync_kernel()

    async def _watch(self, route: Route, target: tuple[str, int]) -> None:
        """Probes the target until it accepts, then keeps checking that it still does.

        A proxied connection that reaches the target proves it too (usually first, during a
        move); the probe is for targets nobody connects to through the proxy.
        """
        waits = probe_waits()
        while True:
            try:
                sock = await self._connect(target, CONNECT_ATTEMPT_TIMEOUT)
            except (OSError, TimeoutError):
                accepts = False
            else:
                sock.close()
                accepts = True
            self._proven(route, target, accepts)
            if accepts:
                waits = probe_waits()
            await asyncio.sleep(HEALTH_INTERVAL if accepts else next(waits))

    # Connections

    def _accept(self, route: Route) -> None:
        listener = route.listener
        if listener is None:
            return
        # Bounded so that a flood of connects on one port cannot starve the others.
        for _ in range(ACCEPT_BATCH):
            try:
                client, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as error:
                # Out of descriptors or memory: stop accepting for a moment rather than spin;
                # the backlog keeps the waiting clients.
                log(f"port {route.port}: accept failed ({error}); pausing accepts for 1 s")
                loop = asyncio.get_running_loop()
                loop.remove_reader(listener.fileno())
                loop.call_later(1.0, self._resume_accepting, route)
                return
            client.setblocking(False)
            _set_nodelay(client)
            self.stats.accepted += 1
            self.spawn(self._forward(route, client))

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coroutine)
        # The loop only keeps weak references to tasks.
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _connect(self, target: tuple[str, int], timeout: float) -> socket.socket:
        loop = asyncio.get_running_loop()
        host, port = target
        try:
            family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
            address: tuple[Any, ...] = (host, port)
        except ValueError:
            # A name: resolve it (in the loop's thread pool) rather than block the loop.
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            family, _, _, _, address = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            _set_nodelay(sock)
            await asyncio.wait_for(loop.sock_connect(sock, address), timeout)
        except BaseException:
            sock.close()
            raise
        return sock

    async def _forward(self, route: Route, client: socket.socket) -> None:
        """Connect a just-accepted client to the route's target, holding it while there is none.

        The client socket is not registered with the loop until it is spliced: whatever it sends
        while held waits in the kernel and is delivered once a target accepts.
        """
        loop = asyncio.get_running_loop()
        arrival = loop.time()
        held = False
        self._waiting.add(client)
        try:
            while True:
                if route.removed:
                    client.close()
                    if held:
                        log(f"port {route.port}: held connection closed after {loop.time() - arrival:.2f} s (route removed)")
                    return
                # Re-read on every attempt: the file may have changed the target or the hold meanwhile.
                target = route.target
                remaining = arrival + route.hold_seconds - loop.time()
                if target is not None:
                    try:
                        upstream = await self._connect(target, min(max(remaining, RETRY_INTERVAL), CONNECT_ATTEMPT_TIMEOUT))
                    except (OSError, TimeoutError):
                        self.stats.connect_failures += 1
                    else:
                        self._waiting.discard(client)
                        self._splice(client, upstream)
                        self.stats.forwarded += 1
                        if route.proven != target:
                            self._proven(route, target, accepts=True)
                        if held:
                            waited = loop.time() - arrival
                            self.stats.held_released += 1
                            self.stats.max_hold_seconds = max(self.stats.max_hold_seconds, waited)
                            log(f"port {route.port}: held connection released to {format_target(target)} after {waited:.2f} s")
                        return
                if not held:
                    held = True
                    self.stats.held += 1
                remaining = arrival + route.hold_seconds - loop.time()
                if remaining <= 0:
                    self.stats.held_timed_out += 1
                    client.close()
                    log(
                        f"port {route.port}: held connection closed after hold deadline"
                        f" ({loop.time() - arrival:.2f} s, target {format_target(route.target)})"
                    )
                    return
                # No target: wait for the next change. Failing target: retry after RETRY_INTERVAL, or at once if the route changes.
                await route.wait_changed(remaining if target is None else min(remaining, RETRY_INTERVAL))
        except asyncio.CancelledError:
            client.close()
            raise
        except Exception as error:  # one connection must never take the router down
            log(f"port {route.port}: connection failed: {error!r}")
            client.close()
        finally:
            self._waiting.discard(client)

    def _splice(self, client: socket.socket, upstream: socket.socket) -> None:
        if self.use_splice:
            try:
                Splice(self, client, upstream)
                return
            except OSError as error:
                # Out of descriptors for the pipes, most likely; copying needs none.
                log(f"splice unavailable ({error}); copying this connection instead")
        Copy(self, client, upstream)

    # Stats and lifecycle

    def write_stats(self) -> None:
        self.stats.active = len(self.connections)
        self.stats.waiting = len(self._waiting)
        kernel = self.kernel if self.kernel is not None and self.kernel.enabled else None
        self.stats.kernel_backend = kernel.backend if kernel is not None else None
        self.stats.kernel_ports = sorted(kernel.applied[0]) if kernel is not None else []
        text = json.dumps(self.stats.as_dict(), sort_keys=True) + "\n"
        if text == self._stats_written:
            return  # an idle router writes nothing (on the routes volume, every second)
        temporary = self.stats_path.with_name(f".{self.stats_path.name}.{os.getpid()}.tmp")
        try:
            temporary.write_text(text)
            os.replace(temporary, self.stats_path)
            self._stats_written = text
            self._stats_error = None
        except OSError as error:
            if self._stats_error != str(error):
                self._stats_error = str(error)
                log(f"cannot write {self.stats_path}: {error}")

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            self.write_stats()

    def _retire(self) -> None:
        """Hands the ports to the successor (see RETIRE_SIGNAL): the listeners closed, the kernel's
        rules and the routes volume left to it; what this router forwards or holds goes on."""
        self.retiring = True
        kernel, self.kernel = self.kernel, None
        if kernel is not None:
            kernel.enabled = False  # nothing of ours touches the rules from now on
        for route in self.routes.values():
            for task in (route.bind_task, route.watch_task):
                if task is not None and not task.done():
                    task.cancel()
            self._close_listener(route)
        log(f"retiring: {len(self.connections)} connections forwarded and {len(self._waiting)} waiting finish first")

    async def _drain(self) -> None:
        deadline = time.monotonic() + RETIRE_SECONDS
        while (self.connections or self._waiting) and time.monotonic() < deadline:
            await asyncio.sleep(RETRY_INTERVAL)
        left = len(self.connections) + len(self._waiting)
        log(f"retired ({left} connections cut after {RETIRE_SECONDS:g} s)" if left else "retired")

    async def run(self, stop: asyncio.Event | None = None) -> None:
        loop = asyncio.get_running_loop()
        stop = stop or asyncio.Event()
        retire = asyncio.Event()
        nudge = asyncio.Event()  # set by a stop, a retirement or a writer's SIGUSR1: poll now

        async def relay_stop() -> None:
            await stop.wait()
            nudge.set()

        def retire_now() -> None:
            retire.set()
            nudge.set()

        signals = ((signal.SIGTERM, stop.set), (signal.SIGINT, stop.set), (signal.SIGUSR1, nudge.set), (RETIRE_SIGNAL, retire_now))
        for signum, handler in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, handler)
        loop.set_exception_handler(_log_loop_exception)
        log(f"watching {self.routes_dir} (pid {os.getpid()})")
        self._clear_acknowledgements()
        if self.kernel is not None:
            self.kernel.start()
        if self.taking_over_until is not None:
            self._start_takeover()
        self._write_wake_file()
        stats_task = self.spawn(self._stats_loop())
        self.spawn(relay_stop())
        try:
            while not stop.is_set():
                if retire.is_set():
                    stats_task.cancel()  # the stats file is the successor's too
                    self._retire()
                    await self._drain()
                    return
                nudge.clear()
                self.poll()
                if self.taking_over_until is not None and time.monotonic() > self.taking_over_until:
                    self._end_takeover(f"{TAKEOVER_SECONDS:g} s passed; ports not listened on are refused again")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(nudge.wait(), POLL_INTERVAL)
        finally:
            stats_task.cancel()
            if not self.retiring:
                with contextlib.suppress(OSError):
                    self.wake_path.unlink()
                for port in list(self.routes):
                    self._remove(port)
            for task in list(self._tasks):
                task.cancel()
            for connection in list(self.connections):
                connection.close()
            # Let cancelled tasks run their cleanup before the loop goes away.
            await asyncio.sleep(0)
            if self.kernel is not None:
                self.kernel.stop()
            if not self.retiring:
                self.write_stats()
                log("stopped")


def probe_waits() -> Iterator[float]:
    """The waits after each of a target's refusals in a row: PROBE_INTERVAL, doubled each time up to PROBE_INTERVAL_MAX."""
    wait = PROBE_INTERVAL
    while True:
        yield wait
        wait = min(wait * 2, PROBE_INTERVAL_MAX)


def _set_nodelay(sock: socket.socket) -> None:
    # Small request/response traffic must not wait for Nagle's algorithm on either hop.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _log_loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    error = context.get("exception")
    log(f"ignored error: {context.get('message', '')} {error!r}" if error else f"ignored error: {context.get('message', '')}")


def _raise_file_limit() -> None:
    # A spliced connection needs six descriptors (two sockets, two pipes); a soft limit of 1024 is too low.
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 1 << 20, hard))
    except (ImportError, OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Forward each routed external port to wherever its application runs.")
    parser.add_argument("--routes-dir", required=True, help="directory of <port>.json route files")
    parser.add_argument("--listen-address", default="0.0.0.0", help="address the listeners bind (default 0.0.0.0)")
    parser.add_argument("--no-splice", action="store_true", help="copy with recv/send instead of splice(2) (for comparison)")
    parser.add_argument(
        "--kernel-forwarding",
        action="store_true",
        help="also DNAT proven targets on other nodes with iptables (needs NET_ADMIN in the node's network namespace)",
    )
    parser.add_argument(
        "--take-over", metavar="TOKEN", help=f"a predecessor holds the ports: drop new SYNs until they are ours (see {TAKEOVER_FILE})"
    )
    parser.add_argument("--rule-tag", default="router", help="names our iptables chains and comments (the router container's name)")
    args = parser.parse_args(argv)
    _raise_file_limit()
    kernel = KernelForwarding(args.rule_tag) if args.kernel_forwarding else None
    router = Router(args.routes_dir, args.listen_address, use_splice=not args.no_splice, kernel=kernel, take_over=args.take_over)
    asyncio.run(router.run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
