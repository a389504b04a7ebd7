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

The provider ships this file's source into a "router" container (``python3 router_program.py
--routes-dir /routes``), so it must stay a single file using only the Python 3.11 standard
library, and must not import anything from the project.

Kernel forwarding (``--kernel-forwarding``): the proxy costs a third of the throughput of a
direct connection, because every byte crosses user space twice. So once a route's target is on
another node and has accepted a connection, the router also installs iptables rules in the node's
network namespace (the router runs on the host network) that DNAT new connections to the external
port straight to the target, with MASQUERADE so replies come back through this node. The proxy's
listener stays open underneath: the DNAT rule goes the moment the route becomes a hold, changes
target or is removed, or the target stops accepting, and new connections then reach the listener
again and are held or retried as above. Connections the kernel already forwards keep their
conntrack entry and stay on their target, like spliced ones. If iptables is missing or not
permitted (no NET_ADMIN), the router logs it once and proxies everything.

Counters are written every second to ``<routes-dir>/../router-stats.json`` so that tests and the
provider can check how a cutover went (how many connections were held, for how long).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Both are part of a move's downtime: the provider waits until a hold is acknowledged, which
# happens at the next poll (at once when the writer wakes the router with SIGUSR1, see
# WAKE_FILE), and a connection held for a starting application waits up to one retry
# interval longer than it must (the route reaches a staged application a few tens of
# milliseconds before it listens). A poll is a scandir of a handful of files, a failed
# connect one local round trip: cheap at these rates.
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
RETRY_INTERVAL = 0.01
BIND_RETRY_INTERVAL = 0.1
STATS_INTERVAL = 1.0
DEFAULT_HOLD_SECONDS = 30.0
# A single attempt is capped so that a black-holed target cannot keep a held connection from
# noticing that the route now points somewhere else.
CONNECT_ATTEMPT_TIMEOUT = 1.0
# Hundreds of clients may reconnect at once right after a cutover; the default of 100 would drop SYNs.
LISTEN_BACKLOG = 1024
ACCEPT_BATCH = 64
# Each direction moves up to a pipe's capacity per splice; 1 MiB is the unprivileged maximum
# (fs.pipe-max-size) and measurably faster on loopback than the 64 KiB default.
PIPE_SIZE = 1024 * 1024
SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)
COPY_CHUNK = 256 * 1024

# Kernel forwarding. A target is probed this often until it accepts (then its DNAT rule goes in),
# and checked this often afterwards, so that a target that stops accepting (a crashed
# application) is taken out of the kernel's hands and new connections are held by the proxy again.
PROBE_INTERVAL = 0.5
HEALTH_INTERVAL = 1.0
IPTABLES_TIMEOUT = 10.0
# Our chains are named CHAIN_PREFIX-<hash of the rule tag>-<part>: iptables allows 28 characters.
CHAIN_PREFIX = "FLKR"
# The iptables variants of Debian's package; the one with more rules is the one dockerd uses.
IPTABLES_BACKENDS = ("iptables-nft", "iptables-legacy")

ROUTE_FILE = re.compile(r"^([0-9]{1,5})\.json$")


def log(message: str) -> None:
    # stderr is the container's log; one flushed line per event so `docker logs` shows it at once.
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    sys.stderr.write(f"{stamp} router: {message}\n")
    sys.stderr.flush()


class RouteError(ValueError):
    pass


def parse_target(value: object) -> tuple[str, int] | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise RouteError(f"target must be 'ADDRESS:PORT' or null, got {value!r}")
    host, sep, port_text = value.strip().rpartition(":")
    # "[::1]:80" is how IPv6 addresses are written with a port.
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise RouteError(f"target must be 'ADDRESS:PORT' or null, got {value!r}")
    return host, int(port_text)


