"""Move benchmark: downtime and phase-1 throughput of a two-phase push, against baselines.

This one runs the Elasticsearch stand-in (images/elasticsearch), kept for it because it starts
and stops in milliseconds: its downtime is what the move itself costs, with no application's
start in it. The real store, OpenSearch, is bench/opensearch_bench.py; PostgreSQL, whose pages
are written in place, is bench/postgres_bench.py.

For each volume size, in one run on the local cluster: the stand-in runs on
node1 with its volume filled to the size, a client indexes documents as fast as they are
acknowledged, and `pulumi up` moves it to node2 and back. Measured:

- downtime: the client's last acknowledged write on the old node to its first on the new
  one, the mean of the two moves (and the provider's own `downtime_seconds`, stop to
  running, for comparison);
- phase-1 throughput: bytes of phase-1 round 1 of the first move over its seconds (from
  `last_move.rounds`), against a raw `tar | tar` copy (socat between two helper
  containers) of the same volume between the same two nodes, before and after the moves;
- the naive baseline at 1 GB: stop, copy everything with the same `tar | tar`, start.

Targets are ratios of numbers from this one run (the machine is shared and noisy):
downtime(4 GB)/downtime(100 MB) <= 1.5, downtime(1 GB)/naive(1 GB) <= 0.1,
phase-1 throughput/raw >= 0.7.

    .venv/bin/python bench/move_bench.py --out bench/results/move.json [--sizes 100M,1G]

writes the JSON and a markdown summary beside it (move.md). BENCH_SIZES sets the default
sizes. Needs the cluster and images (`make bench` brings them up).
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import docker.errors

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the cluster harness lives with the integration tests

from bench.report import client_timeline, parse_sizes, ratio_table, write_results  # noqa: E402
from flocker_provider.execution.transfer import parse_stream_total  # noqa: E402
from tests.integration.harness import (  # noqa: E402
    STORE,
    ClusterNode,
    Pulumi,
    Writer,
    by_name,
    eventually,
    gaps_around,
    http_json,
    load_nodes,
    make,
    stop_returned_at,
)

MiB = 1 << 20
SIZES = {"100M": 100 * MiB, "1G": 1024 * MiB, "4G": 4096 * MiB}
NAIVE_SIZE = "1G"
FILE_SIZE = 4 * MiB  # the volume is filled with files of this size, like a store's segments
IMAGE = "flocker/base:local"
STORE_IMAGE = "flocker/elasticsearch:local"
BENCH_LABEL = "io.flocker-pulumi.bench"
COPY_PORT = 8740
STORE_PORT = 9200
NAIVE_PORT = 19200
TARGETS = {
    "downtime_4G_over_100M": ("<=", 1.5),
    "downtime_over_naive": ("<=", 0.1),  # at the size the naive baseline ran at
    "phase1_over_raw": (">=", 0.7),
}


def log(message: str) -> None:
    print(f"move-bench: {message}", file=sys.stderr, flush=True)


def fill(node: ClusterNode, volume: str, size: int) -> None:
    """Fill ``volume`` with ``size`` bytes: one random file, copied (random data is CPU-bound to make)."""
    count = size // FILE_SIZE
    script = (
        f"mkdir -p /data/filler && head -c {FILE_SIZE} /dev/urandom > /data/filler/f0 && "
        f"i=1; while [ $i -lt {count} ]; do cp /data/filler/f0 /data/filler/f$i; i=$((i+1)); done; sync"
    )
    node.client().containers.run(IMAGE, ["sh", "-c", script], volumes={volume: {"bind": "/data", "mode": "rw"}}, remove=True)


def tar_copy(source: ClusterNode, destination: ClusterNode, volume: str, target: str) -> tuple[int, float]:
    """Raw `tar | tar` of ``volume`` into a new volume ``target``: bytes streamed and seconds.

    Measured as the provider's stream round is: bytes are tar's count, and the clock runs
    from starting the receiver to its confirmation that everything is extracted (the
    sender waits for it: a sender container's exit alone can drop unsent socket data).
    """
    src, dst = source.client(), destination.client()
    dst.volumes.create(target, labels={BENCH_LABEL: "true"})
    started = time.monotonic()
    receiver = dst.containers.run(
        IMAGE,
        ["socat", "-d", "-d", "-t", "600", f"TCP-LISTEN:{COPY_PORT}", "SYSTEM:tar -x -p --numeric-owner -C /data -f - && echo copied"],
        detach=True,
        labels={BENCH_LABEL: "true"},
        volumes={target: {"bind": "/data", "mode": "rw"}},
        ports={f"{COPY_PORT}/tcp": None},
    )

    def listening() -> int | None:
        receiver.reload()
        bindings = (receiver.attrs["NetworkSettings"]["Ports"] or {}).get(f"{COPY_PORT}/tcp") or []
        return int(bindings[0]["HostPort"]) if bindings and b"listening on" in receiver.logs() else None

    port = eventually(listening, timeout=30, interval=0.05, what="tar receiver listening")
    send = f"tar -C /data --numeric-owner --totals -cf - . | socat -t 600 - TCP:{destination.address}:{port}"
    sender = src.containers.run(
        IMAGE, ["sh", "-c", send], detach=True, labels={BENCH_LABEL: "true"}, volumes={volume: {"bind": "/data", "mode": "ro"}}
    )
    try:
        code = sender.wait(timeout=3600)["StatusCode"]
        seconds = time.monotonic() - started
        output = sender.logs().decode(errors="replace")
        if code != 0 or "copied" not in output:
            raise RuntimeError(f"tar copy failed ({code}): {output[-500:]} / {receiver.logs(tail=5).decode(errors='replace')}")
        return parse_stream_total(output), seconds
    finally:
        for container in (sender, receiver):
            with contextlib.suppress(docker.errors.APIError):
                container.remove(force=True)


def serving(node: ClusterNode) -> bool:
    return bool(http_json("GET", f"http://{node.address}:{STORE_PORT}/"))


def writer_started(*endpoints: str, index: str = "acks") -> Writer:
    writer = Writer(list(endpoints), index)
    writer.start()
    eventually(lambda: len(writer.acknowledged) > 20, what="writes on the source")
    return writer


def writer_finished(writer: Writer, moved: float) -> None:
    """Stop ``writer`` once writes go on after the move ended at ``moved``."""
    eventually(lambda: writer.served_since(moved), timeout=300, interval=0.2, what="writes resumed")
    time.sleep(1)  # steady writes after the move too, for the record
    writer.stop.set()
    writer.join()


def naive_move(source: ClusterNode, destination: ClusterNode, size: int) -> dict[str, Any]:
    """Stop, copy everything, start: the baseline a two-phase push must beat.

    On a store of its own, outside the provider, with its own port: the routers hold the
    managed store's port on every node, and a managed container restarted by hand would
    get a new ephemeral port its routes do not know.
    """
    scratch = f"bench-naive-{uuid.uuid4().hex[:8]}"
    copy = f"{scratch}-copy"
    try:
        source.client().volumes.create(scratch, labels={BENCH_LABEL: "true"})
        fill(source, scratch, size)
        original = start_bench_store(source, scratch)
        eventually(lambda: http_json("GET", f"http://{source.address}:{NAIVE_PORT}/"), what="naive store up")
        writer = writer_started(f"{source.address}:{NAIVE_PORT}", f"{destination.address}:{NAIVE_PORT}")
        original.stop(timeout=10)
        _, copy_seconds = tar_copy(source, destination, scratch, copy)
        start_bench_store(destination, copy)
        writer_finished(writer, time.monotonic())
        downtime = round(writer.outage(), 3)
    finally:
        for node in (source, destination):
            remove_bench_objects(node)
    return {"downtime_seconds": downtime, "copy_seconds": round(copy_seconds, 3), "writes_acknowledged": len(writer.acknowledged)}


def start_bench_store(node: ClusterNode, volume: str) -> Any:
    return node.client().containers.run(
        STORE_IMAGE,
        detach=True,
        labels={BENCH_LABEL: "true"},
        volumes={volume: {"bind": "/var/lib/elasticsearch", "mode": "rw"}},
        ports={f"{STORE_PORT}/tcp": NAIVE_PORT},
    )


def remove_bench_objects(node: ClusterNode) -> None:
    client = node.client()
    for container in client.containers.list(all=True, filters={"label": BENCH_LABEL}):
        container.remove(force=True)
    for volume in client.volumes.list(filters={"label": BENCH_LABEL}):
        volume.remove(force=True)


def raw_copy(source: ClusterNode, destination: ClusterNode, volume: str) -> dict[str, Any]:
    """The raw copy, under the same steady writes as the moves' phase 1.

    Each write is fsynced, and those fsyncs compete with the copy for the disk and the cores.
    """
    target = f"bench-raw-{uuid.uuid4().hex[:8]}"
    writer = writer_started(f"{source.address}:{STORE_PORT}")
    try:
        copied, seconds = tar_copy(source, destination, volume, target)
    finally:
        writer.stop.set()
        writer.join()
        remove_bench_objects(destination)
    return {"bytes": copied, "seconds": round(seconds, 3), "bytes_per_second": round(copied / seconds)}


def measured_move(store: Pulumi, source: ClusterNode, destination: ClusterNode) -> dict[str, Any]:
    """`pulumi up` after changing the store's node, with the client writing throughout.

    The client's downtime is its pause between acknowledged writes around the moment the
    application had stopped (the issue's "last successful request on the source to first
    on the destination"); its longest pause elsewhere in the move (writes are fsynced, and
    phase 1's copy competes for the disk) is kept beside it, and the client's timeline around
    the switch-over for bench/plots.py.
    """
    # Through the source's address, as clients would: it keeps serving after the move.
    writer = writer_started(f"{source.address}:{STORE_PORT}")
    store.config({"node": destination.name})
    started = time.monotonic()
    store.up()
    up_seconds = time.monotonic() - started
    writer_finished(writer, time.monotonic())
    last_move = store.outputs()["last_move"]
    downtime, other = gaps_around(writer.served, stop_returned_at(last_move))
    return {
        "from": source.name,
        "to": destination.name,
        "client_downtime_seconds": downtime,
        "client_longest_other_pause_seconds": other,
        "provider_downtime_seconds": last_move["downtime_seconds"],
        "pulumi_up_seconds": round(up_seconds, 3),
        "writes_acknowledged": len(writer.acknowledged),
        "last_move": last_move,
        "client_timeline": client_timeline(writer.served, last_move),
    }


def run_case(nodes: list[ClusterNode], label: str, workdir: Path, naive: bool) -> dict[str, Any]:
    size = SIZES[label]
    source, destination = by_name(nodes, "node1"), by_name(nodes, "node2")
    stack = "b" + uuid.uuid4().hex[:8]
    volume = f"flocker-{stack}-store"
    store = make(workdir / label, stack, STORE, source.name)
    case: dict[str, Any] = {"size": label, "bytes": size}
    try:
        store.up()
        eventually(lambda: serving(source), what="store up")
        log(f"{label}: filling the volume")
        fill(source, volume, size)
        # The raw copy runs before and after the moves and the two are averaged: the
        # machine is shared, and its load drifts over the minutes a case takes.
        log(f"{label}: raw tar | tar copy {source.name} -> {destination.name}")
        raw = [raw_copy(source, destination, volume)]
        if naive:
            log(f"{label}: naive stop, copy, start")
            case["naive"] = naive_move(source, destination, size)

        log(f"{label}: pulumi up moves the store {source.name} -> {destination.name} and back")
        there = measured_move(store, source, destination)
        # The move back sends only the delta in phase 1, but its phase 2 is the same work:
        # a second downtime sample at this size.
        back = measured_move(store, destination, source)
        raw.append(raw_copy(source, destination, volume))

        first = there["last_move"]["rounds"][0]
        raw_rate = sum(r["bytes"] for r in raw) / sum(r["seconds"] for r in raw)
        case |= {
            "raw_copies": raw,
            "raw_bytes_per_second": round(raw_rate),
            "phase1_round1": first,
            "phase1_bytes_per_second": round(first["bytes_sent"] / first["seconds"]),
            "phase1_over_raw": round(first["bytes_sent"] / first["seconds"] / raw_rate, 3),
            "downtime_seconds": round((there["client_downtime_seconds"] + back["client_downtime_seconds"]) / 2, 3),
            "moves": [there, back],
        }
        log(f"{label}: {json.dumps({k: v for k, v in case.items() if k not in ('moves', 'raw_copies', 'naive')})}")
        return case
    finally:
        store.destroy()
        for node in nodes:
            remove_bench_objects(node)


def ratios(cases: dict[str, dict[str, Any]]) -> dict[str, float]:
    found: dict[str, float] = {}
    downtime = {label: c["downtime_seconds"] for label, c in cases.items()}
    if "4G" in downtime and "100M" in downtime:
        found["downtime_4G_over_100M"] = round(downtime["4G"] / downtime["100M"], 3)
    for label, case in cases.items():
        if "naive" in case:
            found["downtime_over_naive"] = round(downtime[label] / case["naive"]["downtime_seconds"], 3)
    # The weakest size decides: a small volume pays the helpers' start-up over fewer bytes.
    found["phase1_over_raw"] = min(c["phase1_over_raw"] for c in cases.values())
    return found


def markdown(result: dict[str, Any]) -> str:
    mb = 1e6
    lines = [
        "## Move (two-phase push), the Elasticsearch stand-in",
        "",
        f"The Elasticsearch stand-in with a client writing as fast as acknowledged, its volume filled to the size, moved"
        f" node1 -> node2 and back by `pulumi up`; {result['cpus']} cores shared with other work, measured {result['measured_at']}."
        " Downtime: the client's last acknowledged write on the old node to its first on the new one, around the moment the"
        " store had stopped (provider: stop to running); its longest pause at any other time of the move beside it."
        " Raw: `tar | tar` over socat between the same nodes, before and after the moves, with the same writes going on.",
        "",
        "| volume | raw tar\\|tar | phase-1 round 1 | phase 1 / raw | downtime there / back (client) | (provider) |"
        " longest other client pause | `pulumi up` there |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case in result["cases"].values():
        there, back = case["moves"]
        lines.append(
            f"| {case['size']} | {case['raw_bytes_per_second'] / mb:.0f} MB/s | {case['phase1_bytes_per_second'] / mb:.0f} MB/s"
            f" | {case['phase1_over_raw']:.2f} | {there['client_downtime_seconds']:.2f} s / {back['client_downtime_seconds']:.2f} s"
            f" | {there['provider_downtime_seconds']:.2f} s / {back['provider_downtime_seconds']:.2f} s"
            f" | {max(m['client_longest_other_pause_seconds'] for m in (there, back)):.2f} s"
            f" | {there['pulumi_up_seconds']:.1f} s |"
        )
    for case in result["cases"].values():
        if "naive" in case:
            naive = case["naive"]
            downtime, copy = naive["downtime_seconds"], naive["copy_seconds"]
            lines += ["", f"Naive stop, copy, start at {case['size']}: downtime {downtime:.2f} s (copy {copy:.2f} s)."]
    lines += ratio_table("ratio (downtime: mean of there and back)", result["ratios"], TARGETS)
    return "\n".join(lines) + "\n"


def main() -> None:
    out, labels = parse_sizes(__doc__.splitlines()[0], SIZES, "BENCH_SIZES")
    nodes = load_nodes()
    if nodes is None:
        sys.exit("move-bench: FLOCKER_NODES_FILE names no node file (make bench starts the cluster)")
    for node in nodes:
        remove_bench_objects(node)  # left by an interrupted run

    # The naive baseline runs at 1 GB, or at the largest size of a quick run.
    naive_at = NAIVE_SIZE if NAIVE_SIZE in labels else max(labels, key=SIZES.__getitem__)
    with tempfile.TemporaryDirectory(prefix="move-bench-") as tmp:
        cases = {label: run_case(nodes, label, Path(tmp), naive=label == naive_at) for label in labels}
    summary = write_results(out, "move", TARGETS, markdown, cases=cases, naive_size=naive_at, ratios=ratios(cases))
    log(f"wrote {out} and {summary}")


if __name__ == "__main__":
    main()
