"""Faults of the cluster's own network during a move, on the real cluster."""

from __future__ import annotations

import contextlib
import random
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import (
    STORE,
    ClusterNode,
    Pulumi,
    Sampler,
    Writer,
    by_name,
    eventually,
    http_json,
    in_namespace,
    lost_writes,
    make,
    slowed,
    transfer_helpers,
    volume_prefix_checksums,
)

pytestmark = pytest.mark.cluster

STALL_SECONDS = 5
# The store, with a short stall timeout for its volume.
MOUNT = '"mountpoint": "/var/lib/elasticsearch"'
STALLING_STORE = STORE.replace(f"volume={{{MOUNT}}}", f'volume={{{MOUNT}, "stall_timeout": {STALL_SECONDS}}}')
BLOB_MIB = 512


@contextlib.contextmanager
def link_cut(node: ClusterNode, peer: ClusterNode, tag: str) -> Iterator[None]:
    """Every packet between ``node`` and ``peer`` dropped in ``node``'s namespace, its own and
    its containers' (raw table: before conntrack, whatever Docker's chains do), until the end
    of the block; the rules carry ``tag``, so that only they are removed."""
    rules = [("PREROUTING", "-s"), ("PREROUTING", "-d"), ("OUTPUT", "-d")]
    try:
        for chain, direction in rules:
            in_namespace(
                node, "iptables", "-t", "raw", "-I", chain, direction, peer.address, "-m", "comment", "--comment", tag, "-j", "DROP"
            )
        yield
    finally:
        for rule in in_namespace(node, "iptables", "-t", "raw", "-S").splitlines():
            if f"--comment {tag}" in rule:
                in_namespace(node, "iptables", "-t", "raw", "-D", *rule.split()[1:])


@pytest.mark.parametrize("cut", ["before the stream connects", "mid-stream", "in a delta round"])
def test_a_link_cut_during_phase_1_fails_the_step_within_the_stall_timeout_and_the_next_up_moves(
    nodes: list[ClusterNode], workdir: Path, stack_name: str, cleanup: list[Pulumi], cut: str
) -> None:
    """The link between source and destination cut during the copy: before the first stream
    connects, in the middle of it, or within a second of the start of a move back to a
    retired copy (delta rounds only: phase 1's takes a fraction of a second here, so the cut
    lands in it or in phase 2, the store stopped, over connections made before the cut). The
    copy's step fails within the stall timeout plus a little, naming both nodes and what to
    do, the store serving on the source again with every acknowledged write; once the link
    is back, `pulumi up` moves it with them."""
    node1, node2 = by_name(nodes, "node1"), by_name(nodes, "node2")
    store = make(workdir, stack_name, STALLING_STORE, "node1")
    cleanup.append(store)
    store.up()
    eventually(lambda: http_json("GET", f"http://{node1.address}:9200/"), what="store up")
    container = f"flocker-{stack_name}-store"
    blob = f"dd if=/dev/zero of=/var/lib/elasticsearch/blob bs=1M count={BLOB_MIB} status=none"
    assert node1.client().containers.get(container).exec_run(["sh", "-c", blob]).exit_code == 0
    source, destination = node1, node2
    if cut == "in a delta round":
        store.config({"node": "node2"})
        store.up()
        source, destination = node2, node1
    writer = Writer([f"{source.address}:9200", f"{destination.address}:9200"])
    sampler = Sampler(nodes, container)
    writer.start()
    sampler.start()
    eventually(lambda: len(writer.acknowledged) > 50, what="writes before the move")
    store.config({"node": destination.name})
    tag = f"flocker-test-cut-{stack_name}"
    step = "move store: phase 1: copy"
    with slowed(source) if cut == "mid-stream" else contextlib.nullcontext(), contextlib.ExitStack() as link:
        if cut == "before the stream connects":
            link.enter_context(link_cut(source, destination, tag))
        running = store.popen("up", "--yes", "--skip-preview")
        assert running.stdout is not None
        seen, cut_at = [], None
        for line in running.stdout:
            seen.append(line)
            if cut_at is not None:
                continue
            if cut == "before the stream connects" and step in line:
                cut_at = time.monotonic()  # the step begins: from here on it cannot get through
            elif (cut == "mid-stream" and "phase 1 round 1 (stream): " in line and "%)" in line) or (
                cut == "in a delta round" and step in line
            ):
                time.sleep(random.uniform(0, 1) if cut == "in a delta round" else 0)
                link.enter_context(link_cut(source, destination, tag))
                cut_at = time.monotonic()
        running.wait()
        failed_at = time.monotonic()
    output = "".join(seen)
    assert cut_at is not None, f"the copy was done before it could be cut: {output}"
    assert running.returncode != 0, output
    # Detected by the stall timeout, not by TCP's own timeouts (143 s) or move_timeout (an hour).
    assert failed_at - cut_at < STALL_SECONDS + 30, f"{failed_at - cut_at:.1f}s: {output}"
    copy_step = r"step '(phase 1: copy|phase 2: copy what changed in|verify) " if cut == "in a delta round" else "step 'phase 1: copy"
    assert re.search(copy_step, output) and f"made no progress for {STALL_SECONDS}s" in output, output
    assert f"from {source.name} to {destination.name}" in output and f"What to do: check that {source.name}" in output, output
    assert "nothing was lost" in output and "Traceback" not in output, output
    # What the failure left: the store serving on the source with every acknowledged write,
    # no helper on either node; no partial copy on the destination, or its retired copy, kept.
    assert source.client().containers.get(container).status == "running"
    eventually(lambda: writer.served_since(failed_at), what="writes acknowledged after the failure")
    writer.stop.set()
    writer.join()
    assert not lost_writes(source, writer)
    assert transfer_helpers(nodes) == []
    kept = [v.name for v in destination.client().volumes.list()]
    assert (container in kept) == (cut == "in a delta round"), kept

    # Writing again, the same ids: each writer's acknowledgements are checked on their own.
    again = Writer(writer.endpoints)
    again.start()
    store.up()
    again.stop.set()
    again.join()
    sampler.stop.set()
    sampler.join()
    assert store.outputs()["node"] == destination.name
    for client in (writer, again):
        missing = lost_writes(destination, client)
        assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"
    before, after = volume_prefix_checksums(destination, container, like=source)
    assert "./blob" in before and before == after
    assert sampler.most == 1, "the store ran on two nodes at once"
