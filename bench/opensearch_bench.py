"""OpenSearch move benchmark: the ELK example's store, real OpenSearch 2.19, moved by `pulumi up`.

For each size, in one run on the local cluster: OpenSearch (flocker/opensearch:local) on node1,
its volume filled to the size with a real index (documents indexed in bulk until the store
holds that much on disk), a client indexing one document per request as fast as they are
acknowledged, through node3 (a node that hosts neither copy). Measured on the same nodes, in
the same run:

- the move node1 -> node2: the client's pause around the moment the stop returned (its
  downtime), and of it the part that is OpenSearch's own start (the start and wait steps: a
  JVM start and a shard recovery, the application's cost, not the move's);
- `docker restart` of the same container on node2, same client: its pause around it (the floor
  any move pays: OpenSearch's own stop and start);
- phase-1 throughput (round 1, a tar stream) against a raw `tar | tar` of the same volume
  between the same nodes, before and after the move, under the same client.

Targets (issue 11), ratios of numbers from this one run: move downtime / restart downtime
<= 1.5, downtime at 4 GB / at 100 MB <= 1.5, phase 1 / raw >= 0.7. Every acknowledged
document is looked up by id on node2 at the end.

    .venv/bin/python bench/opensearch_bench.py --out bench/results/opensearch.json [--sizes 100M,4G]

BENCH_OS_SIZES sets the default sizes. Needs the cluster and images (`make bench` brings them up).
"""

from __future__ import annotations

import base64
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the cluster harness lives with the integration tests

from bench.move_bench import raw_copy, remove_bench_objects, writer_finished, writer_started  # noqa: E402
from bench.report import client_timeline, parse_sizes, ratio_table, write_results  # noqa: E402
from tests.integration.harness import (  # noqa: E402
    ClusterNode,
    by_name,
    eventually,
    gaps_around,
    http_json,
    http_ndjson,
    load_nodes,
    make,
    missing_writes,
    stop_returned_at,
)

MiB = 1 << 20
SIZES = {"100M": 100 * MiB, "1G": 1024 * MiB, "4G": 4096 * MiB}
# The size ratio is of the move's part of the downtime: OpenSearch's own start grows with its
# index (a `docker restart` of it took 15 s at 0.5 GB and 35 s at 4.3 GB in one run), which
# no move can change; the ratio with the start in it is reported beside it.
TARGETS = {
    "downtime_over_restart": ("<=", 1.5),
    "downtime_without_start_4G_over_100M": ("<=", 1.5),
    "phase1_over_raw": (">=", 0.7),
}
PROGRAM = """
import pulumi
from flocker_pulumi import FlockerApplication

config = pulumi.Config()
store = FlockerApplication(
    "store",
    image="flocker/opensearch:local",
    node=config.require("node"),
    ports=[{"internal": 9200, "external": 9200}],
    volume={"mountpoint": "/var/lib/elasticsearch"},
    wait_timeout=300,
    hold_seconds=120,
)
pulumi.export("last_move", store.volume.last_move)
"""
# Documents of 64 KiB (48 KiB of random bytes in base64), 4 MiB per bulk request: indexed at 44
# MB/s here, where documents of 4 KiB went in at 17 MB/s (a 4 GB store took 4 minutes to make).
BULK_DOCS = 64
BLOB = 48 * 1024


def log(message: str) -> None:
    print(f"opensearch-bench: {message}", file=sys.stderr, flush=True)


def healthy(node: ClusterNode) -> bool:
    try:
        return http_json("GET", f"http://{node.address}:9200/_cluster/health", timeout=5)["status"] == "green"
    except OSError:
        return False


