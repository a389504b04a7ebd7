"""The per-node TCP router, run as the container runs it (a subprocess), against echo servers on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from flocker_provider import route_writer, router_program

ROUTER = Path(__file__).resolve().parents[2] / "provider" / "flocker_provider" / "router_program.py"
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def recv_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            break
        data += chunk
    return data


class EchoServer:
    """Echoes each read back with `prefix` in front; on EOF sends `trailer` and half-closes too."""

    def __init__(self, port: int = 0, prefix: bytes = b"", trailer: bytes = b"") -> None:
        self.prefix = prefix
        self.trailer = trailer
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((LOOPBACK, port))
        self.listener.listen(64)
        self.port: int = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(256 * 1024):
                    conn.sendall(self.prefix + data)
                conn.sendall(self.trailer)
                conn.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()


class RouterProcess:
    def __init__(self, state: Path, extra_args: list[str]) -> None:
        self.routes = state / "routes"
        self.routes.mkdir()
        self.stats_path = state / "router-stats.json"
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.process = subprocess.Popen(
            [sys.executable, str(ROUTER), "--routes-dir", str(self.routes), "--listen-address", LOOPBACK, *extra_args],
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._read_log, daemon=True).start()

    def _read_log(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def wait_log(self, text: str, timeout: float = 5.0, count: int = 1) -> None:
        with self._changed:
            found = self._changed.wait_for(lambda: sum(text in line for line in self.lines) >= count, timeout)
        assert found, f"router did not log {text!r}; log:\n" + "\n".join(self.lines)

    def write_route(self, port: int, target: str | None, hold_seconds: float = 10) -> None:
        self.write_raw(port, json.dumps({"target": target, "hold_seconds": hold_seconds}))

    def write_raw(self, port: int, text: str) -> None:
        # As the provider does: the router must never read a half-written file.
        temporary = self.routes / f".{port}.json.tmp"
        temporary.write_text(text)
        os.replace(temporary, self.routes / f"{port}.json")

    def add_route(self, target: str | None, hold_seconds: float = 10) -> int:
        port = free_port()
        self.write_route(port, target, hold_seconds)
        self.wait_log(f"listening on {LOOPBACK}:{port} ")
        return port

    def wait_stats(self, predicate: Callable[[dict[str, float]], bool], timeout: float = 4.0) -> dict[str, float]:
        deadline = time.monotonic() + timeout
        stats: dict[str, float] = {}
        while time.monotonic() < deadline:
            try:
                stats = json.loads(self.stats_path.read_text())
            except (OSError, ValueError):
                stats = {}
            if stats and predicate(stats):
                return stats
            time.sleep(0.1)
        raise AssertionError(f"stats never matched; last: {stats}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            return self.process.wait(5)
        finally:
            if self.process.poll() is None:
                self.process.kill()


@pytest.fixture
def start_router(tmp_path: Path) -> Iterator[Callable[..., RouterProcess]]:
    routers: list[RouterProcess] = []

    def start(*extra_args: str) -> RouterProcess:
        state = tmp_path / f"node{len(routers)}"
        state.mkdir()
        routers.append(RouterProcess(state, list(extra_args)))
        routers[-1].wait_log("watching")
        return routers[-1]

    yield start
    for router in routers:
        # SIGTERM must close the listeners and exit cleanly.
        assert router.stop() == 0, "\n".join(router.lines)


@pytest.fixture
def router(start_router: Callable[..., RouterProcess]) -> RouterProcess:
    return start_router()


@pytest.fixture
def servers() -> Iterator[Callable[..., EchoServer]]:
    started: list[EchoServer] = []

    def start(**kwargs: object) -> EchoServer:
        started.append(EchoServer(**kwargs))  # type: ignore[arg-type]
        return started[-1]

    yield start
    for server in started:
        server.close()


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


@pytest.mark.parametrize("mode", [[], ["--no-splice"]], ids=["splice", "copy"])
def test_forwards_10_mb_both_ways_and_respects_half_close(
    start_router: Callable[..., RouterProcess], servers: Callable[..., EchoServer], mode: list[str]
) -> None:
    router = start_router(*mode)
    server = servers(trailer=b"<after client EOF>")
    port = router.add_route(server.address)
    payload = os.urandom(10 * 1024 * 1024)

    with connect(port, timeout=10) as client:

        def send() -> None:
            client.sendall(payload)
            # Half-close: the reply must keep flowing after this.
            client.shutdown(socket.SHUT_WR)

        sender = threading.Thread(target=send)
        sender.start()
        received = bytearray()
        while chunk := client.recv(1024 * 1024):
            received += chunk
        sender.join(10)

    assert len(received) == len(payload) + len(b"<after client EOF>")
    assert bytes(received) == payload + b"<after client EOF>"
    router.wait_stats(lambda s: s["forwarded"] >= 1 and s["accepted"] >= 1)


def test_target_change_redirects_new_connections_and_keeps_open_ones(router: RouterProcess, servers: Callable[..., EchoServer]) -> None:
    old, new = servers(prefix=b"A"), servers(prefix=b"B")
    port = router.add_route(old.address)

    with connect(port) as first:
        first.sendall(b"1")
        assert recv_exactly(first, 2) == b"A1"

        router.write_route(port, new.address)
        router.wait_log(f"-> {new.address}")

        with connect(port) as second:
            second.sendall(b"2")
            assert recv_exactly(second, 2) == b"B2"

        # The spliced connection is not touched by the route change.
        first.sendall(b"3")
        assert recv_exactly(first, 2) == b"A3"
    assert not any("closed listener" in line for line in router.lines)


def test_held_connection_is_released_when_a_target_appears(router: RouterProcess, servers: Callable[..., EchoServer]) -> None:
    server = servers()
    port = router.add_route(None, hold_seconds=10)

    with connect(port) as client:
        client.sendall(b"hello during cutover")
        time.sleep(1.0)
        router.write_route(port, server.address, hold_seconds=10)
        assert recv_exactly(client, 20) == b"hello during cutover"

    router.wait_log("held connection released")
    stats = router.wait_stats(lambda s: s["held_released"] >= 1)
    assert stats["held"] == 1
    assert stats["held_timed_out"] == 0
    assert 0.9 <= stats["max_hold_seconds"] < 5


def test_held_connection_is_closed_at_the_hold_deadline(router: RouterProcess) -> None:
    port = router.add_route(None, hold_seconds=1)

    # Accepted, not refused: the client only learns at the deadline.
    with connect(port) as client:
        started = time.monotonic()
        try:
            data = client.recv(1)
        except ConnectionResetError:
            data = b""
        elapsed = time.monotonic() - started

    assert data == b""
    assert 0.8 <= elapsed < 3.0
    router.wait_log("closed after hold deadline")
    stats = router.wait_stats(lambda s: s["held_timed_out"] >= 1)
    assert stats["held_released"] == 0


def test_refused_target_is_retried_until_the_server_starts(router: RouterProcess, servers: Callable[..., EchoServer]) -> None:
    target_port = free_port()  # nothing listens there yet: connects are refused
    port = router.add_route(f"{LOOPBACK}:{target_port}", hold_seconds=10)

    with connect(port) as client:
        client.sendall(b"ping")
        time.sleep(0.5)
        servers(port=target_port)
        assert recv_exactly(client, 4) == b"ping"

    stats = router.wait_stats(lambda s: s["held_released"] >= 1)
    assert stats["connect_failures"] >= 2
    assert stats["forwarded"] == 1


def test_deleting_the_route_closes_the_listener_but_not_open_connections(router: RouterProcess, servers: Callable[..., EchoServer]) -> None:
    server = servers()
    port = router.add_route(server.address)

    with connect(port) as open_connection:
        open_connection.sendall(b"x")
        assert recv_exactly(open_connection, 1) == b"x"

        (router.routes / f"{port}.json").unlink()
        router.wait_log(f"closed listener on {LOOPBACK}:{port}")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((LOOPBACK, port), timeout=2).close()

        open_connection.sendall(b"y")
        assert recv_exactly(open_connection, 1) == b"y"


def test_malformed_route_files_are_ignored(router: RouterProcess, servers: Callable[..., EchoServer]) -> None:
    server = servers(prefix=b"ok:")
    port = router.add_route(server.address)

    # A broken update keeps the previous route for that port.
    router.write_raw(port, "{not json")
    router.wait_log(f"ignoring route file {port}.json")
    router.write_raw(port, json.dumps({"target": "no-port-here", "hold_seconds": 1}))
    router.wait_log(f"ignoring route file {port}.json", count=2)
    with connect(port) as client:
        client.sendall(b"1")
        assert recv_exactly(client, 4) == b"ok:1"

    # A broken new file opens nothing.
    other = free_port()
    router.write_raw(other, json.dumps({"target": None, "hold_seconds": "soon"}))
    router.wait_log(f"ignoring route file {other}.json")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((LOOPBACK, other), timeout=2).close()
    assert router.process.poll() is None


def test_port_in_use_is_retried_until_free(router: RouterProcess, servers: Callable[..., EchoServer]) -> None:
    server = servers()
    blocker = socket.socket()
    blocker.bind((LOOPBACK, 0))
    blocker.listen(1)
    port = blocker.getsockname()[1]

    router.write_route(port, server.address)
    router.wait_log(f"cannot listen on {LOOPBACK}:{port} (address in use)")
    blocker.close()
    router.wait_log(f"listening on {LOOPBACK}:{port} ")
    with connect(port) as client:
        client.sendall(b"z")
        assert recv_exactly(client, 1) == b"z"
    assert sum("cannot listen" in line for line in router.lines) == 1


def test_hundreds_of_held_connections_are_all_released(router: RouterProcess, servers: Callable[..., EchoServer]) -> None:
    server = servers()
    port = router.add_route(None, hold_seconds=10)
    clients = [connect(port) for _ in range(200)]
    try:
        for number, client in enumerate(clients):
            client.sendall(b"%05d" % number)
        router.write_route(port, server.address)
        for number, client in enumerate(clients):
            assert recv_exactly(client, 5) == b"%05d" % number
    finally:
        for client in clients:
            client.close()
    stats = router.wait_stats(lambda s: s["held_released"] >= 200)
    assert stats["accepted"] == 200
    assert stats["held_timed_out"] == 0


# Kernel forwarding: the iptables rules the router computes, and what it runs, with a fake runner
# (the router must never touch this machine's own iptables in unit tests).

TAG = "flocker-unit.router"
NAMES = router_program.rule_names(TAG)
MARK = f'-m comment --comment "{NAMES.comment}"'


class FakeIptables:
    """Answers the router's iptables commands from a table of prefixes; records every call."""

    def __init__(self, answers: dict[tuple[str, ...], tuple[int, str]] | None = None) -> None:
        self.answers = {
            ("iptables-nft-save",): (0, "*filter\n-A FORWARD -j DOCKER-USER\n-A DOCKER-USER -j RETURN\nCOMMIT\n"),
            ("iptables-legacy-save",): (0, ""),
            **(answers or {}),
        }
        self.calls: list[tuple[list[str], str | None]] = []

    def __call__(self, args: list[str], stdin: str | None) -> tuple[int, str]:
        self.calls.append((args, stdin))
        # The longest matching prefix, ignoring the lock wait option.
        words = tuple(w for i, w in enumerate(args) if w != "-w" and (i == 0 or args[i - 1] != "-w"))
        for length in range(len(words), 0, -1):
            if words[:length] in self.answers:
                return self.answers[words[:length]]
        return 0, ""

    def restores(self) -> list[str]:
        return [stdin for args, stdin in self.calls if args[0].endswith("-restore") and stdin is not None]

    def commands(self) -> list[list[str]]:
        """Every call's arguments (restores too), without the lock wait option."""
        return [[w for i, w in enumerate(args) if w != "-w" and args[i - 1] != "-w"] for args, _ in self.calls]


