"""Routing and links across nodes on the real cluster, through the real Pulumi CLI (issue 4).

Every node answers on every application's external port; a move holds new connections
instead of refusing them; links reach their target through the linking node's router.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
import urllib.error
from pathlib import Path

import docker.errors
import pytest

from flocker_provider.docker_layer import host_port

from .harness import REPO, ClusterNode, Pulumi, es_count, eventually, http_json, http_text, ours, router_rules, send_lines

pytestmark = pytest.mark.cluster

STAND_INS = {f"{s}Image": f"flocker/{s}:local" for s in ("elasticsearch", "logstash", "kibana")}


def by_name(nodes: list[ClusterNode], name: str) -> ClusterNode:
    return next(n for n in nodes if n.name == name)


def router(node: ClusterNode, stack: str):
    return node.client().containers.get(f"flocker-{stack}.router")


def routes(node: ClusterNode, stack: str) -> dict[int, dict]:
    """The route files of the stack's router on ``node``; empty when there is no router."""
    try:
        container = router(node, stack)
    except docker.errors.NotFound:
        return {}
    found = container.exec_run(
        ["sh", "-c", "cd /routes/ports 2>/dev/null && for f in *.json; do [ -e $f ] && echo $f && cat $f && echo; done"]
    )
    lines = found.output.decode().split("\n")
    return {int(name.split(".")[0]): json.loads(body) for name, body in zip(lines[::2], lines[1::2], strict=False) if body}


def router_stats(node: ClusterNode, stack: str) -> dict:
    return json.loads(router(node, stack).exec_run(["cat", "/routes/router-stats.json"]).output)


def elk_answers_everywhere(nodes: list[ClusterNode]) -> None:
    for node in nodes:
        eventually(lambda a=node.address: http_json("GET", f"http://{a}:9200/")["tagline"], what=f"elasticsearch on {node.name}")
        eventually(lambda a=node.address: socket.create_connection((a, 5000), timeout=2).close() or True, what=f"logstash on {node.name}")
        eventually(lambda a=node.address: "<html" in http_text(f"http://{a}:80/").lower(), what=f"kibana on {node.name}")


def answers_http(url: str) -> bool:
    """Any HTTP answer (the stand-in says 503 without a store): the application was reached."""
    try:
        http_text(url)
    except urllib.error.HTTPError:
        pass
    return True


