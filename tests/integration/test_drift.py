"""Drift on the real cluster: what someone changed by hand on a node, found and repaired, or
refused where repairing would lose data."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
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
    # The command names the engine, not its certificates: Docker's CLI takes those from its
    # environment, as a shell after `eval "$(make -s env)"` and DOCKER_TLS_VERIFY=1 has them.
    tls = {"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": node1.tls} if node1.tls else {}
    subprocess.run(shlex.split(create.group(1)), check=True, capture_output=True, env={**os.environ, **tls})
    helper = with_helper(node1, name)
    assert helper.put_archive("/", backup)
    helper.remove()
    store.run("up", "--yes", "--skip-preview", "--refresh")
    eventually(serves_the_book, what="the book on the restored volume")
    again = store.run("preview", "--refresh", "--expect-no-changes", check=False)
    assert again.returncode == 0, again.stdout + again.stderr
