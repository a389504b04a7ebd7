"""Kernel forwarding (``--kernel-forwarding``): the router's iptables rules.

The proxy costs a third of the throughput of a direct connection, because every byte crosses
user space twice. So once a route's target is on another node and has accepted a connection,
the router also installs iptables rules in the node's network namespace (the router runs on
the host network) that DNAT new connections to the external port straight to the target,
with MASQUERADE so replies come back through this node. The proxy's listener stays open
underneath: the DNAT rule goes the moment the route becomes a hold, changes target or is
removed, or the target stops accepting, and new connections then reach the listener again
and are held or retried (router.py). Connections the kernel already forwards keep their
conntrack entry and stay on their target, like spliced ones. If iptables is missing or not
permitted (no NET_ADMIN), the router logs it once and proxies everything.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import shlex
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .router_log import log
from .routes import format_target

IPTABLES_TIMEOUT = 10.0
# Our chains are named CHAIN_PREFIX-<hash of the rule tag>-<part>: iptables allows 28 characters.
CHAIN_PREFIX = "FLKR"
# The iptables variants of Debian's package; the one with more rules is the one dockerd uses.
IPTABLES_BACKENDS = ("iptables-nft", "iptables-legacy")

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