def test_chain_names_fit_iptables_and_tell_stacks_apart() -> None:
    other = router_program.rule_names("flocker-another-stack-with-a-very-long-name.router")
    for names in (NAMES, other):
        assert all(len(chain) <= 28 and chain.startswith("FLKR-") for chain in (names.dnat, names.snat, names.accept))
    assert {NAMES.dnat, NAMES.snat, NAMES.accept}.isdisjoint({other.dnat, other.snat, other.accept})
    assert NAMES.comment == f"flocker-router:{TAG}"
    assert " " not in router_program.rule_names("a stack; with spaces").comment


def test_restore_input_swaps_our_chains_and_dnats_only_the_forwarded_ports() -> None:
    text = router_program.restore_input(NAMES, {8701: ("10.0.0.2", 32768)}, [8702, 8701])
    lines = text.splitlines()
    # Declaring the chains flushes them: the restore replaces everything of ours at once.
    assert lines[:3] == ["*nat", f":{NAMES.dnat} - [0:0]", f":{NAMES.snat} - [0:0]"]
    assert f"-A {NAMES.dnat} -p tcp --dport 8701 -m comment --comment {NAMES.comment} -j DNAT --to-destination 10.0.0.2:32768" in lines
    assert sum("-j DNAT" in line for line in lines) == 1
    # MASQUERADE and ACCEPT for every routed port: connections forwarded before a change keep working.
    for port in (8701, 8702):
        dnatted = f"-p tcp -m conntrack --ctstate DNAT --ctorigdstport {port} -m comment --comment {NAMES.comment}"
        assert f"-A {NAMES.snat} {dnatted} -j MASQUERADE" in lines
        assert f"-A {NAMES.accept} {dnatted} -j ACCEPT" in lines
    assert lines[lines.index("*filter") + 1] == f":{NAMES.accept} - [0:0]"
    assert lines.count("COMMIT") == 2
    assert not any(line.startswith("-I ") for line in lines)


