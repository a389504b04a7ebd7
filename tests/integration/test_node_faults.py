"""Faults of the nodes themselves during a move (an engine stopped, a disk full), on the real
cluster, under a client that writes and checks its acknowledgements."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .harness import (
    REPO,
    STORE,
    ClusterNode,
    Pulumi,
    Sampler,
    Writer,
    by_name,
    eventually,
    http_json,
    lost_writes,
    make,
    slowed,
    transfer_helpers,
)

pytestmark = pytest.mark.cluster

BLOB_MIB = 512


def cluster(command: str, node: ClusterNode) -> None:
    subprocess.run(["bash", str(REPO / "scripts" / "cluster.sh"), command, node.name.removeprefix("node")], check=True)


@contextlib.contextmanager
def engine_down(node: ClusterNode) -> Iterator[None]:
    """``node``'s engine stopped for the block, and started again after it whatever happens."""
    cluster("stop-node", node)
    try:
        yield
    finally:
        cluster("start-node", node)


class EngineProxy:
    """An engine's API forwarded from a port of this machine, connection by connection,
    that runs ``fault`` in the middle of the first request matching ``trigger``, before it
    reaches the engine, and then drops that connection: a fault at an exact point of a
    provider's conversation with the engine, not at a moment of a race with its output.
    It reads the requests, so it takes them in plain TCP on loopback, and passes them on to
    the engine's unix socket (its TCP port speaks TLS only)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.trigger: re.Pattern[bytes] | None = None
        self.fault: Callable[[], None] = lambda: None
        self.fired = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.socket(socket.AF_UNIX)
            upstream.settimeout(5)
            upstream.connect(self.upstream)
        except OSError:  # the engine is down: so is its proxy
            client.close()
            return
        upstream.settimeout(None)
        replies = threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True)
        replies.start()
        self._pipe(client, upstream, True)
        replies.join()
        client.close()
        upstream.close()

    def _pipe(self, source: socket.socket, sink: socket.socket, requests: bool) -> None:
        try:
            while data := source.recv(65536):
                if requests and self.trigger is not None and not self.fired.is_set() and self.trigger.search(data):
                    self.fired.set()
                    self.fault()
                    for end in (source, sink):
                        end.shutdown(socket.SHUT_RDWR)
                    return
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)  # a half-close (an exec's stdin ending) is passed on
        except OSError:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.server.close()


@pytest.fixture
def proxied(nodes: list[ClusterNode], workdir: Path) -> Iterator[tuple[Path, EngineProxy]]:
    """A node file like the cluster's, with node2's engine reached through an EngineProxy.
    Set up before ``cleanup``, so that the stack's destroy still goes through it."""
    node2 = by_name(nodes, "node2")
    proxy = EngineProxy(node2.engine_socket)
    file = workdir / "nodes-proxied.json"
    entries = [
        {"name": n.name, "address": n.address, "docker_host": f"tcp://127.0.0.1:{proxy.port}"} if n == node2 else n.entry() for n in nodes
    ]
    file.write_text(json.dumps({"nodes": entries}))
    yield file, proxy
    proxy.close()


def serving_store(nodes: list[ClusterNode], workdir: Path, stack_name: str, cleanup: list[Pulumi], blob_mib: int) -> Pulumi:
    """The store on node1, up, with a blob of ``blob_mib`` MiB in its volume."""
    store = make(workdir, stack_name, STORE, "node1")
    cleanup.append(store)
    store.up()
    node1 = by_name(nodes, "node1")
    eventually(lambda: http_json("GET", f"http://{node1.address}:9200/"), what="store up")
    blob = f"dd if=/dev/zero of=/var/lib/elasticsearch/blob bs=1M count={blob_mib} status=none"
    assert node1.client().containers.get(f"flocker-{stack_name}-store").exec_run(["sh", "-c", blob]).exit_code == 0
    return store


def writing(nodes: list[ClusterNode], container: str, *through: ClusterNode) -> tuple[Writer, Sampler]:
    writer = Writer([f"{node.address}:9200" for node in through])
    sampler = Sampler(nodes, container)
    writer.start()
    sampler.start()
    eventually(lambda: len(writer.acknowledged) > 50, what="writes before the move")
    return writer, sampler


def finished(writer: Writer, sampler: Sampler, store_node: ClusterNode) -> None:
    """Every acknowledged write on ``store_node``, and the store never ran on two nodes."""
    writer.stop.set()
    sampler.stop.set()
    writer.join()
    sampler.join()
    missing = lost_writes(store_node, writer)
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"
    assert sampler.most == 1, "the store ran on two nodes at once"


