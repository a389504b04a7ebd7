"""Routing benchmark: the cost of a route, and what a move costs clients, against baselines.

In one run on the local cluster (numbers are only compared within the run: the machine is
shared and noisy):

- throughput (64 MiB per connection, best of 25 rounds over all paths, and the median of
  each round's routed over direct) and request latency (1-byte echo on one
  connection, median and p99 of 2,000) through the route of a node that does not host
  the application, and through the hosting node's own router, against a direct
  connection to the container's published port on the hosting node (the baseline);
- during a move of the Elasticsearch stand-in with its volume (node1 -> node2), a client
  loop opening a new connection per request through a non-hosting node (node3) counts
  failed connections and the slowest request; the router there reports the longest hold.
  The baseline is the same loop against the container's own published port on the source,
  i.e. what a client saw without routing.

Targets (issue 4): routed throughput >= 80% of direct (the median over the rounds of each
round's routed transfer over its direct one), routed median latency <= direct + 1 ms,
failed connections during a move = 0.

    .venv/bin/python bench/routing_bench.py --out bench/results/routing.json

writes the JSON, and a markdown summary beside it (routing.md) and on stdout. Needs the
cluster from $FLOCKER_NODES_FILE (3 nodes at least) and the images.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the cluster harness lives with the integration tests

from tests.integration.harness import ClusterNode, Pulumi, eventually, http_json, load_nodes, ours  # noqa: E402

BLAST_BYTES = 64 << 20
ECHOES = 2000
# Rounds over all paths in turn, best per path: load from other work on the machine then
# hits every path alike instead of whichever ran at the wrong moment. 25, not 7: single
# rounds swing by half either way here, and a round takes 50 ms.
THROUGHPUT_ROUNDS = 25
# Port 7001 sends BLAST_BYTES then closes; port 7002 echoes.
SERVER = f"""
import socket, threading
def blast(conn):
    chunk = memoryview(bytes(1 << 20))
    for _ in range({BLAST_BYTES >> 20}):
        conn.sendall(chunk)
    conn.close()
def echo(conn):
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while data := conn.recv(65536):
        conn.sendall(data)
    conn.close()
def serve(port, handler):
    listener = socket.create_server(("0.0.0.0", port), backlog=128)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=handler, args=(conn,), daemon=True).start()
threading.Thread(target=serve, args=(7001, blast), daemon=True).start()
serve(7002, echo)
"""

PROGRAM = f"""
import pulumi
from flocker_pulumi import FlockerApplication

config = pulumi.Config()
FlockerApplication("net", image="flocker/base:local", node="node1",
                   ports=[{{"internal": 7001, "external": 8701}}, {{"internal": 7002, "external": 8702}}],
                   command=["python3", "-c", {SERVER!r}])
store = FlockerApplication("store", image="flocker/elasticsearch:local", node=config.require("storeNode"),
                           ports=[{{"internal": 9200, "external": 8709}}], volume={{"mountpoint": "/var/lib/elasticsearch"}})
pulumi.export("last_move", store.volume.last_move)
"""

TARGETS = {
    # On the paired median, not on the best round of each path: with rounds of 50 ms that
    # swing by half either way, the best of each is one lucky transfer (best/best ranged
    # 0.59-0.91 across runs of the same code); each round's pair saw the same moment's load.
    "routed_over_direct_paired_median": (">=", 0.8),
    "routed_added_median_latency_ms": ("<=", 1.0),
    "failed_connections_during_move": ("<=", 0),
}


def log(message: str) -> None:
    print(f"routing-bench: {message}", file=sys.stderr, flush=True)


def throughput(address: str, port: int) -> float:
    """One transfer, in MiB/s."""
    buffer = bytearray(1 << 20)
    started = time.perf_counter()
    received = 0
    with socket.create_connection((address, port), timeout=30) as conn:
        while count := conn.recv_into(buffer):
            received += count
    if received != BLAST_BYTES:
        raise RuntimeError(f"{address}:{port}: received {received} of {BLAST_BYTES} bytes")
    return received / (1 << 20) / (time.perf_counter() - started)


def latency(address: str, port: int) -> dict[str, float]:
    """Round trips of one byte on one connection, in milliseconds."""
    samples = []
    with socket.create_connection((address, port), timeout=30) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(ECHOES):
            started = time.perf_counter()
            conn.sendall(b"x")
            if conn.recv(1) != b"x":
                raise RuntimeError(f"{address}:{port}: echo lost")
            samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {"median_ms": round(statistics.median(samples), 3), "p99_ms": round(samples[int(len(samples) * 0.99)], 3)}


class ClientLoop(threading.Thread):
    """A new connection per request until stopped; failures counted by kind."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.ok = 0
        self.failures: dict[str, int] = {}
        self.slowest = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                http_json("GET", self.url, timeout=60)
                self.ok += 1
            except Exception as exc:  # every kind of failure counts, none may end the loop unseen
                kind = type(getattr(exc, "reason", exc)).__name__
                self.failures[kind] = self.failures.get(kind, 0) + 1
                time.sleep(0.05)  # a refused connection returns at once: do not spin
            self.slowest = max(self.slowest, time.monotonic() - started)
            time.sleep(0.02)

    def result(self) -> dict[str, Any]:
        return {
            "requests_ok": self.ok,
            "failed": sum(self.failures.values()),
            "failures": self.failures,
            "slowest_s": round(self.slowest, 3),
        }