def test_restore_input_at_start_inserts_the_jumps_first() -> None:
    lines = router_program.restore_input(NAMES, {}, [], jumps_into="DOCKER-USER").splitlines()
    assert f"-I PREROUTING 1 -m addrtype --dst-type LOCAL -m comment --comment {NAMES.comment} -j {NAMES.dnat}" in lines
    assert f"-I POSTROUTING 1 -m comment --comment {NAMES.comment} -j {NAMES.snat}" in lines
    assert f"-I DOCKER-USER 1 -m comment --comment {NAMES.comment} -j {NAMES.accept}" in lines
    # Each jump in the table its chain is in.
    assert lines.index("*filter") < lines.index(f"-I DOCKER-USER 1 -m comment --comment {NAMES.comment} -j {NAMES.accept}")


def test_only_rules_with_our_exact_comment_are_deleted() -> None:
    ours = f"-A PREROUTING -m addrtype --dst-type LOCAL {MARK} -j {NAMES.dnat}"
    assert router_program.deletion_of(ours, NAMES.comment) == [
        "-D",
        "PREROUTING",
        *["-m", "addrtype", "--dst-type", "LOCAL", "-m", "comment", "--comment", NAMES.comment, "-j", NAMES.dnat],
    ]
    for line in (
        "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
        f'-A PREROUTING -m comment --comment "{NAMES.comment}-other" -j X',  # another stack whose name starts like ours
        f"-N {NAMES.dnat}",
        "-P FORWARD DROP",
        '-A FORWARD -m comment --comment "unbalanced',
    ):
        assert router_program.deletion_of(line, NAMES.comment) is None, line