def fill(node: ClusterNode, volume: str, size: int) -> int:
    """Index documents in bulk into index `filler` until ``size`` bytes of them were sent, then
    flush, so that what the move copies is segments, as in a store that has been running for a
    while. Returns the volume's bytes on disk, as `du` counts them: OpenSearch's own store stats
    are cached for 10 s (index.store.stats_refresh_interval), which made the first runs stop at
    5 times the size, or a fifth of it."""
    base = f"http://{node.address}:9200"
    settings = {"number_of_shards": 1, "number_of_replicas": 0, "refresh_interval": "30s", "translog.durability": "async"}
    http_json("PUT", f"{base}/filler", {"settings": settings, "mappings": {"properties": {"blob": {"type": "binary"}}}})
    sent, batch = 0, 0
    while sent < size:
        body = "".join(
            '{"index":{}}\n' + json.dumps({"n": batch * BULK_DOCS + i, "blob": base64.b64encode(os.urandom(BLOB)).decode()}) + "\n"
            for i in range(BULK_DOCS)
        )
        answer = http_ndjson(f"{base}/filler/_bulk", body)
        if answer["errors"]:
            raise RuntimeError(f"bulk indexing failed: {json.dumps(answer['items'][:2])}")
        sent += len(body)
        batch += 1
    http_json("POST", f"{base}/filler/_flush?wait_if_ongoing=true", timeout=300)
    output = node.client().containers.run(
        "flocker/base:local", ["du", "-sb", "/data"], volumes={volume: {"bind": "/data", "mode": "ro"}}, remove=True
    )
    return int(output.split()[0])


def start_seconds(last_move: dict[str, Any]) -> float:
    """The move's start and wait steps: the container started, OpenSearch up and its shards assigned."""
    return round(sum(s["seconds"] for s in last_move["steps"] if s["step"].startswith(("start ", "wait for "))), 3)


def run_case(nodes: list[ClusterNode], label: str, workdir: Path) -> dict[str, Any]:
    source, destination, third = (by_name(nodes, name) for name in ("node1", "node2", "node3"))
    stack = "o" + uuid.uuid4().hex[:8]
    volume, container = f"flocker-{stack}-store", f"flocker-{stack}-store"
    through = f"{third.address}:9200"
    store = make(workdir / label, stack, PROGRAM, source.name)
    try:
        store.up()
        eventually(lambda: healthy(source), timeout=300, what="OpenSearch green on node1")
        log(f"{label}: indexing until the store holds {SIZES[label] / MiB:.0f} MiB")
        started = time.monotonic()
        stored = fill(source, volume, SIZES[label])
        fill_seconds = round(time.monotonic() - started, 1)
        log(f"{label}: {stored / MiB:.0f} MiB stored in {fill_seconds} s; raw tar | tar {source.name} -> {destination.name}")
        # Before and after the move, averaged: the machine is shared and its load drifts.
        raw = [raw_copy(source, destination, volume)]

        log(f"{label}: pulumi up moves OpenSearch {source.name} -> {destination.name}")
        writer = writer_started(through, index="moved")
        store.config({"node": destination.name})
        started = time.monotonic()
        store.up()
        up_seconds = round(time.monotonic() - started, 1)
        writer_finished(writer, time.monotonic())
        last_move = store.outputs()["last_move"]
        downtime, other = gaps_around(writer.served, stop_returned_at(last_move))
        timeline = client_timeline(writer.served, last_move)
        lost = missing_writes(destination.address, writer)
        acknowledged = len(writer.acknowledged)
        raw.append(raw_copy(destination, source, volume))

        log(f"{label}: docker restart on {destination.name}")
        writer = writer_started(through, index="restarted")
        restart_began = time.monotonic()
        destination.client().containers.get(container).restart(timeout=30)
        restarted = time.monotonic()
        writer_finished(writer, restarted)
        restart_downtime, _ = gaps_around(writer.served, (restart_began + restarted) / 2)
        eventually(lambda: healthy(destination), timeout=300, what="OpenSearch green after the restart")
        lost += missing_writes(destination.address, writer)
        acknowledged += len(writer.acknowledged)

        first = last_move["rounds"][0]
        raw_rate = sum(r["bytes"] for r in raw) / sum(r["seconds"] for r in raw)
        start = start_seconds(last_move)
        case = {
            "size": label,
            "store_bytes": stored,
            "fill_seconds": fill_seconds,
            "raw_copies": raw,
            "raw_bytes_per_second": round(raw_rate),
            "phase1_round1": first,
            "phase1_bytes_per_second": round(first["bytes_sent"] / first["seconds"]),
            "phase1_over_raw": round(first["bytes_sent"] / first["seconds"] / raw_rate, 3),
            "move": {
                "client_downtime_seconds": downtime,
                "client_longest_other_pause_seconds": other,
                "start_seconds": start,
                "client_downtime_without_start_seconds": round(downtime - start, 3),
                "provider_downtime_seconds": last_move["downtime_seconds"],
                "pulumi_up_seconds": up_seconds,
                "last_move": last_move,
                "client_timeline": timeline,
            },
            "restart": {"client_downtime_seconds": restart_downtime, "restart_seconds": round(restarted - restart_began, 3)},
            "downtime_over_restart": round(downtime / restart_downtime, 3),
            # Looked up by id: the move's after the move, the restart's after the restart.
            "documents_acknowledged": acknowledged,
            "documents_lost": len(lost),
        }
        log(f"{label}: {json.dumps({k: v for k, v in case.items() if k not in ('move', 'raw_copies', 'phase1_round1')})}")
        return case
    finally:
        store.destroy()
        for node in nodes:
            remove_bench_objects(node)


