"""Faults of the cluster's own network during a move, on the real cluster."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flocker_provider import labels as L

from .harness import (
    STORE,
    ClusterNode,
    Pulumi,
    Writer,
    by_name,
    eventually,
    http_json,
    lost_writes,
    make,
    process_ended,
    volume_prefix_checksums,
)

pytestmark = pytest.mark.cluster

STALL_SECONDS = 5
# The store, with a short stall timeout for its volume.
MOUNT = '"mountpoint": "/var/lib/elasticsearch"'
STALLING_STORE = STORE.replace(f"volume={{{MOUNT}}}", f'volume={{{MOUNT}, "stall_timeout": {STALL_SECONDS}}}')
BLOB_MIB = 512


def in_namespace(node: ClusterNode, *command: str) -> str:
    return subprocess.run(["ip", "netns", "exec", node.netns, *command], check=True, capture_output=True, text=True).stdout


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


@contextlib.contextmanager
def slowed(node: ClusterNode) -> Iterator[None]:
    """``node``'s traffic out at 200 Mbit/s, so that a copy from it takes seconds to cut into."""
    in_namespace(node, "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "200mbit", "burst", "64kb", "latency", "100ms")
    try:
        yield
    finally:
        in_namespace(node, "tc", "qdisc", "del", "dev", "eth0", "root")


class Sampler(threading.Thread):
    """How many nodes run ``container``'s process at once, sampled every half second: never more
    than one. By its process, not by Docker's status: a stopped container whose processes are
    gone is "running" until Docker has also taken its network down, while the move starts the
    destination's (every node's processes are this machine's)."""

    def __init__(self, nodes: list[ClusterNode], container: str) -> None:
        super().__init__(daemon=True)
        self.nodes, self.container = nodes, container
        self.most = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.5):
            running = 0
            for node in self.nodes:
                with contextlib.suppress(Exception):  # an engine busy for a moment: the next sample counts
                    found = node.client().containers.list(filters={"name": self.container, "status": "running"})
                    pids = [c.attrs["State"]["Pid"] for c in found if c.name == self.container]
                    running += any(pid and not process_ended(pid) for pid in pids)
            self.most = max(self.most, running)


def transfer_helpers(nodes: list[ClusterNode]) -> list[str]:
    return [c.name for n in nodes for c in n.client().containers.list(all=True, filters={"label": f"{L.KIND}={L.KIND_TRANSFER}"})]


@pytest.mark.parametrize("cut", ["before the stream connects", "mid-stream"])
def test_a_link_cut_during_phase_1_fails_the_step_within_the_stall_timeout_and_the_next_up_moves(
    nodes: list[ClusterNode], workdir: Path, stack_name: str, cleanup: list[Pulumi], cut: str
) -> None:
    """The link between source and destination cut (before the first stream connects, or in
    the middle of it): the copy's step fails within the stall timeout plus a little, naming
    both nodes and what to do, the store serving on the source all along with every
    acknowledged write; once the link is back, `pulumi up` moves it with them."""
    source, destination = by_name(nodes, "node1"), by_name(nodes, "node2")
    store = make(workdir, stack_name, STALLING_STORE, "node1")
    cleanup.append(store)
    store.up()
    eventually(lambda: http_json("GET", f"http://{source.address}:9200/"), what="store up")
    container = f"flocker-{stack_name}-store"
    blob = f"dd if=/dev/zero of=/var/lib/elasticsearch/blob bs=1M count={BLOB_MIB} status=none"
    assert source.client().containers.get(container).exec_run(["sh", "-c", blob]).exit_code == 0
    writer = Writer([f"{source.address}:9200", f"{destination.address}:9200"])
    sampler = Sampler(nodes, container)
    writer.start()
    sampler.start()
    eventually(lambda: len(writer.acknowledged) > 50, what="writes before the move")
    store.config({"node": "node2"})
    tag = f"flocker-test-cut-{stack_name}"
    with slowed(source), contextlib.ExitStack() as link:
        if cut == "before the stream connects":
            link.enter_context(link_cut(source, destination, tag))
        running = store.popen("up", "--yes", "--skip-preview")
        assert running.stdout is not None
        seen, cut_at = [], None
        for line in running.stdout:
            seen.append(line)
            if cut == "before the stream connects" and cut_at is None and "move store: phase 1: copy" in line:
                cut_at = time.monotonic()  # the step begins: from here on it cannot get through
            if cut == "mid-stream" and cut_at is None and "phase 1 round 1 (stream): " in line and "%)" in line:
                link.enter_context(link_cut(source, destination, tag))
                cut_at = time.monotonic()
        running.wait()
        failed_at = time.monotonic()
    output = "".join(seen)
    assert cut_at is not None, f"the copy was done before it could be cut: {output}"
    assert running.returncode != 0, output
    # Detected by the stall timeout, not by TCP's own timeouts (143 s) or move_timeout (an hour).
    assert failed_at - cut_at < STALL_SECONDS + 30, f"{failed_at - cut_at:.1f}s: {output}"
    assert "step 'phase 1: copy" in output and f"made no progress for {STALL_SECONDS}s" in output, output
    assert "from node1 to node2" in output and "What to do: check that node1" in output, output
    assert "nothing was lost" in output and "Traceback" not in output, output
    # What the failure left: the store serving on node1 with every acknowledged write, no
    # helper on either node, no partial copy on node2.
    assert source.client().containers.get(container).status == "running"
    eventually(lambda: writer.served_since(failed_at), what="writes acknowledged after the failure")
    writer.stop.set()
    writer.join()
    assert not lost_writes(source, writer)
    assert transfer_helpers(nodes) == []
    assert container not in [v.name for v in destination.client().volumes.list()]

    # Writing again (the same ids, so that all of them fit in one search's 10,000 hits).
    again = Writer(writer.endpoints)
    again.start()
    store.up()
    again.stop.set()
    again.join()
    sampler.stop.set()
    sampler.join()
    assert store.outputs()["node"] == "node2"
    for client in (writer, again):
        missing = lost_writes(destination, client)
        assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"
    before, after = volume_prefix_checksums(destination, container, like=source)
    assert "./blob" in before and before == after
    assert sampler.most == 1, "the store ran on two nodes at once"