@pytest.mark.parametrize(
    ("nft", "legacy", "chosen"),
    [
        ((0, "-A FORWARD -j DOCKER-USER\n-A DOCKER-USER -j RETURN"), (0, ""), "iptables-nft"),
        ((0, ""), (0, "-A FORWARD -j DOCKER-USER\n-A DOCKER-USER -j RETURN"), "iptables-legacy"),
        ((0, ""), (0, ""), "iptables-nft"),
        ((1, "Permission denied (you must be root)"), (127, "not found"), None),
        ((127, "not found"), (127, "not found"), None),
    ],
    ids=["nft", "legacy", "tie", "no-permission", "missing"],
)
def test_the_backend_with_dockers_rules_is_chosen(nft: tuple[int, str], legacy: tuple[int, str], chosen: str | None) -> None:
    fake = FakeIptables({("iptables-nft-save",): nft, ("iptables-legacy-save",): legacy})
    assert router_program.choose_backend(fake) == chosen


def test_start_removes_stale_rules_of_ours_only_then_installs_the_jumps() -> None:
    stale = f"-A PREROUTING -m addrtype --dst-type LOCAL {MARK} -j {NAMES.dnat}"
    fake = FakeIptables(
        {
            ("iptables-nft", "-t", "nat", "-S", "PREROUTING"): (
                0,
                f"-P PREROUTING ACCEPT\n{stale}\n-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
            ),
            ("iptables-nft", "-t", "nat", "-S", NAMES.dnat): (0, f"-N {NAMES.dnat}"),
            ("iptables-nft", "-t", "nat", "-S", NAMES.snat): (1, "No chain/target/match by that name."),
            ("iptables-nft", "-t", "filter", "-S", NAMES.accept): (1, "No chain/target/match by that name."),
        }
    )
    kernel = router_program.KernelForwarding(TAG, runner=fake)
    assert kernel.start()
    assert kernel.enabled and kernel.backend == "iptables-nft" and kernel.forward_chain == "DOCKER-USER"
    commands = fake.commands()
    deletions = [c for c in commands if "-D" in c]
    # The quotes iptables -S prints are gone: the comment is one argument again.
    jump = ["-m", "addrtype", "--dst-type", "LOCAL", "-m", "comment", "--comment", NAMES.comment, "-j", NAMES.dnat]
    assert deletions == [["iptables-nft", "-t", "nat", "-D", "PREROUTING", *jump]]
    assert ["iptables-nft", "-t", "nat", "-F", NAMES.dnat] in commands
    assert ["iptables-nft", "-t", "nat", "-X", NAMES.dnat] in commands
    assert ["iptables-nft", "-t", "nat", "-X", NAMES.snat] not in commands  # not there: nothing to delete
    (restore,) = fake.restores()
    assert f"-I DOCKER-USER 1 -m comment --comment {NAMES.comment} -j {NAMES.accept}" in restore
    assert fake.calls[-1][0][:3] == ["iptables-nft-restore", "-w", "10"] and "--noflush" in fake.calls[-1][0]