def refused(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


class ClientLoop(threading.Thread):
    """Opens a new connection per request to one address for as long as it runs, and counts
    every failure by kind: a move must cost no refused and no reset connection."""

    def __init__(self, address: str) -> None:
        super().__init__(daemon=True)
        self.address = address
        self.ok = 0
        self.failures: dict[str, int] = {}
        self.slowest = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                http_json("GET", f"http://{self.address}:9200/", timeout=60)
                self.ok += 1
            except Exception as exc:  # every kind of failure counts, none may end the loop unseen
                kind = type(getattr(exc, "reason", exc)).__name__
                self.failures[kind] = self.failures.get(kind, 0) + 1
            self.slowest = max(self.slowest, time.monotonic() - started)
            time.sleep(0.02)


class LineSender(threading.Thread):
    """Sends one numbered line per new connection to Logstash, tagged with the phase."""

    def __init__(self, address: str) -> None:
        super().__init__(daemon=True)
        self.address = address
        self.sent = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            send_lines(self.address, [f"during {self.sent}"])
            self.sent += 1
            time.sleep(0.2)


@pytest.fixture
def elk(nodes: list[ClusterNode], workdir: Path, stack_name: str):
    project = workdir / "elk"
    project.mkdir()
    (project / "Pulumi.yaml").write_text((REPO / "Pulumi.yaml").read_text().replace("main: examples/elk/\n", ""))
    shutil.copy(REPO / "examples" / "elk" / "__main__.py", project / "__main__.py")
    pulumi = Pulumi(workdir, stack_name, project_dir=project)
    pulumi.init(STAND_INS)
    yield pulumi
    pulumi.destroy()
    assert all(not items for items in ours(nodes, stack_name).values()), ours(nodes, stack_name)
    assert all(not rules for rules in router_rules(nodes, stack_name).values()), router_rules(nodes, stack_name)


def test_elk_answers_on_every_node_and_a_move_refuses_no_connection(elk: Pulumi, nodes: list[ClusterNode], stack_name: str) -> None:
    node2, node3, node4 = (by_name(nodes, n) for n in ("node2", "node3", "node4"))
    elk.up()
    elk_answers_everywhere(nodes)
    # One router per node, each routing the three external ports.
    for node in nodes:
        assert sorted(routes(node, stack_name)) == [80, 5000, 9200], node.name

    shipper = node2.client().containers.get(f"flocker-{stack_name}-logstash")
    shipper_before = (shipper.id, shipper.attrs["State"]["StartedAt"])
    assert shipper.attrs["Config"]["Env"].count(f"ES_PORT_9200_TCP=tcp://{node2.address}:9200") == 1
    send_lines(node2.address, [f"before {i}" for i in range(5)])
    eventually(lambda: es_count(node3.address) == 5, what="lines sent before the move indexed")

    # The kernel forwards the store's port on nodes that do not host it (the router proved the
    # target first), the hosting node's own router proxies it.
    node1 = by_name(nodes, "node1")
    eventually(lambda: 9200 in router_stats(node3, stack_name)["kernel_ports"], what="kernel forwarding on node3")
    assert router_stats(node3, stack_name)["kernel_backend"] == "iptables-nft"
    assert 9200 not in router_stats(node1, stack_name)["kernel_ports"]

    # node3 hosts neither the source (node1) nor the destination (node4) of the move.
    client, sender = ClientLoop(node3.address), LineSender(node2.address)
    client.start()
    sender.start()
    eventually(lambda: client.ok > 5 and sender.sent > 2, what="client loop and sender running")
    elk.config({"elasticsearchNode": "node4"})
    elk.up()
    # The loop lived through the whole move: it goes on succeeding after it.
    moved_at = client.ok
    eventually(lambda: client.ok > moved_at + 5, what="client loop still running after the move")
    client.stop.set()
    sender.stop.set()
    client.join(90)
    sender.join(90)

    assert client.failures == {}, f"failed connections during the move: {client.failures} ({client.ok} succeeded)"
    stats = router_stats(node3, stack_name)
    print(f"client loop: {client.ok} requests, slowest {client.slowest:.2f}s; router on node3: {stats}")
    assert stats["held_timed_out"] == 0, stats

    send_lines(node2.address, [f"after {i}" for i in range(5)])
    total = 5 + sender.sent + 5
    eventually(lambda: es_count(node4.address) == total, timeout=90, what=f"{total} lines indexed after the move")
    elk_answers_everywhere(nodes)

    # The shipper kept its container: its link follows the store through node2's router.
    shipper = node2.client().containers.get(f"flocker-{stack_name}-logstash")
    assert (shipper.id, shipper.attrs["State"]["StartedAt"]) == shipper_before
    target = routes(node3, stack_name)[9200]["target"]
    assert target.startswith(f"{node4.address}:"), target
    # After the move: kernel forwarding to the new target, and from the old host too.
    eventually(lambda: 9200 in router_stats(node3, stack_name)["kernel_ports"], what="kernel forwarding on node3 after the move")
    eventually(lambda: 9200 in router_stats(node1, stack_name)["kernel_ports"], what="kernel forwarding on node1 after the move")
    assert 9200 not in router_stats(node4, stack_name)["kernel_ports"]


REMOVABLE = """
import pulumi
from flocker_pulumi import FlockerApplication

config = pulumi.Config()
FlockerApplication("web", image="flocker/kibana:local", node="node1", ports=[{"internal": 8080, "external": 8181}],
                   environment={"ES_URL": "http://127.0.0.1:1"})
if config.get_bool("both"):
    FlockerApplication("api", image="flocker/kibana:local", node="node2", ports=[{"internal": 8080, "external": 8182}],
                       environment={"ES_URL": "http://127.0.0.1:1"})
"""


def test_deleting_an_application_removes_its_routes_on_every_node(nodes: list[ClusterNode], workdir: Path, stack_name: str) -> None:
    pulumi = Pulumi(workdir, stack_name)
    pulumi.write_program(REMOVABLE)
    pulumi.init({"both": "true"})
    try:
        pulumi.up()
        for node in nodes:
            assert sorted(routes(node, stack_name)) == [8181, 8182], node.name
            eventually(lambda a=node.address: socket.create_connection((a, 8182), timeout=2).close() or True, what=f"api on {node.name}")
        pulumi.config({"both": "false"})
        pulumi.up()
        for node in nodes:
            assert sorted(routes(node, stack_name)) == [8181], node.name
            eventually(lambda a=node.address: refused(a, 8182), what=f"port 8182 closed on {node.name}")
    finally:
        pulumi.destroy()
    # The router went with the last application that needed it.
    assert all(not items for items in ours(nodes, stack_name).values()), ours(nodes, stack_name)
    assert all(not rules for rules in router_rules(nodes, stack_name).values()), router_rules(nodes, stack_name)


def test_an_application_restarted_outside_pulumi_keeps_its_routes(nodes: list[ClusterNode], workdir: Path, stack_name: str) -> None:
    """Docker restarts a container (restart policy, daemon restart, by hand) without `pulumi up`:
    it must come back on the host port its routes name. The first candidate port is taken by
    a container we did not create, which must be left alone."""
    node1 = by_name(nodes, "node1")
    name = f"flocker-{stack_name}-web"
    taken = host_port(name, 8080, 0)
    squatter = node1.client().containers.run(
        "flocker/base:local", ["sleep", "600"], name=f"squatter-{stack_name}", detach=True, ports={"1/tcp": ("0.0.0.0", taken)}
    )
    pulumi = Pulumi(workdir, stack_name)
    pulumi.write_program(REMOVABLE)
    pulumi.init({"both": "false"})
    try:
        pulumi.up()
        web = node1.client().containers.get(name)
        assert web.ports["8080/tcp"][0]["HostPort"] == str(host_port(name, 8080, 1))
        web.restart(timeout=2)
        web.reload()
        assert web.ports["8080/tcp"][0]["HostPort"] == str(host_port(name, 8080, 1))
        for node in nodes:
            eventually(lambda a=node.address: answers_http(f"http://{a}:8181/"), what=f"web on {node.name} after a restart")
    finally:
        pulumi.destroy()
        squatter.reload()
        assert squatter.status == "running"
        squatter.remove(force=True)


CONFLICTS = {
    "same_port": (
        """
import pulumi
from flocker_pulumi import FlockerApplication
FlockerApplication("first", image="flocker/base:local", node="node1", ports=[{"internal": 1, "external": 8300}])
FlockerApplication("second", image="flocker/base:local", node="node2", ports=[{"internal": 2, "external": 8300}])
""",
        "applications first and second both publish external port 8300",
    ),
    "missing_link_target": (
        """
import pulumi
from flocker_pulumi import FlockerApplication
FlockerApplication("store", image="flocker/base:local", node="node1", ports=[{"internal": 9200, "external": 8301}])
FlockerApplication("shipper", image="flocker/base:local", node="node2", links=[{"alias": "es", "local_port": 9200, "remote_port": 8302}])
""",
        "application shipper: link 'es' to port 8302: no application declared before this one publishes that external port",
    ),
    "taken_on_a_node": (
        """
import pulumi
from flocker_pulumi import FlockerApplication
FlockerApplication("squatted", image="flocker/base:local", node="node1", ports=[{"internal": 80, "external": 8303}])
""",
        "application squatted: external port 8303 is already taken on node node3 by container squatter-",
    ),
}


def test_conflicts_are_rejected_at_preview(nodes: list[ClusterNode], workdir: Path, stack_name: str) -> None:
    node3 = by_name(nodes, "node3").client()
    squatter = node3.containers.run(
        "flocker/base:local", ["sleep", "600"], name=f"squatter-{stack_name}", detach=True, ports={"80/tcp": 8303}
    )
    try:
        for case, (program, message) in CONFLICTS.items():
            pulumi = Pulumi(workdir / case, stack_name)
            pulumi.write_program(program)
            pulumi.init()
            preview = pulumi.run("preview", check=False)
            output = preview.stdout + preview.stderr
            assert preview.returncode != 0, output
            assert message in output, output
    finally:
        squatter.remove(force=True)
    assert all(not items for items in ours(nodes, stack_name).values()), ours(nodes, stack_name)
    assert all(not rules for rules in router_rules(nodes, stack_name).values()), router_rules(nodes, stack_name)


GROWING = """
from flocker_pulumi import FlockerApplication
FlockerApplication("web", image="flocker/kibana:local", node="node1", ports=[{"internal": 8080, "external": 8191}],
                   environment={"ES_URL": "http://127.0.0.1:1"})
"""


def test_a_node_added_to_the_cluster_gets_routes_without_a_restart(nodes: list[ClusterNode], workdir: Path, stack_name: str) -> None:
    node1, node4 = by_name(nodes, "node1"), by_name(nodes, "node4")
    three = workdir / "three-nodes.json"
    three.write_text(json.dumps({"nodes": [{"name": n.name, "address": n.address, "docker_host": n.docker_host} for n in nodes[:3]]}))
    pulumi = Pulumi(workdir, stack_name)
    pulumi.env["FLOCKER_NODES_FILE"] = str(three)
    pulumi.write_program(GROWING)
    pulumi.init()
    try:
        pulumi.up()
        web = node1.client().containers.get(f"flocker-{stack_name}-web")
        assert routes(node4, stack_name) == {}
        pulumi.env["FLOCKER_NODES_FILE"] = os.environ["FLOCKER_NODES_FILE"]
        preview = pulumi.run("preview", "--diff")
        assert "replace" not in preview.stdout, preview.stdout
        pulumi.up()
        eventually(lambda: answers_http(f"http://{node4.address}:8191/"), what="web answering on the added node")
        assert routes(node4, stack_name)[8191]["target"].startswith(f"{node1.address}:")
        assert node1.client().containers.get(web.name).id == web.id
    finally:
        pulumi.destroy()
    assert all(not items for items in ours(nodes, stack_name).values()), ours(nodes, stack_name)
    assert all(not rules for rules in router_rules(nodes, stack_name).values()), router_rules(nodes, stack_name)


HANDED_OVER = """
from flocker_pulumi import FlockerApplication
FlockerApplication("store", image="flocker/elasticsearch:local", node="node1", ports=[{"internal": 9200, "external": 9200}])
"""


def test_a_new_router_takes_over_without_refusing_a_connection(nodes: list[ClusterNode], workdir: Path, stack_name: str) -> None:
    """An upgraded provider replaces every router (another router program or image): the new
    one starts beside the old one and new connections wait, through the hosting node's
    router (proxy) as through another node's (kernel forwarding), instead of being refused."""
    for node in nodes:
        node.client().images.get("flocker/base:local").tag("flocker/base", "takeover")
    pulumi = Pulumi(workdir, stack_name)
    pulumi.write_program(HANDED_OVER)
    pulumi.init()
    loops = [ClientLoop(by_name(nodes, name).address) for name in ("node1", "node3")]
    try:
        pulumi.up()
        for node in nodes:
            eventually(lambda a=node.address: answers_http(f"http://{a}:9200/"), what=f"store on {node.name}")
        first = {node.name: router(node, stack_name).id for node in nodes}
        for loop in loops:
            loop.start()
        time.sleep(1)
        pulumi.config({"flocker:transferImage": "flocker/base:takeover"})
        pulumi.up()
        second = {node.name: router(node, stack_name).id for node in nodes}
        assert all(router(node, stack_name).attrs["Config"]["Image"] == "flocker/base:takeover" for node in nodes)
        # And back: a second take-over on the same routes volume, where the first one's marks are.
        pulumi.config({"flocker:transferImage": "flocker/base:local"})
        pulumi.up()
        time.sleep(2)  # connections held at their SYN come through a second later
        for loop in loops:
            loop.stop.set()
            loop.join()
        assert all(len({first[node.name], second[node.name], router(node, stack_name).id}) == 3 for node in nodes)
        for loop in loops:
            assert loop.ok > 0 and loop.failures == {}, (loop.address, loop.failures)
    finally:
        for loop in loops:
            loop.stop.set()
        pulumi.destroy()
    assert all(not items for items in ours(nodes, stack_name).values()), ours(nodes, stack_name)
    assert all(not rules for rules in router_rules(nodes, stack_name).values()), router_rules(nodes, stack_name)
