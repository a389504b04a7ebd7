"""Routing and links across nodes on the real cluster, through the real Pulumi CLI (issue 4).

Every node answers on every application's external port; a move holds new connections
instead of refusing them; links reach their target through the linking node's router.
The ELK example's move through the routers (no connection refused, the shipper's link
following the store) is in test_elk_example.py, on the stack those tests share.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import urllib.error
from pathlib import Path

import docker.errors
import pytest

from flocker_provider.planning.host_port_choice import host_port

from .harness import ClusterNode, Pulumi, eventually, http_json, http_text, ours, router_rules

pytestmark = pytest.mark.cluster


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


def answers_http(url: str) -> bool:
    """Any HTTP answer (the log page says 503 without a store): the application was reached."""
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

    def __init__(self, address: str, timeout: float = 60) -> None:
        super().__init__(daemon=True)
        self.address = address
        self.timeout = timeout  # per request: longer than the application's hold
        self.ok = 0
        self.failures: dict[str, int] = {}
        self.slowest = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                http_json("GET", f"http://{self.address}:9200/", timeout=self.timeout)
                self.ok += 1
            except Exception as exc:  # every kind of failure counts, none may end the loop unseen
                kind = type(getattr(exc, "reason", exc)).__name__
                self.failures[kind] = self.failures.get(kind, 0) + 1
            self.slowest = max(self.slowest, time.monotonic() - started)
            time.sleep(0.02)


REMOVABLE = """
import pulumi
from flocker_pulumi import FlockerApplication

config = pulumi.Config()
FlockerApplication("web", image="flocker/logpage:local", node="node1", ports=[{"internal": 8080, "external": 8181}],
                   environment={"ES_URL": "http://127.0.0.1:1"})
if config.get_bool("both"):
    FlockerApplication("api", image="flocker/logpage:local", node="node2", ports=[{"internal": 8080, "external": 8182}],
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
FlockerApplication("web", image="flocker/logpage:local", node="node1", ports=[{"internal": 8080, "external": 8191}],
                   environment={"ES_URL": "http://127.0.0.1:1"})
"""


def test_a_node_added_to_the_cluster_gets_routes_without_a_restart(nodes: list[ClusterNode], workdir: Path, stack_name: str) -> None:
    node1, node4 = by_name(nodes, "node1"), by_name(nodes, "node4")
    three = workdir / "three-nodes.json"
    three.write_text(json.dumps({"nodes": [n.entry() for n in nodes[:3]]}))
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


class RequestAcrossATakeOver(threading.Thread):
    """One request through ``node``'s router, begun before a take-over and finished once the old
    router is asked to retire (its restart policy turned off first): killed, the old router
    would cut it, as SIGKILL once cut a client's connection in CI."""

    def __init__(self, node: ClusterNode, stack: str, port: int) -> None:
        super().__init__(daemon=True)
        self.node, self.old = node, f"flocker-{stack}.router.old"
        self.sock = socket.create_connection((node.address, port), timeout=60)
        self.sock.sendall(b"GET / HTTP/1.1\r\nHost: store\r\n")
        self.answer = b""
        self.retiring = False

    def run(self) -> None:
        seen = False
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                old = self.node.client().containers.get(self.old)
            except docker.errors.NotFound:
                if seen:
                    break  # gone without retiring: the request shows what that cost
                time.sleep(0.05)
                continue
            seen = True
            if old.attrs["HostConfig"]["RestartPolicy"]["Name"] == "no":
                self.retiring = True
                break
            time.sleep(0.05)
        time.sleep(0.3)  # the signal follows the policy at once
        with self.sock:
            with contextlib.suppress(OSError):
                self.sock.sendall(b"Connection: close\r\n\r\n")
                while chunk := self.sock.recv(65536):
                    self.answer += chunk


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
        # Through the hosting node's router, which proxies it (another node's kernel would forward it).
        across = RequestAcrossATakeOver(by_name(nodes, "node1"), stack_name, 9200)
        across.start()
        time.sleep(1)
        pulumi.config({"flocker:transferImage": "flocker/base:takeover"})
        pulumi.up()
        across.join(60)
        assert across.retiring and across.answer.split(b"\r\n", 1)[0].endswith(b" 200 OK"), (across.retiring, across.answer[:200])
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