def test_a_take_over_drops_syns_to_its_ports_and_takes_exactly_those_rules_away() -> None:
    ours = f"-A INPUT -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -m multiport --dports 80,9200 {MARK} -j DROP"
    listing = f"-P INPUT ACCEPT\n{ours}\n-A INPUT -p tcp --dport 22 -j ACCEPT"
    fake = FakeIptables({("iptables-nft", "-t", "filter", "-S", "INPUT"): (0, listing)})
    kernel = router_program.KernelForwarding(TAG, runner=fake)
    assert kernel.start()
    ports = list(range(9000, 9017))  # 17 ports: two rules, multiport takes 15
    assert kernel.drop_syns(ports)
    inserted = [c for c in fake.commands() if c[3:5] == ["-I", "INPUT"]]
    assert [c[c.index("--dports") + 1] for c in inserted] == [",".join(map(str, range(9000, 9015))), "9015,9016"]
    assert all(c[-2:] == ["-j", "DROP"] and "--syn" in c and NAMES.comment in c for c in inserted)
    kernel.release_syns()
    deletions = [c for c in fake.commands() if "-D" in c and "INPUT" in c]
    assert deletions[-1][3:5] == ["-D", "INPUT"] and "22" not in deletions[-1]
    # A router killed while taking over: the next one's start removes its drops too.
    assert any(c[3:5] == ["-D", "INPUT"] for c in fake.commands()[: fake.commands().index(inserted[0])])


def test_without_dockers_chain_the_accepts_go_into_forward() -> None:
    fake = FakeIptables({("iptables-nft", "-t", "filter", "-S", "DOCKER-USER"): (1, "No chain/target/match by that name.")})
    kernel = router_program.KernelForwarding(TAG, runner=fake)
    assert kernel.start()
    assert f"-I FORWARD 1 -m comment --comment {NAMES.comment} -j {NAMES.accept}" in fake.restores()[0]


def test_apply_restores_only_changes_and_a_failure_turns_kernel_forwarding_off() -> None:
    fake = FakeIptables()
    kernel = router_program.KernelForwarding(TAG, runner=fake)
    assert kernel.start()
    assert kernel.apply({8701: ("10.0.0.2", 32768)}, [8701])
    assert kernel.apply({8701: ("10.0.0.2", 32768)}, [8701])  # unchanged: no second restore
    assert len(fake.restores()) == 2
    assert kernel.applied == ({8701: ("10.0.0.2", 32768)}, frozenset({8701}))

    fake.answers[("iptables-nft-restore",)] = (1, "iptables-nft-restore: line 3 failed")
    assert not kernel.apply({}, [8701])
    assert not kernel.enabled
    # Turning off removes our rules, so no DNAT is left to a target that may go away.
    assert ["iptables-nft", "-t", "nat", "-S", NAMES.dnat] in fake.commands()
    assert not kernel.apply({8701: ("10.0.0.2", 32768)}, [8701])