def parse_route(raw: bytes) -> tuple[tuple[str, int] | None, float]:
    try:
        document = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise RouteError(f"not JSON: {error}") from None
    if not isinstance(document, dict):
        raise RouteError("expected a JSON object")
    if "target" not in document:
        raise RouteError("missing 'target'")
    target = parse_target(document["target"])
    hold = document.get("hold_seconds", DEFAULT_HOLD_SECONDS)
    if isinstance(hold, bool) or not isinstance(hold, int | float) or not 0 <= hold < 1e9:
        raise RouteError(f"hold_seconds must be a number >= 0, got {hold!r}")
    return target, float(hold)


def format_target(target: tuple[str, int] | None) -> str:
    if target is None:
        return "hold"
    host, port = target
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# Kernel forwarding (iptables)

Runner = Callable[[list[str], str | None], tuple[int, str]]


def run_command(args: list[str], stdin: str | None = None) -> tuple[int, str]:
    """Runs a command, returning its exit status and its output (stdout and stderr) in one string."""
    try:
        done = subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=IPTABLES_TIMEOUT, check=False)
    except FileNotFoundError:
        return 127, f"{args[0]}: command not found"
    except (OSError, subprocess.SubprocessError) as error:
        return 1, f"{args[0]}: {error}"
    return done.returncode, (done.stdout + done.stderr).strip()


@dataclass(frozen=True)
class RuleNames:
    """What marks our rules: three chains of our own and a comment on every rule, jumps included."""

    comment: str
    dnat: str
    snat: str
    accept: str


def rule_names(tag: str) -> RuleNames:
    # The tag (the router container's name) can be longer than a chain name may be: a hash of it
    # keeps two stacks' routers on one node apart. The comment carries it readably, without
    # spaces so that `iptables -S` output splits back into the very rule.
    digest = hashlib.sha256(tag.encode()).hexdigest()[:8]
    readable = re.sub(r"[^A-Za-z0-9._:-]", "_", tag)[:200]
    base = f"{CHAIN_PREFIX}-{digest}"
    return RuleNames(f"flocker-router:{readable}", f"{base}-DNAT", f"{base}-SNAT", f"{base}-FWD")


def jump_rules(names: RuleNames, forward_chain: str) -> list[tuple[str, str, list[str]]]:
    """(table, chain, rule) of the jumps into our chains, each inserted first in its chain.

    Only connections to one of the node's own addresses are DNATed (like Docker's own jump),
    never traffic passing through. Locally originated connections (OUTPUT) are left to the
    proxy: the node's own processes and host-network containers are not what the proxy slows.
    Containers on bridge networks arrive through PREROUTING and are forwarded too.
    """
    mark = ["-m", "comment", "--comment", names.comment]
    return [
        ("nat", "PREROUTING", ["-m", "addrtype", "--dst-type", "LOCAL", *mark, "-j", names.dnat]),
        ("nat", "POSTROUTING", [*mark, "-j", names.snat]),
        ("filter", forward_chain, [*mark, "-j", names.accept]),
    ]


def restore_input(names: RuleNames, forwards: dict[int, tuple[str, int]], ports: Iterable[int], jumps_into: str | None = None) -> str:
    """iptables-restore input (for --noflush) that replaces the contents of our three chains.

    Declaring a chain flushes it, so one restore swaps every rule of ours at once, atomically.
    ``forwards``: external port -> target to DNAT to. ``ports``: every routed external port;
    MASQUERADE and ACCEPT stay for all of them, whether DNATed now or not, because connections
    the kernel forwarded before a change of target must keep working until their target closes
    them (the conntrack state DNAT with the external port as original destination port is only
    ever given by our own DNAT rules: that port belongs to the router's listener on this node).
    ``jumps_into``: also insert the jumps, into this filter chain for the ACCEPTs (at start).
    """
    mark = ["-m", "comment", "--comment", names.comment]
    nat = [f":{names.dnat} - [0:0]", f":{names.snat} - [0:0]"]
    accept = [f":{names.accept} - [0:0]"]
    jumps = jump_rules(names, jumps_into) if jumps_into else []
    for table, chain, rule in jumps:
        (nat if table == "nat" else accept).append(" ".join(["-I", chain, "1", *rule]))
    for port in sorted(forwards):
        host, target_port = forwards[port]
        nat.append(
            " ".join(
                ["-A", names.dnat, "-p", "tcp", "--dport", str(port), *mark, "-j", "DNAT", "--to-destination", f"{host}:{target_port}"]
            )
        )
    for port in sorted(set(ports)):
        dnatted = ["-p", "tcp", "-m", "conntrack", "--ctstate", "DNAT", "--ctorigdstport", str(port), *mark]
        nat.append(" ".join(["-A", names.snat, *dnatted, "-j", "MASQUERADE"]))
        accept.append(" ".join(["-A", names.accept, *dnatted, "-j", "ACCEPT"]))
    return "\n".join(["*nat", *nat, "COMMIT", "*filter", *accept, "COMMIT", ""])


