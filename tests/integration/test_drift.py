"""Drift on the real cluster: what someone changed by hand on a node, found and repaired, or
refused where repairing would lose data."""

from __future__ import annotations

import re
import shlex
import subprocess
import urllib.error
from pathlib import Path

import docker
import pytest

from .harness import STORE, ClusterNode, Pulumi, by_name, eventually, http_json, make

pytestmark = pytest.mark.cluster


def with_helper(node: ClusterNode, volume: str) -> docker.models.containers.Container:
    """A container that never runs, mounting ``volume`` at /data: for copying the volume out and in."""
    return node.client().containers.create("flocker/base:local", ["true"], volumes={volume: {"bind": "/data", "mode": "rw"}})


def test_a_container_stopped_or_removed_by_hand_is_repaired_and_a_deleted_volume_is_never_made_again_empty(
    nodes: list[ClusterNode], workdir: Path, stack_name: str, cleanup: list[Pulumi]
) -> None:
    node1 = by_name(nodes, "node1")
    client = node1.client()
    store = make(workdir, stack_name, STORE, "node1")
    cleanup.append(store)
    store.up()
    url = f"http://{node1.address}:9200"
    eventually(lambda: http_json("PUT", f"{url}/books/_doc/1", {"title": "Flocker"}), what="store accepts writes")
    name = f"flocker-{stack_name}-store"

    def serves_the_book() -> bool:
        return http_json("GET", f"{url}/books/_doc/1")["_source"] == {"title": "Flocker"}

    # Stopped by hand: started again, with its data.
    client.containers.get(name).stop(timeout=10)
    assert "application store is not running on node1" in store.run("preview", "--refresh").stdout
    store.run("up", "--yes", "--skip-preview", "--refresh")
    assert client.containers.get(name).status == "running"
    eventually(serves_the_book, what="the book after the restart")

    # Removed by hand: made again from its spec, on the same volume.
    client.containers.get(name).remove(force=True)
    assert "found: application store is gone from node1" in store.run("preview", "--refresh").stdout
    store.run("up", "--yes", "--skip-preview", "--refresh")
    eventually(serves_the_book, what="the book in the container made again")

    # The volume deleted by hand (its container first: Docker will not delete a volume in use),
    # after a backup of it.
    helper = with_helper(node1, name)
    backup = b"".join(helper.get_archive("/data")[0])
    helper.remove()
    client.containers.get(name).remove(force=True)
    client.volumes.get(name).remove()
    preview = store.run("preview", "--refresh")
    assert "found: volume store is missing on node1: `pulumi up` will not create it again empty" in preview.stdout, preview.stdout
    for refresh in (["--refresh"], []):  # the refreshed state keeps refusing
        refused = store.run("up", "--yes", "--skip-preview", *refresh, check=False)
        output = refused.stdout + refused.stderr
        assert refused.returncode != 0, output
        assert f"volume {name} is missing" in output and "does not create an empty volume" in output, output
        assert "Traceback" not in output, output
        # Neither the volume nor the container was made, not even by Docker for a mount.
        assert name not in [v.name for v in client.volumes.list()] and name not in [c.name for c in client.containers.list(all=True)]

    # Restored as the message says, from the backup: the next `up` starts the store on it.
    create = re.search(r"restore it on node1 \(`([^`]+)`", output)
    assert create, output
    # As typed: the command carries the node's client certificates (the cluster speaks TLS).
    assert "--tlsverify" in create.group(1), create.group(1)
    subprocess.run(shlex.split(create.group(1)), check=True, capture_output=True)
    helper = with_helper(node1, name)
    assert helper.put_archive("/", backup)
    helper.remove()
    store.run("up", "--yes", "--skip-preview", "--refresh")
    eventually(serves_the_book, what="the book on the restored volume")
    again = store.run("preview", "--refresh", "--expect-no-changes", check=False)
    assert again.returncode == 0, again.stdout + again.stderr


def test_a_copy_started_by_hand_on_another_node_is_said_and_stopped_for_good_keeping_what_it_wrote(
    nodes: list[ClusterNode], workdir: Path, stack_name: str, cleanup: list[Pulumi]
) -> None:
    """After a move from node1 to node2, someone runs the store on node1 by hand, with our
    labels, on the retired copy the move left there, and writes to it: the application runs
    on two nodes at once. A refreshed preview says which node and container; the refreshed
    `up` stops that copy for good and keeps it (container and retired copy, with its write),
    while the store on node2 serves throughout and every node's route goes to it."""
    node1, node2, node3 = (by_name(nodes, n) for n in ("node1", "node2", "node3"))
    store = make(workdir, stack_name, STORE, "node1")
    cleanup.append(store)
    store.up()
    eventually(lambda: http_json("PUT", f"http://{node1.address}:9200/books/_doc/1", {"title": "Flocker"}), what="store accepts writes")
    store.config({"node": "node2"})
    store.up()
    name = f"flocker-{stack_name}-store"
    placed = node2.client().containers.get(name)
    assert node1.client().volumes.get(name) and node1.client().containers.get(f"{name}-retired")  # the retired copy

    # `docker run` by hand on node1, as from `docker inspect` of node2's: our name and labels,
    # the volume there, a port of its own, restarted by Docker whatever happens.
    stray = node1.client().containers.run(
        "flocker/elasticsearch:local",
        name=name,
        labels=placed.labels,
        volumes={name: {"bind": "/var/lib/elasticsearch", "mode": "rw"}},
        ports={"9200/tcp": None},
        restart_policy={"Name": "always"},
        detach=True,
    )
    stray.reload()
    direct = f"http://{node1.address}:{stray.ports['9200/tcp'][0]['HostPort']}"
    eventually(lambda: http_json("PUT", f"{direct}/books/_doc/2", {"title": "written by hand"}), what="the stray accepts writes")

    preview = store.run("preview", "--refresh").stdout
    found = f"found: application store also runs on node1 (container {name} {stray.id[:12]}), not only on node2: the update stops it there"
    assert found in preview, preview
    up = store.run("up", "--yes", "--skip-preview", "--refresh")
    kept = f"what it wrote is in volume {name} there, the retired copy of an earlier move, not in the live copy on node2"
    assert kept in up.stdout, up.stdout

    stray.reload()
    assert stray.status == "exited" and stray.attrs["HostConfig"]["RestartPolicy"]["Name"] == "no"
    assert node1.client().containers.get(f"{name}-retired")  # still marked retired
    wrote = node1.client().containers.run(
        "flocker/base:local", ["grep", "-rlF", "written by hand", "/data"], volumes={name: {"bind": "/data", "mode": "ro"}}, remove=True
    )
    assert wrote.strip(), "the stray's write is kept in the retired copy"
    # The store on node2 was never restarted, and every node routes to it: the book, not the stray's write.
    placed.reload()
    assert node2.client().containers.get(name).attrs["State"]["StartedAt"] == placed.attrs["State"]["StartedAt"]
    for node in (node1, node2, node3):
        url = f"http://{node.address}:9200/books/_doc"
        assert http_json("GET", f"{url}/1")["_source"] == {"title": "Flocker"}
        with pytest.raises(urllib.error.HTTPError):
            http_json("GET", f"{url}/2")
    again = store.run("preview", "--refresh", "--expect-no-changes", check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    # The cleanup fixture's destroy removes the stopped copy with the rest, and checks nothing of ours is left.
