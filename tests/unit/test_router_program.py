"""The per-node TCP router, run as the container runs it (a subprocess), against echo servers on loopback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

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