def deletion_of(line: str, comment: str) -> list[str] | None:
    """The arguments that delete the rule of an `iptables -S` line, if it carries our comment."""
    try:
        words = shlex.split(line)
    except ValueError:
        return None
    if len(words) < 2 or words[0] != "-A":
        return None
    marked = any(word == "--comment" and following == comment for word, following in zip(words, words[1:], strict=False))
    return ["-D", *words[1:]] if marked else None


def choose_backend(runner: Runner) -> str | None:
    """The iptables variant that holds the node's rules (dockerd's), or None if none works here.

    Both variants' tables can exist side by side; rules written with the other one than dockerd
    uses would be evaluated separately from Docker's (and, with legacy tables, `iptables`
    warns on every call). Counting rules is how Kubernetes' iptables wrapper decides, too.
    A tie (no rules anywhere) goes to nft, Debian's default. `-save` creates no table.
    """
    best: str | None = None
    best_count = -1
    for backend in IPTABLES_BACKENDS:
        status, output = runner([f"{backend}-save"], None)
        if status != 0:
            continue
        count = sum(line.startswith("-A ") for line in output.splitlines())
        if count > best_count:
            best, best_count = backend, count
    return best


def is_local_address(host: str) -> bool:
    """Whether ``host`` is one of this network namespace's own addresses (binding to it works)."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return False
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, 0))
        except OSError:
            return False
    return True


class KernelForwarding:
    """Our iptables rules in the node's network namespace: set up at start, swapped on every
    change with one iptables-restore, removed at stop. Any failure turns it off for good (logged
    once): the proxy then forwards every connection, which is slower but always right."""

    def __init__(self, tag: str, runner: Runner = run_command, is_local: Callable[[str], bool] = is_local_address) -> None:
        self.names = rule_names(tag)
        self.runner = runner
        self.is_local = is_local
        self.backend: str | None = None
        self.forward_chain = "FORWARD"
        self.enabled = False
        self.applied: tuple[dict[int, tuple[str, int]], frozenset[int]] = ({}, frozenset())

    def can_forward_to(self, target: tuple[str, int] | None) -> bool:
        """DNAT is for IPv4 targets on other nodes. A target on this node (the hosting node's own
        route) stays with the proxy: nat rules apply once per connection, so Docker's DNAT of the
        published port would not follow ours and docker-proxy (userland, no faster than ours)
        would take the connection; the container's own address is not in the route."""
        if target is None:
            return False
        try:
            address = ipaddress.ip_address(target[0])
        except ValueError:
            return False  # a name; the provider writes addresses
        return address.version == 4 and not self.is_local(target[0])

    def _run(self, args: list[str], stdin: str | None = None, restore: bool = False) -> tuple[int, str]:
        assert self.backend is not None
        # -w: wait for the xtables lock (legacy) rather than fail when dockerd holds it.
        program = f"{self.backend}-restore" if restore else self.backend
        return self.runner([program, "-w", str(int(IPTABLES_TIMEOUT)), *args], stdin)

    def start(self) -> bool:
        self.backend = choose_backend(self.runner)
        if self.backend is None:
            log("kernel forwarding off: no working iptables here (missing, or no NET_ADMIN); the proxy forwards every connection")
            return False
        # A router that was killed (SIGKILL, a crash) left its rules: they may point at old targets.
        self.cleanup()
        status, _ = self._run(["-t", "filter", "-S", "DOCKER-USER"])
        # dockerd sets FORWARD's policy to DROP and leaves DOCKER-USER to its users; without
        # dockerd's chains, FORWARD itself.
        self.forward_chain = "DOCKER-USER" if status == 0 else "FORWARD"
        status, output = self._run(["--noflush"], restore_input(self.names, {}, (), jumps_into=self.forward_chain), restore=True)
        if status != 0:
            self._turn_off(f"{self.backend}-restore failed: {output}")
            return False
        self.enabled = True
        self.applied = ({}, frozenset())
        chains = f"{self.names.dnat}, {self.names.snat}, {self.names.accept} via {self.forward_chain}"
        log(f"kernel forwarding on ({self.backend}; chains {chains}; rules marked {self.names.comment})")
        return True

    def apply(self, forwards: dict[int, tuple[str, int]], ports: Iterable[int]) -> bool:
        """Makes our rules DNAT exactly ``forwards``; True if they do (or already did)."""
        if not self.enabled:
            return False
        wanted = (dict(forwards), frozenset(ports))
        if wanted == self.applied:
            return True
        started = time.monotonic()
        status, output = self._run(["--noflush"], restore_input(self.names, *wanted), restore=True)
        if status != 0:
            self._turn_off(f"{self.backend}-restore failed: {output}")
            return False
        self.applied = wanted
        # How long a change took matters: a hold is acknowledged only once it is in force, and the provider waits for that.
        dnat = ", ".join(f"{port}->{format_target(target)}" for port, target in sorted(forwards.items())) or "none"
        log(f"kernel forwarding: DNAT {dnat} ({(time.monotonic() - started) * 1000:.0f} ms)")
        return True

    def _turn_off(self, reason: str) -> None:
        self.enabled = False
        log(f"kernel forwarding off: {reason}; the proxy forwards every connection from now on")
        # A DNAT rule left to a target that stops would refuse connections the proxy would hold.
        if not self.cleanup():
            log("could not remove every kernel forwarding rule; `iptables -S` shows what is left, marked " + self.names.comment)

    def cleanup(self) -> bool:
        """Deletes every rule and chain of ours (and nothing else); True if none is left."""
        if self.backend is None:
            return True
        clean = True
        for table, chain in (
            ("nat", "PREROUTING"),
            ("nat", "POSTROUTING"),
            ("filter", "DOCKER-USER"),
            ("filter", "FORWARD"),
            ("filter", "INPUT"),  # the SYN drops of a take-over that did not end (its router killed meanwhile)
        ):
            status, output = self._run(["-t", table, "-S", chain])
            if status != 0:
                continue  # DOCKER-USER exists only with dockerd's rules
            for line in output.splitlines():
                deletion = deletion_of(line, self.names.comment)
                if deletion is not None and self._run(["-t", table, *deletion])[0] != 0:
                    clean = False
        for table, chain in (("nat", self.names.dnat), ("nat", self.names.snat), ("filter", self.names.accept)):
            if self._run(["-t", table, "-S", chain])[0] != 0:
                continue  # not there
            if self._run(["-t", table, "-F", chain])[0] != 0 or self._run(["-t", table, "-X", chain])[0] != 0:
                clean = False
        self.enabled = False
        self.applied = ({}, frozenset())
        return clean

    def drop_syns(self, ports: list[int]) -> bool:
        """New connections to ``ports`` on this node dropped at their SYN (our comment, so that
        ``release_syns`` and the next router's cleanup find the rules); True if in force."""
        if not self.enabled or not ports:
            return False
        for i in range(0, len(ports), 15):  # multiport takes 15 ports a rule
            chunk = ",".join(str(p) for p in sorted(ports)[i : i + 15])
            rule = ["-p", "tcp", "--syn", "-m", "multiport", "--dports", chunk, "-m", "comment", "--comment", self.names.comment]
            if self._run(["-t", "filter", "-I", "INPUT", *rule, "-j", "DROP"])[0] != 0:
                self.release_syns()
                return False
        return True

    def release_syns(self) -> None:
        if self.backend is None:
            return
        _, output = self._run(["-t", "filter", "-S", "INPUT"])
        for line in output.splitlines():
            deletion = deletion_of(line, self.names.comment)
            if deletion is not None:
                self._run(["-t", "filter", *deletion])

    def stop(self) -> None:
        if self.backend is not None and not self.cleanup():
            log("could not remove every kernel forwarding rule; `iptables -S` shows what is left, marked " + self.names.comment)


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


