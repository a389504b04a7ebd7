"""Engine overhead benchmark: what our provider adds to the Pulumi engine's own cost per application.

For each stack size, in one run on the local cluster: N applications (flocker/base:local
sleeping, each with a routed external port, spread over every node of the node file), and the
same N made of a trivial dynamic resource that does nothing (the floor the Pulumi engine and
the Python dynamic provider host set by themselves), each timed through:

- `pulumi up` creating them (context), `pulumi preview` with nothing to change, a no-change
  `pulumi up`, `pulumi destroy` (context);
- every Docker API request our provider makes, counted by a proxy in front of each node's
  engine (the stack's node file names the proxies): requests per application in the preview,
  and write requests (POST, PUT, DELETE) in the no-change `up`.

Targets (issue 15), ratios of this one run: preview / floor and no-change up / floor at the
largest size <= 1.5; 0 writes in a no-change up. Also reported: seconds per application
(slope) from the smallest to the largest size, ours and the floor's.

    .venv/bin/python bench/engine_bench.py --out bench/results/engine.json [--sizes 3,50,200]

BENCH_ENGINE_SIZES sets the default sizes. Needs the cluster and images (`make bench` brings them up).
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the cluster harness lives with the integration tests

from bench.report import parse_sizes, ratio_table, write_results  # noqa: E402
from tests.integration.harness import ClusterNode, Pulumi, load_nodes, ours  # noqa: E402

SIZES = {"3": 3, "50": 50, "200": 200}
PORT = 31000
TARGETS = {
    "preview_over_floor": ("<=", 1.5),
    "no_change_up_over_floor": ("<=", 1.5),
    "writes_in_no_change_up": ("<=", 0.0),
}
FLOCKER = """
import json
import pulumi
from flocker_pulumi import FlockerApplication

config = pulumi.Config()
nodes = json.loads(config.require("nodes"))
for i in range(int(config.require("count"))):
    FlockerApplication(
        f"app{i}",
        image="flocker/base:local",
        node=nodes[i % len(nodes)],
        # PID 1 that ends on SIGTERM: `sleep` as PID 1 ignores it, and every removal then
        # waits out Docker's 10 s stop timeout (a destroy of 200 took 9 minutes).
        command=["sh", "-c", "trap 'exit 0' TERM; sleep infinity & wait"],
        ports=[{"internal": 8080, "external": int(config.require("port")) + i}],
    )
"""
FLOOR = """
import json
import pulumi
import pulumi.dynamic


class Nothing(pulumi.dynamic.ResourceProvider):
    def create(self, props):
        return pulumi.dynamic.CreateResult(id_=props["name"], outs=props)


class Trivial(pulumi.dynamic.Resource, module="bench", name="Trivial"):
    pass


config = pulumi.Config()
nodes = json.loads(config.require("nodes"))
for i in range(int(config.require("count"))):
    Trivial(
        Nothing(),
        f"app{i}",
        {
            "name": f"app{i}",
            "image": "flocker/base:local",
            "node": nodes[i % len(nodes)],
            "ports": [{"internal": 8080, "external": int(config.require("port")) + i}],
        },
    )
"""
REQUEST = re.compile(rb"(?:^|\r\n)(GET|HEAD|POST|PUT|DELETE) (/\S*) HTTP/1\.[01]\r\n")
WRITES = {b"POST", b"PUT", b"DELETE"}


def log(message: str) -> None:
    print(f"engine-bench: {message}", file=sys.stderr, flush=True)


class CountingProxy:
    """A TCP proxy in front of one engine, counting the HTTP requests it carries. After an
    upgrade (an exec attached) the stream is not HTTP: what it carries is not counted then,
    unless it happens to look like a request line, which route lines never do. It reads the
    requests, so it passes them on to the engine's unix socket (its TCP port speaks TLS only)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.counts: Counter[tuple[bytes, bytes]] = Counter()
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.target)
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, requests: bool) -> None:
        tail = b""
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                if requests:
                    window = tail + data
                    found = [(m.group(1), re.sub(rb"/v[0-9.]+", b"", m.group(2).split(b"?")[0])) for m in REQUEST.finditer(window)]
                    with self._lock:
                        self.counts.update(found)
                    tail = window[-256:] if not found else window[window.rfind(b"\r\n") :]
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def taken(self) -> Counter[tuple[bytes, bytes]]:
        """The requests since the last call."""
        with self._lock:
            counts, self.counts = self.counts, Counter()
        return counts

    def close(self) -> None:
        self._server.close()


@contextlib.contextmanager
def proxied(nodes: list[ClusterNode], workdir: Path) -> Iterator[tuple[Path, list[CountingProxy]]]:
    """A node file whose engines are reached through counting proxies, and the proxies."""
    proxies = [CountingProxy(node.engine_socket) for node in nodes]
    entries = [
        {"name": node.name, "address": node.address, "docker_host": f"tcp://127.0.0.1:{proxy.port}"}
        for node, proxy in zip(nodes, proxies, strict=True)
    ]
    path = workdir / "nodes.json"
    path.write_text(json.dumps({"nodes": entries}))
    try:
        yield path, proxies
    finally:
        for proxy in proxies:
            proxy.close()


def timed(pulumi: Pulumi, *args: str) -> float:
    started = time.monotonic()
    pulumi.run(*args, timeout=3600)
    return round(time.monotonic() - started, 2)


