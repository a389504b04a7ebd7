"""Fifty applications with volumes across the cluster; one `pulumi up` moves ten of them at once
(issue 14's load item: on 5 nodes, as `make test`'s cluster has; node5's volumes are on a disk
of 64 MB of their own there, where its ten stores' few kilobytes each and the two that move in fit).

The application is the Elasticsearch stand-in: fifty of them must start in seconds on two
cores, which OpenSearch cannot. Every one has a routed external port (30000-30049), so the
routers carry fifty routes on every node while ten of them move.

Write calls are counted by the engines themselves: Docker records every change it makes
(a container or volume created, started, stopped, renamed, removed; an exec made or started;
an archive put into a container) as an event, so a no-change `pulumi up` must leave no event
of the stack's containers and volumes on any node but those of reads (a path copied out).
"""

from __future__ import annotations

import datetime
import time
from pathlib import Path

import pytest

from .harness import ClusterNode, Pulumi, http_json, ours

pytestmark = pytest.mark.cluster

APPS = 50
MOVED = 10
PORT = 30000
PROGRAM = f"""
import pulumi
from flocker_pulumi import FlockerApplication

config = pulumi.Config()
nodes = config.require("nodes").split(",")
moved = config.get_bool("moved") or False
for i in range({APPS}):
    home = nodes[i % len(nodes)]
    FlockerApplication(
        f"app{{i}}",
        image="flocker/elasticsearch:local",
        node=nodes[(i + 1) % len(nodes)] if moved and i < {MOVED} else home,
        ports=[{{"internal": 9200, "external": {PORT} + i}}],
        volume={{"mountpoint": "/var/lib/elasticsearch"}},
    )
"""
# Reads leave no event, except copying a path out of a container (`archive-path`, which the
# routers' route files are read with), with its volumes mounted for the copy and unmounted.
READ_ACTIONS = {"archive-path", "mount", "unmount"}


def containers(nodes: list[ClusterNode], stack: str) -> dict[str, tuple[str, str, str]]:
    """Each application's container: node, id, start time."""
    found = {}
    for node in nodes:
        for container in node.client().containers.list(all=True, filters={"label": f"io.flocker-pulumi.stack={stack}"}):
            if container.labels.get("io.flocker-pulumi.kind") == "application":
                found[container.labels["io.flocker-pulumi.resource"]] = (node.name, container.id, container.attrs["State"]["StartedAt"])
    return found


def changes(nodes: list[ClusterNode], stack: str, since: datetime.datetime, until: datetime.datetime) -> dict[str, list[str]]:
    """What each engine changed of the stack's containers and volumes between ``since`` and ``until``."""
    found = {}
    for node in nodes:
        found[node.name] = [
            f"{event['Type']} {event['Action']} {event['Actor'].get('Attributes', {}).get('name') or event['Actor'].get('ID')}"
            for event in node.client().events(since=since, until=until, decode=True)
            if event.get("Action", "").split(":")[0] not in READ_ACTIONS
            and (
                event["Actor"].get("Attributes", {}).get("io.flocker-pulumi.stack") == stack
                or (event["Type"] == "volume" and event["Actor"].get("ID", "").startswith(f"flocker-{stack}"))
            )
        ]
    return found


def stored(address: str, port: int) -> list[int]:
    hits = http_json("GET", f"http://{address}:{port}/acks/_search?size=100", timeout=30)["hits"]["hits"]
    return sorted(hit["_source"]["n"] for hit in hits)


def test_fifty_applications_ten_moved_at_once_the_rest_untouched(nodes: list[ClusterNode], tmp_path: Path, stack_name: str) -> None:
    names = [node.name for node in nodes]
    by_node = {node.name: node for node in nodes}
    stack = Pulumi(tmp_path, stack_name)
    stack.write_program(PROGRAM)
    stack.init({"nodes": ",".join(names)})
    try:
        started = time.monotonic()
        stack.up()
        deployed = time.monotonic() - started
        before = containers(nodes, stack_name)
        assert len(before) == APPS, sorted(before)
        # Data in the ones that will move, through their routed ports (any node serves them).
        for i in range(MOVED):
            http_json("PUT", f"http://{nodes[0].address}:{PORT + i}/acks/_doc/{i}", {"n": i}, timeout=30)

        stack.config({"moved": "true"})
        started = time.monotonic()
        moved = stack.up()
        took = time.monotonic() - started
        after = containers(nodes, stack_name)
        for i in range(APPS):
            name = f"app{i}"
            if i < MOVED:
                there = names[(i + 1) % len(names)]
                assert after[name][0] == there, (name, after[name], moved.stdout[-2000:])
                assert stored(by_node[there].address, PORT + i) == [i], name
            else:
                assert after[name] == before[name], f"{name} was touched: {before[name]} -> {after[name]}"

        # Nothing changed since: a no-change `up` changes nothing on any engine.
        time.sleep(2)  # the last up's own events are before the window
        since = datetime.datetime.now(datetime.UTC)
        started = time.monotonic()
        again = stack.up()
        idle = time.monotonic() - started
        until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=1)
        changed = changes(nodes, stack_name, since, until)
        print(f"load: deployed {APPS} in {deployed:.0f}s, moved {MOVED} in {took:.0f}s, no-change up {idle:.0f}s")
        assert all(not found for found in changed.values()), changed
        assert "unchanged" in again.stdout, again.stdout
    finally:
        stack.destroy()
    assert all(not items for items in ours(nodes, stack_name).values()), ours(nodes, stack_name)