class Splice:
    """Both directions of one forwarded connection, moved with splice(2) through a pipe per direction.

    splice moves the bytes between the two sockets inside the kernel: the router never copies
    them into Python objects, which on loopback is worth about a third more throughput than
    recv/send and halves the added latency. Callbacks are registered directly on the event loop
    (no transports or tasks per chunk) for the same reason.
    """

    def __init__(self, router: Router, client: socket.socket, upstream: socket.socket) -> None:
        self.router = router
        self.loop = asyncio.get_running_loop()
        self.sockets = (client, upstream)
        self.closed = False
        self.directions = [_SpliceDirection(self, client, upstream)]
        try:
            self.directions.append(_SpliceDirection(self, upstream, client))
        except OSError:
            # Leave the sockets open: the caller falls back to copying.
            self.directions[0].close_pipe()
            raise
        router.connections.add(self)
        for direction in self.directions:
            direction.start()

    def direction_done(self) -> None:
        if all(direction.done for direction in self.directions):
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.router.connections.discard(self)
        # Unregister before closing: the selector must never see a closed (or reused) descriptor.
        for sock in self.sockets:
            with contextlib.suppress(ValueError, OSError):
                self.loop.remove_reader(sock.fileno())
                self.loop.remove_writer(sock.fileno())
        for direction in self.directions:
            direction.close_pipe()
        for sock in self.sockets:
            sock.close()