def requests(proxies: list[CountingProxy]) -> Counter[tuple[bytes, bytes]]:
    total: Counter[tuple[bytes, bytes]] = Counter()
    for proxy in proxies:
        total.update(proxy.taken())
    return total


def measure(
    program: str, count: int, nodes: list[ClusterNode], workdir: Path, proxies: list[CountingProxy], node_file: Path
) -> dict[str, Any]:
    stack = "bench" + uuid.uuid4().hex[:6]
    pulumi = Pulumi(workdir / stack, stack)
    pulumi.write_program(program, name="engine-bench")
    pulumi.env["FLOCKER_NODES_FILE"] = str(node_file)
    pulumi.init({"count": str(count), "port": str(PORT), "nodes": json.dumps([n.name for n in nodes])})
    result: dict[str, Any] = {}
    try:
        result["create_seconds"] = timed(pulumi, "up", "--yes", "--skip-preview")
        requests(proxies)
        result["preview_seconds"] = timed(pulumi, "preview")
        preview = requests(proxies)
        result["no_change_up_seconds"] = timed(pulumi, "up", "--yes", "--skip-preview")
        up = requests(proxies)
        result["preview_requests"] = sum(preview.values())
        result["preview_requests_per_application"] = round(sum(preview.values()) / count, 2)
        result["no_change_up_requests"] = sum(up.values())
        result["no_change_up_writes"] = {f"{m.decode()} {p.decode()}": n for (m, p), n in up.items() if m in WRITES}
    finally:
        result["destroy_seconds"] = timed(pulumi, "destroy", "--yes", "--skip-preview")
    left = {name: items for name, items in ours(nodes, stack).items() if items}
    if left:
        result["left_behind"] = left
    return result


def markdown(document: dict[str, Any]) -> str:
    cases, ratios = document["cases"], document["ratios"]
    lines = [
        "## Engine overhead (preview and no-change up against a do-nothing dynamic resource)",
        "",
        f"N applications on {document['nodes']} nodes, each with a routed port; the floor is the same N of a dynamic "
        f"resource that does nothing; measured {document['measured_at']} on {document['machine']}.",
        "",
        "| N | preview | floor | ratio | no-change up | floor | ratio | API requests / app (preview) | writes (no-change up) "
        "| create | destroy |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, case in cases.items():
        ours_, floor = case["flocker"], case["floor"]
        lines.append(
            f"| {label} | {ours_['preview_seconds']:.1f} s | {floor['preview_seconds']:.1f} s | "
            f"{ours_['preview_seconds'] / floor['preview_seconds']:.2f} | {ours_['no_change_up_seconds']:.1f} s | "
            f"{floor['no_change_up_seconds']:.1f} s | {ours_['no_change_up_seconds'] / floor['no_change_up_seconds']:.2f} | "
            f"{ours_['preview_requests_per_application']} | {sum(ours_['no_change_up_writes'].values())} | "
            f"{ours_['create_seconds']:.0f} s | {ours_['destroy_seconds']:.0f} s |"
        )
    lines += ratio_table(f"ratio (N = {document['largest']})", ratios, TARGETS)
    slopes = document["slopes_seconds_per_application"]
    lines += [
        "",
        f"Seconds per application from N = {document['smallest']} to {document['largest']}: "
        + ", ".join(f"{k} {v}" for k, v in slopes.items()),
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    out, labels = parse_sizes(__doc__.splitlines()[0], SIZES, "BENCH_ENGINE_SIZES")
    nodes = load_nodes()
    if not nodes:
        sys.exit("engine-bench: no cluster in $FLOCKER_NODES_FILE")
    cases: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp, proxied(nodes, Path(tmp)) as (node_file, proxies):
        for label in labels:
            count = SIZES[label]
            cases[label] = {}
            for kind, program in (("floor", FLOOR), ("flocker", FLOCKER)):
                log(f"{count} applications, {kind}")
                cases[label][kind] = measure(program, count, nodes, Path(tmp), proxies, node_file)
                log(f"{count} {kind}: {cases[label][kind]}")
    largest, smallest = labels[-1], labels[0]
    big = cases[largest]
    ratios = {
        "preview_over_floor": round(big["flocker"]["preview_seconds"] / big["floor"]["preview_seconds"], 3),
        "no_change_up_over_floor": round(big["flocker"]["no_change_up_seconds"] / big["floor"]["no_change_up_seconds"], 3),
        "writes_in_no_change_up": float(max(sum(c["flocker"]["no_change_up_writes"].values()) for c in cases.values())),
    }
    span = SIZES[largest] - SIZES[smallest]
    slopes = {
        f"{kind} {what}": round((cases[largest][kind][key] - cases[smallest][kind][key]) / span, 4) if span else 0.0
        for kind in ("flocker", "floor")
        for what, key in (("preview", "preview_seconds"), ("no-change up", "no_change_up_seconds"))
    }
    summary = write_results(
        out,
        "engine",
        TARGETS,
        markdown,
        nodes=len(nodes),
        smallest=smallest,
        largest=largest,
        cases=cases,
        ratios=ratios,
        slopes_seconds_per_application=slopes,
    )
    print(summary.read_text())


if __name__ == "__main__":
    main()
