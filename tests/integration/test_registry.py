"""Images from a registry, as on real hosts: a node that lacks an application's image pulls
it, and a destination that cannot pull fails the move before the application stops.

The registry is Debian's (docker-distribution), one process in each node's network
namespace on 127.0.0.1 (which Docker talks to without TLS), all over one storage
directory: every node sees the same registry, and each can lose it on its own."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker.errors
import pytest

from .harness import STORE, ClusterNode, Pulumi, by_name, eventually, http_json, lost_writes, make, move_while_writing, ours

pytestmark = pytest.mark.cluster

REGISTRY = "127.0.0.1:5555"


class Registry:
    def __init__(self, directory: Path) -> None:
        self.config = directory / "config.yml"
        self.config.write_text(
            "version: 0.1\nlog:\n  level: error\n"
            f"storage:\n  filesystem:\n    rootdirectory: {directory / 'data'}\n"
            f"http:\n  addr: {REGISTRY}\n  secret: flocker-test\n"
        )
        self.servers: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, node: ClusterNode) -> None:
        command = ["ip", "netns", "exec", node.netns, "docker-registry", "serve", str(self.config)]
        self.servers[node.name] = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        probe = ["ip", "netns", "exec", node.netns, "bash", "-c", f"exec 3<>/dev/tcp/{REGISTRY.replace(':', '/')}"]
        eventually(lambda: subprocess.run(probe, capture_output=True).returncode == 0, timeout=20, interval=0.1, what="registry")

    def stop(self, node: ClusterNode) -> None:
        server = self.servers.pop(node.name)
        server.terminate()
        server.wait()


@pytest.fixture
def registry(nodes: list[ClusterNode], tmp_path: Path) -> Iterator[Registry]:
    assert shutil.which("docker-registry"), "no docker-registry: `make install` installs it"
    found = Registry(tmp_path)
    try:
        for name in ("node1", "node2"):
            found.start(by_name(nodes, name))
        yield found
    finally:
        for name in list(found.servers):
            found.stop(by_name(nodes, name))


def push_store_image(node: ClusterNode, reference: str) -> str:
    """The stand-in's image into the registry, and the reference gone from ``node`` (its
    layers stay: the pull there is the registry's answer, not a download); its digest."""
    client = node.client()
    client.images.get("flocker/elasticsearch:local").tag(reference)
    digest = ""
    for line in client.images.push(reference, stream=True, decode=True):
        assert "error" not in line, line
        digest = line.get("aux", {}).get("Digest", digest)
    client.images.remove(reference)
    assert digest.startswith("sha256:")
    return digest


@contextlib.contextmanager
def store_of(reference: str, nodes: list[ClusterNode], workdir: Path, stack_name: str) -> Iterator[Pulumi]:
    """A stack of the store on node1 with image ``reference``; destroyed afterwards, and
    the reference removed from the nodes that pulled it."""
    store = make(workdir, stack_name, STORE.replace("flocker/elasticsearch:local", reference), "node1")
    try:
        yield store
    finally:
        store.destroy()
        for node in (by_name(nodes, "node1"), by_name(nodes, "node2")):
            if has_image(node, reference):
                node.client().images.remove(reference)
    assert all(not items for items in ours(nodes, stack_name).values()), ours(nodes, stack_name)


def has_image(node: ClusterNode, reference: str) -> bool:
    try:
        node.client().images.get(reference)
    except docker.errors.ImageNotFound:
        return False
    return True


@pytest.mark.parametrize("pinned", [False, True], ids=["by tag", "by digest"])
def test_a_node_without_the_image_pulls_it_and_a_move_pulls_it_on_the_destination(
    registry: Registry, nodes: list[ClusterNode], workdir: Path, stack_name: str, pinned: bool
) -> None:
    repository = f"{REGISTRY}/flocker/store-{stack_name}"
    source, destination = by_name(nodes, "node1"), by_name(nodes, "node2")
    digest = push_store_image(source, f"{repository}:v1")
    reference = f"{repository}@{digest}" if pinned else f"{repository}:v1"
    assert not has_image(source, reference) and not has_image(destination, reference)
    with store_of(reference, nodes, workdir, stack_name) as store:
        store.up()
        assert has_image(source, reference)
        eventually(lambda: http_json("GET", f"http://{source.address}:9200/"), what="store up")
        writer, _ = move_while_writing(store, [source, destination], "node1", "node2", writes_before=20)
        assert has_image(destination, reference)
        assert not lost_writes(destination, writer)


def test_a_destination_that_cannot_pull_fails_the_move_before_the_application_stops(
    registry: Registry, nodes: list[ClusterNode], workdir: Path, stack_name: str
) -> None:
    reference = f"{REGISTRY}/flocker/store-{stack_name}:v1"
    source, destination = by_name(nodes, "node1"), by_name(nodes, "node2")
    push_store_image(source, reference)
    container = f"flocker-{stack_name}-store"
    with store_of(reference, nodes, workdir, stack_name) as store:
        store.up()
        started = source.client().containers.get(container).attrs["State"]["StartedAt"]
        http_json("PUT", f"http://{source.address}:9200/acks/_doc/1", {"n": 1})
        registry.stop(destination)
        store.config({"node": "node2"})
        failed = store.up(check=False)
        output = failed.stdout + failed.stderr
        assert failed.returncode != 0, output
        assert "Traceback" not in output, output
        assert f"node node2: image {reference} is not on the node and could not be pulled" in output, output
        assert "nothing was lost" in output, output
        # It never stopped: same container, same start, serving its data where it was.
        assert source.client().containers.get(container).attrs["State"]["StartedAt"] == started
        assert http_json("GET", f"http://{source.address}:9200/acks/_doc/1")["_source"] == {"n": 1}
        assert not has_image(destination, reference)

        registry.start(destination)  # the registry is back: the same `pulumi up` finishes the move
        assert "moves from node1 to node2" in store.up().stdout
        assert http_json("GET", f"http://{destination.address}:9200/acks/_doc/1")["_source"] == {"n": 1}