def test_the_destinations_engine_stopped_between_the_handoff_and_the_start_then_the_next_up_finishes(
    nodes: list[ClusterNode], workdir: Path, stack_name: str, proxied: tuple[Path, EngineProxy], cleanup: list[Pulumi]
) -> None:
    """The destination's engine stopped after the handoff, as the start of the store there
    begins. Injected through a proxy in front of node2's engine (the stack's node file names
    it): the request that lets the staged container through its gate (a kill with SIGUSR2)
    is held there while `cluster.sh stop-node 2` stops the engine, then dropped. The `up`
    fails with one message, no traceback, saying to run `pulumi up` again; once the engine
    is back, that finishes the move with every acknowledged write."""
    node_file, proxy = proxied
    node1, node2 = by_name(nodes, "node1"), by_name(nodes, "node2")
    store = Pulumi(workdir, stack_name)
    store.env["FLOCKER_NODES_FILE"] = str(node_file)
    store.write_program(STORE)
    store.init({"node": "node1"})
    cleanup.append(store)
    store.up()
    eventually(lambda: http_json("GET", f"http://{node1.address}:9200/"), what="store up")
    container = f"flocker-{stack_name}-store"
    writer, sampler = writing(nodes, container, node1, node2)

    proxy.trigger = re.compile(rb"POST /v[0-9.]+/containers/[0-9a-f]+/kill\?signal=USR2 ")
    proxy.fault = lambda: cluster("stop-node", node2)
    store.config({"node": "node2"})
    try:
        failed = store.up(check=False)
    finally:
        cluster("start-node", node2)
    output = failed.stdout + failed.stderr
    assert proxy.fired.is_set(), output
    assert failed.returncode != 0 and "Traceback" not in output, output
    # The whole message on one line: the step, the node, what to do.
    lines = [line for line in output.splitlines() if "the volume was handed over already" in line]
    assert lines and all(f"step 'start {container}" in line and "node2" in line for line in lines), output
    assert "run `pulumi up` again to finish the move" in lines[0], output
    # What the fault left: the live copy on node2, node1's retired, the store running nowhere.
    assert [c.name for c in node1.client().containers.list(filters={"name": container})] == []

    store.up()
    assert store.outputs()["node"] == "node2"
    assert node2.client().containers.get(container).status == "running"
    assert container not in [c.name for c in node1.client().containers.list(all=True)]
    finished(writer, sampler, node2)
    assert transfer_helpers(nodes) == []


def test_the_sources_engine_stopped_during_phase_1_loses_nothing_and_the_next_up_moves(
    nodes: list[ClusterNode], workdir: Path, stack_name: str, cleanup: list[Pulumi]
) -> None:
    """node1's engine stopped (`cluster.sh stop-node 1`) while the first stream of phase 1
    runs (slowed to 200 Mbit/s so that it lasts): the store goes down with it. The step fails
    naming node1; the partial copy on node2 is removed. Once the engine is back the store
    is as it was (exited: its restart policy is never), and `pulumi up` moves it with every
    acknowledged write."""
    node1, node2 = by_name(nodes, "node1"), by_name(nodes, "node2")
    store = serving_store(nodes, workdir, stack_name, cleanup, BLOB_MIB)
    container = f"flocker-{stack_name}-store"
    writer, sampler = writing(nodes, container, node1, node2)
    store.config({"node": "node2"})
    with slowed(node1):
        running = store.popen("up", "--yes", "--skip-preview")
        assert running.stdout is not None
        seen, stopped = [], False
        with contextlib.ExitStack() as down:
            for line in running.stdout:
                seen.append(line)
                if "phase 1 round 1 (stream): " in line and "%)" in line and not stopped:
                    down.enter_context(engine_down(node1))
                    stopped = True
            running.wait()
    output = "".join(seen)
    assert running.returncode != 0 and "Traceback" not in output, output
    assert "step 'phase 1: copy" in output and "node1: Docker engine not answering" in output, output
    assert (
        "nothing was lost: the application went down with the source's engine" in output
        and "the partial copy on node2 was removed" in output
    ), output
    assert container not in [v.name for v in node2.client().volumes.list()]
    # Back, the engine leaves the store exited (restart policy never) on its data.
    assert node1.client().containers.get(container).status == "exited"

    store.up()
    assert store.outputs()["node"] == "node2"
    finished(writer, sampler, node2)
    assert transfer_helpers(nodes) == []


def test_a_move_to_a_node_whose_disk_fills_fails_naming_it_and_removes_the_partial_copy(
    nodes: list[ClusterNode], workdir: Path, stack_name: str, cleanup: list[Pulumi]
) -> None:
    """A volume twice the size of the filesystem that holds the destination's volumes
    (a node made with FLOCKER_NODE<I>_DISK_MB): the copy fills it. The step fails saying so
    and naming the node; the store serves on node1 with every acknowledged write, and the
    partial copy is gone from the destination."""
    small = next((n for n in nodes if n.volumes_mb), None)
    if small is None:
        pytest.skip("no node with a small disk (FLOCKER_NODE5_DISK_MB=64 scripts/cluster.sh up 5, as `make test` starts it)")
    node1 = by_name(nodes, "node1")
    store = serving_store(nodes, workdir, stack_name, cleanup, 2 * small.volumes_mb)
    container = f"flocker-{stack_name}-store"
    writer, sampler = writing(nodes, container, node1)
    store.config({"node": small.name})
    failed = store.up(check=False)
    failed_at = time.monotonic()
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0 and "Traceback" not in output, output
    assert re.search(rf"{small.name}: .*(no space left|disk full)", output, re.IGNORECASE), output
    assert "nothing was lost" in output and f"the partial copy on {small.name} was removed" in output, output
    assert container not in [v.name for v in small.client().volumes.list()]
    assert transfer_helpers(nodes) == []
    assert node1.client().containers.get(container).status == "running"
    eventually(lambda: writer.served_since(failed_at), what="writes acknowledged after the failure")
    finished(writer, sampler, node1)
