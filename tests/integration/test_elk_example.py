"""The ELK example on its real images (OpenSearch, rsyslog, the log page), on the real cluster,
through the real Pulumi CLI (issues: foundation, 4, 11).

One stack for the module, made as `make up` makes it: OpenSearch takes 10-40 s to start,
and the move's test needs what the first test checks anyway (a stack that deployed and ships
lines). Every line a test sends is recorded, so each test can check that the store holds
exactly the lines sent so far, whichever tests ran before it.
"""

from __future__ import annotations

import re
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from .harness import (
    REPO,
    BulkWriter,
    ClusterNode,
    Pulumi,
    by_name,
    es_count,
    eventually,
    http_json,
    http_text,
    missing_documents,
    ours,
    router_rules,
    send_lines,
)
from .test_routing import ClientLoop, router_stats, routes

pytestmark = pytest.mark.cluster

# Deadlines for a busy 2-core machine: lines reach the store within a second or two when it
# is up; after a move the shipper's retries (every 1-3 s) and a refresh come on top.
INDEXED_WITHIN = 120


@dataclass
class Elk:
    pulumi: Pulumi
    stack: str
    made: subprocess.CompletedProcess[str]
    sent: list[str] = field(default_factory=list)  # every line sent to the shipper, in order

    def send(self, address: str, lines: list[str]) -> None:
        send_lines(address, lines)
        self.sent.extend(lines)


class LineSender(threading.Thread):
    """Sends one numbered line per new connection to the shipper, every 0.2 s, until stopped,
    adding each line sent to ``sent``."""

    def __init__(self, address: str, prefix: str, sent: list[str]) -> None:
        super().__init__(daemon=True)
        self.address, self.prefix, self.sent = address, prefix, sent
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            line = f"{self.prefix} {n}"
            try:
                send_lines(self.address, [line])
                self.sent.append(line)
            except OSError as exc:  # the test fails on it: the shipper never moves, it must always accept
                self.errors.append(f"{line}: {exc!r}")
            n += 1
            time.sleep(0.2)


@pytest.fixture(scope="module")
def elk(nodes: list[ClusterNode], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Elk]:
    # The repository's own project, as `make up` and a user's `pulumi up` run it; only the
    # state (a file backend of its own) and the stack are the tests'.
    stack = "t" + uuid.uuid4().hex[:8]
    pulumi = Pulumi(tmp_path_factory.mktemp("elk"), stack, project_dir=REPO)
    made = subprocess.run(["bash", "scripts/elk-up.sh", stack], cwd=REPO, env=pulumi.env, capture_output=True, text=True, timeout=900)
    try:
        yield Elk(pulumi, stack, made)
    finally:
        pulumi.destroy()
        (REPO / f"Pulumi.{stack}.yaml").unlink(missing_ok=True)
    assert all(not items for items in ours(nodes, stack).values()), ours(nodes, stack)
    assert all(not rules for rules in router_rules(nodes, stack).values()), router_rules(nodes, stack)


def stored_messages(address: str) -> list[str]:
    hits = http_json("GET", f"http://{address}:9200/logstash/_search?size=10000", timeout=30)["hits"]["hits"]
    return [hit["_source"]["message"] for hit in hits]


def holds_exactly(address: str, lines: list[str]) -> bool:
    """The store at ``address`` has each line once, and nothing else (so no line was indexed twice)."""
    return es_count(address) == len(lines) and sorted(stored_messages(address)) == sorted(lines)


def page_listing(address: str, lines: list[str]) -> str | None:
    """The log page, once it lists every one of ``lines``."""
    text = http_text(f"http://{address}:80/", timeout=30)
    return text if all(line in text for line in lines) else None


