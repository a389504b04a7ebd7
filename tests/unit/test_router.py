"""The per-node TCP router (on_node/router.py), run as the container runs it (a subprocess, from the files its
container gets), and in this process, against echo servers on loopback."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from iptables_fake import FakeIptables

from flocker_provider import on_node
from flocker_provider.docker_layer import route_writer
from flocker_provider.on_node.kernel_forwarding import KernelForwarding, rule_names
from flocker_provider.on_node.router import PROBE_INTERVAL, PROBE_INTERVAL_MAX, RETIRE_SIGNAL, WAKE_FILE, Router, probe_waits
from flocker_provider.planning.containers import router_spec

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


def unpack_router(root: Path) -> Path:
    """The router's modules as its container gets them, unpacked under ``root``; the directory to import them from."""
    with tarfile.open(fileobj=io.BytesIO(on_node.archive(on_node.ROUTER))) as tar:
        tar.extractall(root, filter="data")
    return root / on_node.DIRECTORY.lstrip("/")


class RouterProcess:
    def __init__(self, state: Path, layer: Path, extra_args: list[str]) -> None:
        self.routes = state / "routes"
        self.routes.mkdir()
        self.stats_path = state / "router-stats.json"
        self.lines: list[str] = []
        self._changed = threading.Condition()
        # -S: no site-packages, so the project is not importable: the shipped modules must need nothing else.
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-S",
                "-m",
                f"{on_node.PACKAGE}.router",
                "--routes-dir",
                str(self.routes),
                "--listen-address",
                LOOPBACK,
                *extra_args,
            ],
            env={**os.environ, "PYTHONPATH": str(layer)},
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
    layer = unpack_router(tmp_path / "layer")

    def start(*extra_args: str) -> RouterProcess:
        state = tmp_path / f"node{len(routers)}"
        state.mkdir()
        routers.append(RouterProcess(state, layer, list(extra_args)))
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


def test_a_retiring_router_hands_its_ports_over_and_finishes_its_connections(
    router: RouterProcess, servers: Callable[..., EchoServer]
) -> None:
    """What a take-over's predecessor gets instead of SIGKILL, which cut a forwarded connection in CI."""
    server = servers()
    port = router.add_route(server.address)
    router.wait_stats(lambda stats: True)

    def shared() -> dict[str, bytes]:
        return {name: (router.routes.parent / name).read_bytes() for name in (WAKE_FILE, f"applied/{port}.json", "router-stats.json")}

    with connect(port) as open_connection:
        open_connection.sendall(b"x")
        assert recv_exactly(open_connection, 1) == b"x"

        router.process.send_signal(RETIRE_SIGNAL)
        router.wait_log("retiring: 1 connections forwarded")
        before = shared()
        # The port is free for the successor at once...
        socket.create_server((LOOPBACK, port)).close()
        # ...while the connection it forwards goes on, and so does the router, for it.
        time.sleep(0.2)
        open_connection.sendall(b"y")
        assert recv_exactly(open_connection, 1) == b"y"
        assert router.process.poll() is None
    router.wait_log("retired")
    assert router.process.wait(5) == 0
    # The routes volume is the successor's: its wake file, acknowledgements and stats stay as they were.
    assert shared() == before


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


# The router with kernel forwarding, in this process, its iptables faked.

TAG = "flocker-unit.router"
NAMES = rule_names(TAG)


def test_router_dnats_a_proven_target_and_takes_the_rule_away_at_a_hold(tmp_path: Path, servers: Callable[..., EchoServer]) -> None:
    """The router in this process with a fake iptables: which ports its rules DNAT, and when."""
    server = servers(prefix=b"S")
    routes = tmp_path / "routes"
    routes.mkdir()
    fake = FakeIptables()
    # Loopback stands in for another node's address.
    kernel = KernelForwarding(TAG, runner=fake, is_local=lambda host: False)
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
        router = Router(routes, LOOPBACK, kernel=kernel)
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


def test_a_refusing_target_is_probed_less_and_less_often() -> None:
    """Hundreds of routes to applications that do not listen must not cost their routers a connect each per half second."""
    waits = list(itertools.islice(probe_waits(), 10))
    assert waits[0] == PROBE_INTERVAL
    assert all(later == min(earlier * 2, PROBE_INTERVAL_MAX) for earlier, later in itertools.pairwise(waits))
    assert waits[-1] == PROBE_INTERVAL_MAX


def while_a_router_runs(routes: Path, check: Callable[[], Awaitable[None]]) -> None:
    """A router on ``routes`` (loopback, no kernel forwarding) in this process for as long as ``check`` runs."""

    async def scenario() -> None:
        stop = asyncio.Event()
        running = asyncio.create_task(Router(routes, LOOPBACK).run(stop))
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
    monkeypatch.setattr("flocker_provider.on_node.router.POLL_INTERVAL", 60.0)
    routes = tmp_path / "routes" / "ports"
    routes.mkdir(parents=True)
    program = route_writer.PROGRAM.replace(route_writer.ROUTES_DIR, str(routes))
    port = free_port()
    line = f"{port} {json.dumps({'target': None, 'hold_seconds': 10})}\n"

    async def check() -> None:
        await asyncio.sleep(0.1)  # the router's first poll, before the route file exists
        assert (routes.parent / WAKE_FILE).read_text() == f"{os.getpid()}\n"
        writer = await asyncio.create_subprocess_exec(sys.executable, "-c", program, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        answer, _ = await asyncio.wait_for(writer.communicate(line.encode()), 5)
        assert answer.decode() == f"ok {port}\n"

    while_a_router_runs(routes, check)
    assert not (routes.parent / WAKE_FILE).exists()  # a stopped router takes no signal


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


def test_a_routers_hash_changes_with_its_modules_and_not_with_the_move_helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A changed router replaces the running ones (a take-over each); a changed move helper must not."""
    package = tmp_path / on_node.PACKAGE
    shutil.copytree(Path(on_node.__file__).parent, package)
    monkeypatch.setattr(on_node, "_HERE", package)
    spec = router_spec("p", "s", "flocker/base:local")

    def hash_after_changing(module: str) -> str:
        (package / f"{module}.py").write_text((package / f"{module}.py").read_text() + "# changed\n")
        on_node.archive.cache_clear()
        return spec.program_hash()

    try:
        before = hash_after_changing("stream_receive")
        assert hash_after_changing("delta_copy") == before
        assert hash_after_changing("splicing") != before
    finally:
        on_node.archive.cache_clear()  # of the copy: the next test ships the real modules