def test_no_iptables_means_proxy_only() -> None:
    fake = FakeIptables({("iptables-nft-save",): (127, "not found"), ("iptables-legacy-save",): (127, "not found")})
    kernel = router_program.KernelForwarding(TAG, runner=fake)
    assert not kernel.start()
    assert not kernel.enabled
    assert not kernel.apply({8701: ("10.0.0.2", 32768)}, [8701])
    kernel.stop()
    assert [args[0] for args, _ in fake.calls] == ["iptables-nft-save", "iptables-legacy-save"]


def test_only_ipv4_targets_on_other_nodes_are_forwarded_by_the_kernel() -> None:
    kernel = router_program.KernelForwarding(TAG, runner=FakeIptables(), is_local=lambda host: host == "10.0.0.1")
    assert kernel.can_forward_to(("10.0.0.2", 32768))
    assert not kernel.can_forward_to(("10.0.0.1", 32768))  # this node: the proxy
    assert not kernel.can_forward_to(None)
    assert not kernel.can_forward_to(("fd00::2", 32768))
    assert not kernel.can_forward_to(("node2.example", 32768))
    assert router_program.is_local_address("127.0.0.1")
    assert not router_program.is_local_address("192.0.2.123")  # TEST-NET-1: nobody's address


def test_router_dnats_a_proven_target_and_takes_the_rule_away_at_a_hold(tmp_path: Path, servers: Callable[..., EchoServer]) -> None:
    """The router in this process with a fake iptables: which ports its rules DNAT, and when."""
    server = servers(prefix=b"S")
    routes = tmp_path / "routes"
    routes.mkdir()
    fake = FakeIptables()
    # Loopback stands in for another node's address.
    kernel = router_program.KernelForwarding(TAG, runner=fake, is_local=lambda host: False)
    port = free_port()

    def write(target: str | None) -> None:
        (routes / ".tmp").write_text(json.dumps({"target": target, "hold_seconds": 10}))
        os.replace(routes / ".tmp", routes / f"{port}.json")

    async def until(predicate: Callable[[], bool], timeout: float = 3.0) -> float:
        started = time.monotonic()
        while not predicate():
            assert time.monotonic() - started < timeout, f"timed out; applied {kernel.applied}"
            await asyncio.sleep(0.01)
        return time.monotonic() - started

    async def scenario() -> None:
        router = router_program.Router(routes, LOOPBACK, kernel=kernel)
        stop = asyncio.Event()
        running = asyncio.create_task(router.run(stop))
        await until(lambda: kernel.enabled)

        write(server.address)
        # Proven by the probe: the rule goes in without any client.
        await until(lambda: kernel.applied[0] == {port: (LOOPBACK, server.port)})
        assert kernel.applied[1] == {port}

        # A hold: the rule is gone by the time the router acknowledges it (the provider waits
        # for that before it stops the application), and soon.
        write(None)
        acknowledged = tmp_path / "applied" / f"{port}.json"
        assert await until(lambda: acknowledged.exists() and acknowledged.read_bytes() == (routes / f"{port}.json").read_bytes()) < 0.3
        assert kernel.applied[0] == {}
        assert kernel.applied[1] == {port}  # MASQUERADE/ACCEPT stay for connections already forwarded

        # A connection arriving during the hold reaches the listener, is held, and its success
        # proves the new target at once.
        other = servers(prefix=b"T")
        loop = asyncio.get_running_loop()
        client = await loop.run_in_executor(None, connect, port)
        await asyncio.sleep(0.2)
        write(other.address)
        await until(lambda: kernel.applied[0] == {port: (LOOPBACK, other.port)})
        await loop.run_in_executor(None, client.sendall, b"1")
        assert await loop.run_in_executor(None, recv_exactly, client, 2) == b"T1"
        client.close()

        # The target stops accepting: the rule goes, the proxy holds new connections again.
        other.close()
        await until(lambda: kernel.applied[0] == {}, timeout=5)

        # Removing the route removes everything for its port.
        (routes / f"{port}.json").unlink()
        await until(lambda: kernel.applied == ({}, frozenset()))

        stop.set()
        await running

    asyncio.run(scenario())
    # Stopping removed our chains (the fake says they exist).
    commands = fake.commands()
    last_restore = max(i for i, command in enumerate(commands) if command[0].endswith("-restore"))
    after_last_restore = commands[last_restore + 1 :]
    for table, chain in (("nat", NAMES.dnat), ("nat", NAMES.snat), ("filter", NAMES.accept)):
        assert ["iptables-nft", "-t", table, "-X", chain] in after_last_restore
    assert not kernel.enabled


