"""FlockerApplication / FlockerVolume behaviour on the real cluster."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .harness import REPO, ClusterNode, Pulumi, eventually, http_json, ours

pytestmark = pytest.mark.cluster

STORE = """
import pulumi
from flocker_pulumi import FlockerApplication

config = pulumi.Config()
store = FlockerApplication(
    "store",
    image=config.get("image") or "flocker/elasticsearch:local",
    node=config.get("node") or "node1",
    ports=[{"internal": 9200, "external": 9200}],
    environment={"GREETING": config.get("greeting") or "hello"},
    volume={"mountpoint": "/var/lib/elasticsearch"},
    wait_timeout=float(config.get("wait") or 120),
    command=config.get_object("command"),
)
pulumi.export("container_id", store.container_id)
"""


@pytest.fixture
def store(nodes: list[ClusterNode], workdir: Path, stack_name: str):
    pulumi = Pulumi(workdir, stack_name)
    pulumi.write_program(STORE)
    pulumi.init()
    yield pulumi
    pulumi.destroy()
    assert all(not items for items in ours(nodes, stack_name).values()), ours(nodes, stack_name)


def test_data_survives_image_and_environment_changes(store: Pulumi, nodes: list[ClusterNode]) -> None:
    node1 = nodes[0]
    url = f"http://{node1.address}:9200"
    store.up()
    first = store.outputs()["container_id"]
    eventually(lambda: http_json("PUT", f"{url}/books/_doc/1", {"title": "Flocker"}), what="store accepts writes")

    store.config({"greeting": "bonjour"})
    store.up()
    second = store.outputs()["container_id"]
    assert second != first, "an environment change must replace the container"
    env = node1.client().containers.get(second).attrs["Config"]["Env"]
    assert "GREETING=bonjour" in env
    doc = eventually(lambda: http_json("GET", f"{url}/books/_doc/1"), what="document after env change")
    assert doc["_source"] == {"title": "Flocker"}

    node1.client().images.get("flocker/elasticsearch:local").tag("flocker/elasticsearch", "v2")
    store.config({"image": "flocker/elasticsearch:v2"})
    store.up()
    assert store.outputs()["container_id"] not in (first, second)
    doc = eventually(lambda: http_json("GET", f"{url}/books/_doc/1"), what="document after image change")
    assert doc["_source"] == {"title": "Flocker"}


def test_an_update_that_does_not_come_up_is_rolled_back(store: Pulumi, nodes: list[ClusterNode], stack_name: str) -> None:
    url = f"http://{nodes[0].address}:9200"
    store.up()
    eventually(lambda: http_json("PUT", f"{url}/books/_doc/1", {"title": "Flocker"}), what="store accepts writes")

    # A command that ends after 0.3 s: up to the wait and the routes (which find its port
    # published), gone before the update is confirmed.
    store.config({"image": "flocker/base:local", "wait": "5", "command": '["sleep", "0.3"]'})
    failed = store.up(check=False)
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert "step 'confirm flocker-" in output and "exited while starting" in output, output
    assert "rolled back: the previous configuration serves again on node1" in output, output
    # The previous image serves the same data again, through the routes.
    doc = eventually(lambda: http_json("GET", f"{url}/books/_doc/1"), what="document after the rollback")
    assert doc["_source"] == {"title": "Flocker"}
    container = nodes[0].client().containers.get(f"flocker-{stack_name}-store")
    assert container.attrs["Config"]["Image"] == "flocker/elasticsearch:local" and container.status == "running"
    # The state kept the previous inputs: going back to them is no change at all.
    store.config({"image": "flocker/elasticsearch:local", "wait": "120"})
    store.run("config", "rm", "command")
    store.run("preview", "--expect-no-changes")


def test_bad_inputs_fail_at_preview_and_change_nothing(store: Pulumi, nodes: list[ClusterNode], stack_name: str) -> None:
    store.config({"node": "node9"})
    preview = store.run("preview", check=False)
    assert preview.returncode != 0
    assert "unknown node 'node9'" in preview.stdout + preview.stderr
    assert "Traceback" not in preview.stdout + preview.stderr
    assert all(not items for items in ours(nodes, stack_name).values())


CHECKED = """
import pulumi
from flocker_pulumi import FlockerApplication