def ratios(cases: dict[str, dict[str, Any]]) -> dict[str, float]:
    found: dict[str, float] = {"downtime_over_restart": max(c["downtime_over_restart"] for c in cases.values())}
    if "4G" in cases and "100M" in cases:
        small, large = cases["100M"], cases["4G"]
        for name, of in (
            ("downtime_without_start_4G_over_100M", lambda c: c["move"]["client_downtime_without_start_seconds"]),
            ("downtime_4G_over_100M", lambda c: c["move"]["client_downtime_seconds"]),
            ("restart_4G_over_100M", lambda c: c["restart"]["client_downtime_seconds"]),
        ):
            found[name] = round(of(large) / of(small), 3)
    found["phase1_over_raw"] = min(c["phase1_over_raw"] for c in cases.values())
    return found


def markdown(result: dict[str, Any]) -> str:
    mb = 1e6
    lines = [
        "## OpenSearch move (the ELK example's store)",
        "",
        "OpenSearch 2.19.6 (flocker/opensearch:local, 512 MB heap) with a real index filled to the size, a client indexing one"
        " document per request through node3; moved node1 -> node2 by `pulumi up`, then `docker restart` on node2 with the same"
        f" client; {result['cpus']} cores shared with other work, measured {result['measured_at']}. Downtime: the client's longest"
        " pause around the stop (or the restart). Start: the move's start and wait steps, OpenSearch's own JVM start and"
        " recovery, part of both downtimes. Raw: `tar | tar` over socat between the same nodes, before and after the move.",
        "",
        "| store | move downtime | of it, OpenSearch's start | restart downtime | move / restart | phase 1 / raw"
        " | phase-1 round 1 | raw | documents lost |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for case in result["cases"].values():
        move, restart = case["move"], case["restart"]
        lines.append(
            f"| {case['store_bytes'] / 1e9:.2f} GB | {move['client_downtime_seconds']:.2f} s | {move['start_seconds']:.2f} s"
            f" | {restart['client_downtime_seconds']:.2f} s | {case['downtime_over_restart']:.2f} | {case['phase1_over_raw']:.2f}"
            f" | {case['phase1_bytes_per_second'] / mb:.0f} MB/s | {case['raw_bytes_per_second'] / mb:.0f} MB/s"
            f" | {case['documents_lost']} of {case['documents_acknowledged']} |"
        )
    lines += ratio_table("ratio (the weakest size)", result["ratios"], TARGETS)
    return "\n".join(lines) + "\n"


def main() -> None:
    out, labels = parse_sizes(__doc__.splitlines()[0], SIZES, "BENCH_OS_SIZES")
    nodes = load_nodes()
    if nodes is None:
        sys.exit("opensearch-bench: FLOCKER_NODES_FILE names no node file (make bench starts the cluster)")
    for node in nodes:
        remove_bench_objects(node)
    with tempfile.TemporaryDirectory(prefix="opensearch-bench-") as tmp:
        cases = {label: run_case(nodes, label, Path(tmp)) for label in labels}
    summary = write_results(out, "opensearch", TARGETS, markdown, cases=cases, ratios=ratios(cases))
    log(f"wrote {out} and {summary}")


if __name__ == "__main__":
    main()