def test_make_up_runs_the_real_images_and_ships_lines_into_the_store(elk: Elk, nodes: list[ClusterNode]) -> None:
    made = elk.made
    assert made.returncode == 0, made.stdout + made.stderr
    es, ls, kb = (by_name(nodes, n).address for n in ("node1", "node2", "node3"))
    # `make up` says where each service answers.
    for service, address, port in (("elasticsearch", es, 9200), ("logstash", ls, 5000), ("kibana", kb, 80)):
        node = next(n.name for n in nodes if n.address == address)
        assert re.search(rf"^  {service} +on {node} +at {address}:{port}$", made.stdout, re.MULTILINE), made.stdout
    outputs = elk.pulumi.outputs()
    assert (outputs["elasticsearch_node"], outputs["logstash_node"], outputs["kibana_node"]) == ("node1", "node2", "node3")
    assert outputs["elasticsearch_addresses"] == [f"{es}:9200"]
    placed = ours(nodes, elk.stack)
    assert f"volume:flocker-{elk.stack}-elasticsearch" in placed["node1"]
    for service, node, image in (
        ("elasticsearch", "node1", "flocker/opensearch:local"),
        ("logstash", "node2", "flocker/rsyslog:local"),
        ("kibana", "node3", "flocker/logpage:local"),
    ):
        container = by_name(nodes, node).client().containers.get(f"flocker-{elk.stack}-{service}")
        assert (container.status, container.attrs["Config"]["Image"]) == ("running", image), service

    # The store is OpenSearch, up (the deployment waited for its health check) and green.
    version = http_json("GET", f"http://{es}:9200/")["version"]
    assert (version["distribution"], version["number"]) == ("opensearch", "2.19.6"), version
    eventually(lambda: socket.create_connection((ls, 5000), timeout=2).close() or True, what="the shipper listening")

    # Lines sent to rsyslog on node2 arrive in OpenSearch on node1 through the `es` link, and
    # the page on node3 lists them.
    elk.send(ls, [f"{elk.stack} line {i}" for i in range(5)])
    eventually(lambda: holds_exactly(es, elk.sent), timeout=INDEXED_WITHIN, what="5 lines stored")
    page = eventually(lambda: page_listing(kb, elk.sent), what="the page listing the lines")
    assert '<span class="count">5</span>' in page, page
    # Replicas 0 (one node): the index is green, not yellow.
    assert http_json("GET", f"http://{es}:9200/logstash/_settings")["logstash"]["settings"]["index"]["number_of_replicas"] == "0"
    assert http_json("GET", f"http://{es}:9200/_cluster/health")["status"] == "green"

    # Nothing changed, so a second preview must say so.
    preview = elk.pulumi.run("preview", "--expect-no-changes", check=False)
    assert preview.returncode == 0, preview.stdout + preview.stderr

    # A container removed by hand: refresh notices, up recreates it, and it ships again.
    node2 = by_name(nodes, "node2").client()
    node2.containers.get(f"flocker-{elk.stack}-logstash").remove(force=True)
    refresh = elk.pulumi.run("refresh", "--yes", "--skip-preview")
    assert "deleted" in refresh.stdout, refresh.stdout
    elk.pulumi.up()
    assert node2.containers.get(f"flocker-{elk.stack}-logstash").status == "running"
    eventually(lambda: socket.create_connection((ls, 5000), timeout=2).close() or True, what="the new shipper listening")
    elk.send(ls, [f"{elk.stack} after the recreation"])
    eventually(lambda: holds_exactly(es, elk.sent), timeout=INDEXED_WITHIN, what="the line sent to the recreated shipper stored")