config = pulumi.Config()
FlockerApplication(
    "checked",
    image="flocker/base:local",
    node="node2",
    command=["sh", "-c", "sleep 2; touch /tmp/ready; exec sleep 600"],
    health_check={"command": config.get("check") or "test -f /tmp/ready", "interval": 0.2, "retries": 2},
    wait_timeout=float(config.get("wait") or 30),
)
"""


def test_an_application_is_up_only_once_its_health_check_passes(nodes: list[ClusterNode], workdir: Path, stack_name: str) -> None:
    node2 = next(n for n in nodes if n.name == "node2")
    pulumi = Pulumi(workdir, stack_name)
    pulumi.write_program(CHECKED)
    pulumi.init()
    try:
        pulumi.up()
        # Had `up` not waited for the check, the container would still be "starting" (2 s).
        container = node2.client().containers.get(f"flocker-{stack_name}-checked")
        assert container.attrs["State"]["Health"]["Status"] == "healthy"
        pulumi.config({"check": "echo not ready; exit 3", "wait": "3"})
        failed = pulumi.up(check=False)
        output = failed.stdout + failed.stderr
        assert failed.returncode != 0
        expected = "not up after 3s (status running, unhealthy: its health check exited 3: not ready)"
        assert f"node node2: flocker-{stack_name}-checked {expected}" in output, output
        assert "Traceback" not in output
    finally:
        pulumi.destroy()
    assert all(not items for items in ours(nodes, stack_name).values()), ours(nodes, stack_name)


DOOMED = """
from flocker_pulumi import FlockerApplication

FlockerApplication(
    "doomed",
    image="flocker/base:local",
    node="node2",
    command=["sleep", "600"],
    ports=[{"internal": 80, "external": 18080}],
    health_check={"command": "echo never; exit 1", "interval": 0.2, "retries": 1},
    wait_timeout=2,
)
"""


def test_a_failed_create_leaves_nothing_behind(nodes: list[ClusterNode], workdir: Path, stack_name: str) -> None:
    """The engine records nothing of a failed create: whatever it started must go again, or it runs on outside the stack."""
    pulumi = Pulumi(workdir, stack_name)
    pulumi.write_program(DOOMED)
    pulumi.init()
    try:
        failed = pulumi.up(check=False)
        output = failed.stdout + failed.stderr
        assert failed.returncode != 0
        assert "not up after 2s" in output and "what it had started was removed again" in output, output
        assert all(not items for items in ours(nodes, stack_name).values()), ours(nodes, stack_name)
    finally:
        pulumi.destroy()


def test_an_application_a_node_restart_stopped_starts_again_at_the_next_up(
    store: Pulumi, nodes: list[ClusterNode], stack_name: str
) -> None:
    """A node's engine restarts (a reboot, as far as containers go): its router comes back by
    itself, the application (restart policy "never", Flocker's default) does not. A refreshed
    preview says so, and the next `up` starts it again, with its data; while the node is down,
    a refresh warns instead of failing (it would block every `up` with `refresh: always`)."""
    node2, node3 = (next(n for n in nodes if n.name == name) for name in ("node2", "node3"))
    store.config({"node": "node2"})
    store.up()
    eventually(lambda: http_json("PUT", f"http://{node3.address}:9200/acks/_doc/1", {"n": 1}), what="store routed from node3")
    cluster = ["bash", str(REPO / "scripts" / "cluster.sh")]
    subprocess.run([*cluster, "stop-node", "2"], check=True)
    try:
        down = store.run("preview", "--refresh")
        assert "warning: node node2: Docker engine at" in down.stdout and "left as the last operation recorded it" in down.stdout, (
            down.stdout
        )
    finally:
        subprocess.run([*cluster, "start-node", "2"], check=True)
    container = node2.client().containers.get(f"flocker-{stack_name}-store")
    assert container.status == "exited"

    preview = store.run("preview", "--refresh")
    assert "application store is not running on node2: the update starts it" in preview.stdout, preview.stdout
    store.run("up", "--yes", "--skip-preview", "--refresh")
    assert node2.client().containers.get(container.name).status == "running"
    for node in (node2, node3):
        found = eventually(lambda a=node.address: http_json("GET", f"http://{a}:9200/acks/_doc/1"), what=f"the data through {node.name}")
        assert found["_source"] == {"n": 1}
    again = store.run("up", "--yes", "--skip-preview", "--refresh")
    assert "not running" not in again.stdout and "updated" not in again.stdout, again.stdout