class _SpliceDirection:
    def __init__(self, owner: Splice, source: socket.socket, destination: socket.socket) -> None:
        self.owner = owner
        self.loop = owner.loop
        self.source = source
        self.destination = destination
        self.source_fd = source.fileno()
        self.destination_fd = destination.fileno()
        self.pipe_read, self.pipe_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        with contextlib.suppress(OSError, AttributeError):
            fcntl.fcntl(self.pipe_write, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        try:
            self.chunk = fcntl.fcntl(self.pipe_write, fcntl.F_GETPIPE_SZ)
        except (OSError, AttributeError):
            self.chunk = 64 * 1024
        # Bytes spliced into the pipe but not yet out of it; we read only when it is empty, so a
        # slow destination stops us reading from the source (TCP flow control back to the sender).
        self.pending = 0
        self.done = False

    def start(self) -> None:
        self.loop.add_reader(self.source_fd, self._readable)

    def _readable(self) -> None:
        try:
            count = os.splice(self.source_fd, self.pipe_write, self.chunk, flags=SPLICE_FLAGS)
        except BlockingIOError:
            return
        except OSError:
            self.owner.close()
            return
        if count == 0:
            self.loop.remove_reader(self.source_fd)
            self._finish()
            return
        self.pending = count
        if not self._drain():
            # Destination is full: wait until it can take more before reading again.
            self.loop.remove_reader(self.source_fd)
            self.loop.add_writer(self.destination_fd, self._writable)

    def _writable(self) -> None:
        if self._drain():
            self.loop.remove_writer(self.destination_fd)
            if not self.owner.closed:
                self.loop.add_reader(self.source_fd, self._readable)

    def _drain(self) -> bool:
        while self.pending:
            try:
                count = os.splice(self.pipe_read, self.destination_fd, self.pending, flags=SPLICE_FLAGS)
            except BlockingIOError:
                return False
            except OSError:
                self.owner.close()
                return False
            self.pending -= count
        return True

    def _finish(self) -> None:
        # Half-close: the source is done sending, so tell the destination, and keep the other
        # direction going until it finishes too.
        self.done = True
        with contextlib.suppress(OSError):
            self.destination.shutdown(socket.SHUT_WR)
        self.owner.direction_done()

    def close_pipe(self) -> None:
        for fd in (self.pipe_read, self.pipe_write):
            with contextlib.suppress(OSError):
                os.close(fd)


class Copy:
    """Forwarding with recv/send, for systems without splice(2) (the router container always has it)."""

    def __init__(self, router: Router, client: socket.socket, upstream: socket.socket) -> None:
        self.router = router
        self.sockets = (client, upstream)
        self.closed = False
        router.connections.add(self)
        self.tasks = [router.spawn(self._copy(client, upstream)), router.spawn(self._copy(upstream, client))]
        for task in self.tasks:
            task.add_done_callback(self._task_done)

    async def _copy(self, source: socket.socket, destination: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        buffer = bytearray(COPY_CHUNK)
        view = memoryview(buffer)
        try:
            while True:
                count = await loop.sock_recv_into(source, buffer)
                if not count:
                    destination.shutdown(socket.SHUT_WR)
                    return
                await loop.sock_sendall(destination, view[:count])
        except OSError:
            self.close()

    def _task_done(self, _task: asyncio.Task[None]) -> None:
        # Sockets are closed only once neither task can still be waiting on them.
        if all(task.done() for task in self.tasks):
            self.closed = True
            self.router.connections.discard(self)
            for sock in self.sockets:
                sock.close()

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()


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
        # Route files applied to a port not listened on yet: acknowledged once it is, so that a
        # port held by someone else fails the provider's write instead of passing silently.
        self._unacknowledged: dict[int, bytes] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Accepted clients not yet forwarded (held or connecting), and forwarded connections.
        self._waiting: set[socket.socket] = set()
        self.connections: set[Splice | Copy] = set()
        self._dir_error: str | None = None
        self._stats_error: str | None = None

    # Route files

    def poll(self) -> None:
        try:
            entries = list(os.scandir(self.routes_dir))
        except OSError as error:
            # Keep serving the last known routes: a missing mount is more likely transient than a wish to drop everything.
            if self._dir_error != str(error):
                self._dir_error = str(error)
                log(f"cannot read routes directory {self.routes_dir}: {error}")
            return
        self._dir_error = None
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
        while True:
            try:
                sock = await self._connect(target, CONNECT_ATTEMPT_TIMEOUT)
            except (OSError, TimeoutError):
                accepts = False
            else:
                sock.close()
                accepts = True
            self._proven(route, target, accepts)
            await asyncio.sleep(HEALTH_INTERVAL if accepts else PROBE_INTERVAL)

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
        temporary = self.stats_path.with_name(f".{self.stats_path.name}.{os.getpid()}.tmp")
        try:
            temporary.write_text(json.dumps(self.stats.as_dict(), sort_keys=True) + "\n")
            os.replace(temporary, self.stats_path)
            self._stats_error = None
        except OSError as error:
            if self._stats_error != str(error):
                self._stats_error = str(error)
                log(f"cannot write {self.stats_path}: {error}")

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            self.write_stats()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        loop = asyncio.get_running_loop()
        stop = stop or asyncio.Event()
        nudge = asyncio.Event()  # set by a stop or a writer's SIGUSR1: poll now

        async def relay_stop() -> None:
            await stop.wait()
            nudge.set()

        for signum, handler in ((signal.SIGTERM, stop.set), (signal.SIGINT, stop.set), (signal.SIGUSR1, nudge.set)):
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
                nudge.clear()
                self.poll()
                if self.taking_over_until is not None and time.monotonic() > self.taking_over_until:
                    self._end_takeover(f"{TAKEOVER_SECONDS:g} s passed; ports not listened on are refused again")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(nudge.wait(), POLL_INTERVAL)
        finally:
            with contextlib.suppress(OSError):
                self.wake_path.unlink()
            stats_task.cancel()
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
            self.write_stats()
            log("stopped")


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