def published_port(node: ClusterNode, container: str, internal: int) -> int:
    attrs = node.client().containers.get(container).attrs
    return int(attrs["NetworkSettings"]["Ports"][f"{internal}/tcp"][0]["HostPort"])


def measure_paths(nodes: dict[str, ClusterNode], stack: str) -> dict[str, Any]:
    host, other = nodes["node1"], nodes["node3"]
    container = f"flocker-{stack}-net"
    paths = {
        "direct": (host.address, published_port(host, container, 7001), published_port(host, container, 7002)),
        "hosting_router": (host.address, 8701, 8702),
        "non_hosting_route": (other.address, 8701, 8702),
    }
    # Which mechanism the non-hosting route measures: kernel forwarding once node3's router has
    # proven the target (it probes at once), else its proxy (no NET_ADMIN or no iptables).
    router = other.client().containers.get(f"flocker-{stack}.router")

    def kernel_backend() -> str | None:
        # The stats file is written every second; a router that forwards by kernel says so within a few.
        try:
            stats = json.loads(router.exec_run(["cat", "/routes/router-stats.json"]).output)
        except ValueError:
            return None
        return stats.get("kernel_backend") if 8701 in stats.get("kernel_ports", []) else None

    try:
        mechanism = f"kernel ({eventually(kernel_backend, timeout=10, what='kernel forwarding on node3')})"
    except AssertionError:  # eventually gave up: the router proxies (no NET_ADMIN or no iptables)
        mechanism = "proxy"
    log(f"throughput: {THROUGHPUT_ROUNDS} rounds over {', '.join(paths)}; non-hosting route by {mechanism}")
    rounds: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(THROUGHPUT_ROUNDS):
        for name, (address, blast_port, _) in paths.items():
            rounds[name].append(throughput(address, blast_port))
    found = {}
    for name, (address, _, echo_port) in paths.items():
        log(f"latency: {name} ({address})")
        found[name] = {
            "throughput_mib_s": round(max(rounds[name]), 1),
            # The best round alone swings with one lucky direct round on a shared machine; the
            # median of the same rounds is reported beside it (the target stays on the best).
            "median_throughput_mib_s": round(statistics.median(rounds[name]), 1),
            "rounds_mib_s": [round(r, 1) for r in rounds[name]],
            **latency(address, echo_port),
        }
    found["non_hosting_route"]["mechanism"] = mechanism
    return found


def measure_move(pulumi: Pulumi, nodes: dict[str, ClusterNode], stack: str) -> dict[str, Any]:
    source, other = nodes["node1"], nodes["node3"]
    direct_port = published_port(source, f"flocker-{stack}-store", 9200)
    routed = ClientLoop(f"http://{other.address}:8709/")
    unrouted = ClientLoop(f"http://{source.address}:{direct_port}/")
    for loop in (routed, unrouted):
        loop.start()
    eventually(lambda: routed.ok > 5 and unrouted.ok > 5, what="client loops running")
    log("moving the store from node1 to node2")
    pulumi.config({"storeNode": "node2"})
    pulumi.up()
    moved_at = routed.ok
    eventually(lambda: routed.ok > moved_at + 5, what="routed loop still running after the move")
    for loop in (routed, unrouted):
        loop.stop.set()
        loop.join(90)
    router = other.client().containers.get(f"flocker-{stack}.router")
    stats = json.loads(router.exec_run(["cat", "/routes/router-stats.json"]).output)
    last_move = pulumi.outputs()["last_move"]
    return {
        "routed_via_node3": routed.result(),
        "baseline_direct_to_source": unrouted.result(),
        "router_node3": {k: stats[k] for k in ("held", "held_released", "held_timed_out", "max_hold_seconds")},
        "provider_downtime_s": last_move.get("downtime_seconds"),
    }