def while_a_router_runs(routes: Path, check: Callable[[], Awaitable[None]]) -> None:
    """A router on ``routes`` (loopback, no kernel forwarding) in this process for as long as ``check`` runs."""

    async def scenario() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(router_program.Router(routes, LOOPBACK).run(stop))
        try:
            await check()
        finally:
            stop.set()
            await running

    asyncio.run(scenario())


def test_a_starting_router_clears_its_predecessors_acknowledgements(tmp_path: Path) -> None:
    routes = tmp_path / "routes"
    routes.mkdir()
    stale = tmp_path / "applied" / "9200.json"
    stale.parent.mkdir()
    stale.write_text('{"target": null}')

    async def check() -> None:
        await asyncio.sleep(0.1)
        # Not applied by this router: a provider waiting for it must not take it as done.
        assert not stale.exists()

    while_a_router_runs(routes, check)


def test_a_route_is_acknowledged_only_once_its_port_is_listened_on(tmp_path: Path) -> None:
    """A port someone else holds must fail the provider's write (no acknowledgement), not pass silently."""
    routes = tmp_path / "routes"
    routes.mkdir()
    squatter = socket.create_server((LOOPBACK, 0))
    port = squatter.getsockname()[1]
    (routes / f"{port}.json").write_text(json.dumps({"target": None, "hold_seconds": 10}))
    acknowledged = tmp_path / "applied" / f"{port}.json"

    async def check() -> None:
        await asyncio.sleep(0.3)
        assert not acknowledged.exists()
        squatter.close()
        for _ in range(100):
            if acknowledged.exists():
                break
            await asyncio.sleep(0.02)
        assert acknowledged.read_bytes() == (routes / f"{port}.json").read_bytes()

    while_a_router_runs(routes, check)


def test_a_route_writer_wakes_the_router_instead_of_waiting_for_its_poll(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer (as run in the router container, its paths moved here) against a router that would poll once a minute."""
    monkeypatch.setattr(router_program, "POLL_INTERVAL", 60.0)
    routes = tmp_path / "routes" / "ports"
    routes.mkdir(parents=True)
    program = route_writer.PROGRAM.replace(route_writer.ROUTES_DIR, str(routes))
    port = free_port()
    line = f"{port} {json.dumps({'target': None, 'hold_seconds': 10})}\n"

    async def check() -> None:
        await asyncio.sleep(0.1)  # the router's first poll, before the route file exists
        assert (routes.parent / router_program.WAKE_FILE).read_text() == f"{os.getpid()}\n"
        writer = await asyncio.create_subprocess_exec(sys.executable, "-c", program, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        answer, _ = await asyncio.wait_for(writer.communicate(line.encode()), 5)
        assert answer.decode() == f"ok {port}\n"

    while_a_router_runs(routes, check)
    assert not (routes.parent / router_program.WAKE_FILE).exists()  # a stopped router takes no signal


def test_a_route_writer_without_a_wake_file_says_nothing_of_it(tmp_path: Path) -> None:
    """A router that takes no signal (an older one, or one still starting): the writer only waits for the acknowledgement."""
    routes = tmp_path / "routes" / "ports"
    routes.mkdir(parents=True)
    body = json.dumps({"target": None, "hold_seconds": 10})
    (tmp_path / "routes" / "applied").mkdir()
    (tmp_path / "routes" / "applied" / "9200.json").write_text(body)  # as if the router had taken it
    program = route_writer.PROGRAM.replace(route_writer.ROUTES_DIR, str(routes))
    answer = subprocess.run([sys.executable, "-c", program], input=f"9200 {body}\n", capture_output=True, text=True, timeout=10)
    assert (answer.stdout, answer.stderr) == ("ok 9200\n", "")
    # The same as arguments (an exec per write), and a route the router never takes is late.
    late = subprocess.run(
        [sys.executable, "-c", program.replace("time.monotonic() + 10", "time.monotonic() + 0.1"), f"9200 {body}", "80 {}"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert (late.stdout, late.stderr) == ("ok 9200\nlate 80\n", "")