def test_the_store_moves_with_its_documents_and_no_line_or_connection_is_lost(elk: Elk, nodes: list[ClusterNode]) -> None:
    """The article's move, as code: one line of stack config. Lines keep coming to the shipper
    and a client keeps asking the store (on a node that hosts neither copy) all along."""
    if len(nodes) < 4:
        pytest.skip(f"the move needs a 4th node, the cluster has {len(nodes)}")
    assert elk.made.returncode == 0, elk.made.stdout + elk.made.stderr
    node1, node2, node3, node4 = (by_name(nodes, n) for n in ("node1", "node2", "node3", "node4"))
    # Every node routes the three external ports.
    for node in nodes:
        assert sorted(routes(node, elk.stack)) == [80, 5000, 9200], node.name
    shipper = node2.client().containers.get(f"flocker-{elk.stack}-logstash")
    shipper_before = (shipper.id, shipper.attrs["State"]["StartedAt"])
    assert shipper.attrs["Config"]["Env"].count(f"ES_PORT_9200_TCP=tcp://{node2.address}:9200") == 1

    elk.send(node2.address, [f"{elk.stack} before the move {i}" for i in range(10)])
    eventually(lambda: holds_exactly(node3.address, elk.sent), timeout=INDEXED_WITHIN, what="lines sent before the move stored")
    # The kernel forwards the store's port on nodes that do not host it (the router proved the
    # target first); the hosting node's own router proxies it.
    eventually(lambda: 9200 in router_stats(node3, elk.stack)["kernel_ports"], what="kernel forwarding on node3")
    assert 9200 not in router_stats(node1, elk.stack)["kernel_ports"]

    # The store is held for as long as OpenSearch takes to start on node4: a request waits
    # longer than the example's hold (120 s) before it counts as failed.
    client, sender = ClientLoop(node3.address, timeout=150), LineSender(node2.address, f"{elk.stack} during the move", elk.sent)
    # And a client indexing in bulk straight into the store, through node3 too.
    bulk = BulkWriter(f"{node3.address}:9200")
    sent_before = len(elk.sent)
    for thread in (client, sender, bulk):
        thread.start()
    eventually(lambda: client.ok > 5 and len(elk.sent) > sent_before + 2 and len(bulk.acknowledged) > 200, what="clients running")
    started = time.monotonic()
    elk.pulumi.config({"elasticsearchNode": "node4"})
    moved = elk.pulumi.up()
    took = time.monotonic() - started
    assert "moves from node1 to node4" in moved.stdout, moved.stdout
    # Both go on after the move, then stop.
    ok_at_move, indexed_at_move = client.ok, len(bulk.acknowledged)
    eventually(lambda: client.ok > ok_at_move + 5 and len(bulk.acknowledged) > indexed_at_move + 200, what="clients running after the move")
    for thread in (client, sender, bulk):
        thread.stop.set()
    sender.join(30)
    client.join(160)
    bulk.join(160)
    stats = router_stats(node3, elk.stack)
    print(f"move: {took:.1f}s; client loop: {client.ok} requests, slowest {client.slowest:.2f}s; router on node3: {stats}")
    assert sender.errors == [], sender.errors
    assert client.failures == {}, f"failed requests during the move: {client.failures} ({client.ok} succeeded)"
    assert stats["held_timed_out"] == 0, stats

    elk.send(node2.address, [f"{elk.stack} after the move {i}" for i in range(5)])
    during = sum(1 for line in elk.sent if " during the move " in line)
    assert during > 10, during
    # Every line, before, during and after the move, once: at the new node and at the old address.
    eventually(lambda: holds_exactly(node4.address, elk.sent), timeout=INDEXED_WITHIN, what=f"{len(elk.sent)} lines on node4")
    assert holds_exactly(node1.address, elk.sent)
    assert elk.pulumi.outputs()["elasticsearch_addresses"] == [f"{node4.address}:9200"]
    assert http_json("GET", f"http://{node4.address}:9200/_cluster/health")["status"] == "green"
    # Every document the bulk client was told was created, before, during and after the move.
    print(f"bulk client: {len(bulk.acknowledged)} documents acknowledged, {bulk.failed_requests} requests failed")
    assert missing_documents(node4.address, "acks", bulk.acknowledged) == []
    assert http_json("GET", f"http://{node4.address}:9200/_cluster/health/acks")["status"] == "green"
    assert page_listing(node3.address, elk.sent), "lines the page does not list"

    # The data kept its owner (OpenSearch's user) on the way: the server would not start otherwise,
    # and a later move back would find it so too.
    owner = node4.client().containers.run(
        "flocker/base:local",
        ["stat", "-c", "%u:%g", "/data", "/data/nodes"],
        volumes={f"flocker-{elk.stack}-elasticsearch": {"bind": "/data", "mode": "ro"}},
        remove=True,
    )
    assert owner.decode().split() == ["1000:1000", "1000:1000"], owner

    # The shipper kept its container: its link follows the store through node2's router.
    shipper = node2.client().containers.get(f"flocker-{elk.stack}-logstash")
    assert (shipper.id, shipper.attrs["State"]["StartedAt"]) == shipper_before
    assert routes(node3, elk.stack)[9200]["target"].startswith(f"{node4.address}:")
    # After the move: kernel forwarding to the new target, and from the old host too.
    eventually(lambda: 9200 in router_stats(node3, elk.stack)["kernel_ports"], what="kernel forwarding on node3 after the move")
    eventually(lambda: 9200 in router_stats(node1, elk.stack)["kernel_ports"], what="kernel forwarding on node1 after the move")
    assert 9200 not in router_stats(node4, elk.stack)["kernel_ports"]