def summarize(results: dict[str, Any]) -> tuple[dict[str, Any], str]:
    paths, move = results["paths"], results["move"]
    direct = paths["direct"]
    ratios = {
        "routed_throughput_over_direct": round(paths["non_hosting_route"]["throughput_mib_s"] / direct["throughput_mib_s"], 3),
        "routed_median_throughput_over_direct_median": round(
            paths["non_hosting_route"]["median_throughput_mib_s"] / direct["median_throughput_mib_s"], 3
        ),
        # Each round's routed transfer over the direct one right before it: both saw the same
        # moment's load. Single rounds swing by half either way on this shared machine.
        "routed_over_direct_paired_median": round(
            statistics.median(r / d for r, d in zip(paths["non_hosting_route"]["rounds_mib_s"], direct["rounds_mib_s"], strict=True)), 3
        ),
        "hosting_router_throughput_over_direct": round(paths["hosting_router"]["throughput_mib_s"] / direct["throughput_mib_s"], 3),
        "routed_added_median_latency_ms": round(paths["non_hosting_route"]["median_ms"] - direct["median_ms"], 3),
        "hosting_router_added_median_latency_ms": round(paths["hosting_router"]["median_ms"] - direct["median_ms"], 3),
        "failed_connections_during_move": move["routed_via_node3"]["failed"],
    }
    lines = [
        "# Routing benchmark",
        "",
        f"| path | throughput MiB/s (best of {THROUGHPUT_ROUNDS}) | median of the rounds | median ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    for name, row in paths.items():
        label = f"{name} ({row['mechanism']})" if "mechanism" in row else name
        lines.append(f"| {label} | {row['throughput_mib_s']} | {row['median_throughput_mib_s']} | {row['median_ms']} | {row['p99_ms']} |")
    lines += ["", "| during a move (node1 -> node2) | ok | failed | slowest s |", "|---|---|---|---|"]
    for name in ("routed_via_node3", "baseline_direct_to_source"):
        row = move[name]
        lines.append(f"| {name} | {row['requests_ok']} | {row['failed']} {row['failures'] or ''} | {row['slowest_s']} |")
    lines += [
        "",
        f"Longest hold on node3's router: {move['router_node3']['max_hold_seconds']} s "
        f"({move['router_node3']['held']} held, {move['router_node3']['held_timed_out']} timed out); "
        f"provider downtime (stop to running): {move['provider_downtime_s']} s.",
        "",
        "| ratio | value | target | met |",
        "|---|---|---|---|",
    ]
    for name, value in ratios.items():
        op, target = TARGETS.get(name, ("", None))
        met = "" if target is None else ("yes" if (value >= target if op == ">=" else value <= target) else "no")
        lines.append(f"| {name} | {value} | {op} {target if target is not None else ''} | {met} |")
    return ratios, "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file; the markdown summary goes beside it (.md)")
    args = parser.parse_args()
    found = load_nodes()
    if not found or len(found) < 3:
        sys.exit("routing-bench: needs a cluster of 3 nodes or more in $FLOCKER_NODES_FILE")
    nodes = {n.name: n for n in found}
    stack = "bench" + uuid.uuid4().hex[:6]
    with tempfile.TemporaryDirectory() as workdir:
        pulumi = Pulumi(Path(workdir), stack)
        pulumi.write_program(PROGRAM, name="routing-bench")
        pulumi.init({"storeNode": "node1"})
        try:
            log("deploying")
            pulumi.up()
            eventually(lambda: http_json("GET", f"http://{nodes['node3'].address}:8709/"), what="store routed")
            results = {"paths": measure_paths(nodes, stack), "move": measure_move(pulumi, nodes, stack)}
        finally:
            pulumi.destroy()
        leftovers = {k: v for k, v in ours(found, stack).items() if v}
    ratios, summary = summarize(results)
    results = {**results, "ratios": ratios, "targets": {k: f"{op} {v}" for k, (op, v) in TARGETS.items()}, "leftovers": leftovers}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(summary)
    print(summary)


if __name__ == "__main__":
    main()
