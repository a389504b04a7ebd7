"""Two-phase push on the real cluster: move an application with its volume by changing `node`."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

from flocker_provider.docker_layer.docker_node import connect
from flocker_provider.execution.staging import HELD_LINE, staged_name
from flocker_provider.planning import labels as L
from flocker_provider.planning.containers import ContainerSpec

from .harness import (
    REPO,
    STORE,
    ClusterNode,
    Pulumi,
    Writer,
    by_name,
    children,
    eventually,
    http_json,
    lost_writes,
    make,
    move_while_writing,
    node_state,
    process_ended,
    volume_checksums,
    volume_prefix_checksums,
)

pytestmark = pytest.mark.cluster

# Writes a 1 GiB file once, then rewrites 1 MiB at a random offset in place every two
# seconds, and once more when stopped (a checkpoint), as a database does: phase 2 must
# send the changed blocks, not the file.
# After a move it waits 30 s before writing again, so the test can compare the copies.
BIG_FILE = """
import pulumi
from flocker_pulumi import FlockerApplication

WRITER = (
    "import os, random, signal, time\\n"
    "path = '/data/big'\\n"
    "def rewrite():\\n"
    "    with open(path, 'r+b') as f:\\n"
    "        f.seek(random.randrange(1024) << 20); f.write(os.urandom(1 << 20))\\n"
    "def checkpoint(*_):\\n"
    "    rewrite(); os._exit(0)\\n"
    "signal.signal(signal.SIGTERM, checkpoint)\\n"
    "if not os.path.exists('/data/ready'):\\n"
    "    with open(path, 'wb') as f:\\n"
    "        for _ in range(1024): f.write(os.urandom(1 << 20))\\n"
    "    open('/data/ready', 'w').close()\\n"
    "else:\\n"
    "    while not os.path.exists('/data/go'):  # moved: still until told, however long the test compares both copies\\n"
    "        time.sleep(1)\\n"
    "while True:\\n"
    "    rewrite(); time.sleep(2)\\n"
)
config = pulumi.Config()
app = FlockerApplication(
    "bigdb",
    image="flocker/base:local",
    node=config.require("node"),
    command=["python3", "-c", WRITER],
    volume={"mountpoint": "/data"},
)
pulumi.export("last_move", app.volume.last_move)
"""

# Two stores with their own volumes on one node, for moves in one `pulumi up`.
PAIR = """
import pulumi
from flocker_pulumi import FlockerApplication

config = pulumi.Config()
for name, port in (("alpha", 9201), ("beta", 9202)):
    app = FlockerApplication(
        name,
        image="flocker/elasticsearch:local",
        node=config.require("node"),
        ports=[{"internal": 9200, "external": port}],
        volume={"mountpoint": "/var/lib/elasticsearch"},
    )
    pulumi.export(name, app.volume.last_move)
"""


def test_move_keeps_every_acknowledged_write(nodes: list[ClusterNode], workdir: Path, stack_name: str, cleanup: list[Pulumi]) -> None:
    source, destination = by_name(nodes, "node1"), by_name(nodes, "node2")
    store = make(workdir, stack_name, STORE, "node1")
    cleanup.append(store)
    store.up()
    eventually(lambda: http_json("GET", f"http://{source.address}:9200/"), what="store up")
    writer, _ = move_while_writing(store, [source, destination], "node1", "node2")

    assert store.outputs()["node"] == "node2"
    missing = lost_writes(destination, writer)
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"

    # Every file of the source copy (kept, retired) is byte-identical on the destination, up
    # to what the destination appended since: the documents written after the move.
    volume = f"flocker-{stack_name}-store"
    before, after = volume_prefix_checksums(destination, volume, like=source)
    assert before and before == after
    last_move = store.outputs()["last_move"]
    assert last_move["from"] == "node1" and last_move["to"] == "node2"
    assert last_move["downtime_seconds"] is not None

    # The destination's container was staged during phase 1 and let through at the gate;
    # restarted, it passes the gate at once (the gate is open for good), with the data.
    assert any(step["step"].startswith("stage ") for step in last_move["steps"])
    container = destination.client().containers.get(volume)
    assert container.attrs["Config"]["Entrypoint"][:2] == ["/bin/sh", "-c"]
    assert not [c.name for n in nodes for c in n.client().containers.list(all=True) if c.name == staged_name(volume)]
    container.restart(timeout=10)
    eventually(lambda: not lost_writes(destination, writer), what="store serving after a restart")


def test_a_staged_container_left_by_a_killed_move_never_runs_and_is_cleaned_up(
    nodes: list[ClusterNode], workdir: Path, stack_name: str, cleanup: list[Pulumi]
) -> None:
    """What a `pulumi` killed between staging and handoff leaves: a partial copy and a
    staged container on the destination. It holds (the application never starts on the
    partial copy), the next move of the volume replaces it, and deleting the volume
    removes one on another node of the inventory, which the state does not know of."""
    source = by_name(nodes, "node1")
    store = make(workdir, stack_name, STORE, "node1")
    cleanup.append(store)
    store.up()
    name = f"flocker-{stack_name}-store"
    spec = ContainerSpec.from_json(source.client().containers.get(name).labels[L.SPEC])
    volume_labels = source.client().volumes.get(name).attrs["Labels"]
    for left in ("node2", "node3"):
        node = by_name(nodes, left)
        with connect(node.provider_node()) as engine:
            engine.create_volume(name, volume_labels)
            assert engine.stage_container(spec)
        time.sleep(1.5)  # past a round of the gate's loop
        staged = node.client().containers.get(staged_name(name))
        assert staged.status == "running"
        assert staged.logs().decode().strip() == HELD_LINE  # and not a line of the store's

    store.config({"node": "node2"})
    store.up()
    node2 = by_name(nodes, "node2")
    eventually(lambda: http_json("GET", f"http://{node2.address}:9200/"), what="store up on node2")
    container = node2.client().containers.get(name)
    assert "listening" in container.logs().decode()
    assert [c.name for c in node2.client().containers.list(all=True) if c.name == staged_name(name)] == []
    node3 = by_name(nodes, "node3")
    assert [c.name for c in node3.client().containers.list(all=True) if c.name == staged_name(name)] == [staged_name(name)]
    # The cleanup fixture destroys the stack and checks nothing of ours is left on any node.


def kill_up(store: Pulumi, at: str) -> None:
    """Runs `pulumi up` and kills it (SIGKILL) as it reports ``at``; its plugins must end by
    themselves. Then unlocks the stack, as a person would."""
    running = store.popen("up", "--yes", "--skip-preview")
    seen = []
    assert running.stdout is not None
    for line in running.stdout:
        seen.append(line)
        if at in line:
            plugins = children(running.pid)
            running.kill()
            break
    running.wait()
    assert running.returncode == -signal.SIGKILL, "".join(seen)
    assert plugins, "no plugin processes found"
    eventually(lambda: all(process_ended(pid) for pid in plugins), timeout=5, interval=0.05, what="plugins ended")
    assert "locked" in store.up(check=False).stderr
    store.run("cancel", "--yes")


@pytest.mark.parametrize("refresh", [False, True], ids=["up", "up --refresh"])
@pytest.mark.parametrize(
    "at", ["phase 1 round 1", "stop flocker-", "hand ", "start flocker-"], ids=["copying", "stopping", "handing over", "starting"]
)
def test_a_pulumi_killed_during_a_move_loses_nothing_and_the_next_up_finishes_it(
    nodes: list[ClusterNode], workdir: Path, stack_name: str, cleanup: list[Pulumi], at: str, refresh: bool
) -> None:
    """`pulumi up` killed with SIGKILL (a cancelled CI job, `timeout -s KILL`) during phase 1
    or as a step of the move's cutover begins. Its plugins, the provider among them, end too instead of
    going on unrecorded; the stack stays locked until `pulumi cancel`, as Pulumi does; the
    next `up` finds out from the nodes how far the move got, finishes it and keeps every
    acknowledged write."""
    source, destination = by_name(nodes, "node1"), by_name(nodes, "node2")
    store = make(workdir, stack_name, STORE, "node1")
    cleanup.append(store)
    store.up()
    eventually(lambda: http_json("GET", f"http://{source.address}:9200/"), what="store up")
    writer = Writer([f"{source.address}:9200", f"{destination.address}:9200"])
    writer.start()
    eventually(lambda: len(writer.acknowledged) > 50, what="writes before the move")
    store.config({"node": "node2"})
    kill_up(store, f"move store: {at}")
    # Refreshed (as `refresh: always` in the ELK project does) or not: both must finish it.
    finished = store.run("up", "--yes", "--skip-preview", *(["--refresh"] if refresh else []))
    assert "Traceback" not in finished.stdout
    writer.stop.set()
    writer.join()
    assert store.outputs()["node"] == "node2"
    missing = lost_writes(destination, writer)
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"
    # Finished as a move, not adopted where it lay: the killed move's helpers are gone.
    assert not [c.name for n in nodes for c in n.client().containers.list(all=True, filters={"label": f"{L.KIND}={L.KIND_TRANSFER}"})]
    # The cleanup fixture destroys the stack and checks nothing of ours is left on any node.


@pytest.mark.parametrize("at", ["hand ", "route port"], ids=["handing over", "routing to the destination"])
def test_a_stack_whose_move_was_killed_is_destroyed_without_leftovers(
    nodes: list[ClusterNode], workdir: Path, stack_name: str, cleanup: list[Pulumi], at: str
) -> None:
    """Killed as the handoff begins, or once the application runs on the destination, then
    given up on: `destroy` alone removes what the state does not know of on the destination
    (the copy, the staged or started container, the move's helpers, which hold the copy);
    the cleanup fixture destroys and checks that nothing of ours is left."""
    store = make(workdir, stack_name, STORE, "node1")
    cleanup.append(store)
    store.up()
    store.config({"node": "node2"})
    kill_up(store, f"move store: {at}")
    node2 = by_name(nodes, "node2")
    assert [c.name for c in node2.client().containers.list(all=True) if stack_name in c.name and ".router" not in c.name]


def test_a_pulumi_killed_while_creating_is_finished_by_the_next_up(
    nodes: list[ClusterNode], workdir: Path, stack_name: str, cleanup: list[Pulumi]
) -> None:
    """Killed as the first `up` starts the store: Pulumi records a create it does not know
    the end of, and the next `up` creates it again over what the killed one left."""
    store = make(workdir, stack_name, STORE, "node1")
    cleanup.append(store)
    kill_up(store, "flocker: start flocker-")
    assert "pending operations" in store.up().stdout
    node1 = by_name(nodes, "node1")
    eventually(lambda: http_json("GET", f"http://{node1.address}:9200/"), what="store up")
    assert sorted(c.name for c in node1.client().containers.list(all=True) if stack_name in c.name) == [
        f"flocker-{stack_name}-store",
        f"flocker-{stack_name}.router",
    ]


def image_without_shell(node: ClusterNode) -> str:
    """The store's image with /bin/sh taken out, as distroless images come: made on the node
    by a container that deletes it, committed with the store's command."""
    client = node.client()
    remover = client.containers.run("flocker/elasticsearch:local", ["python3", "-c", "import os; os.unlink('/bin/sh')"], detach=True)
    try:
        assert remover.wait(timeout=60)["StatusCode"] == 0
        remover.commit("flocker/elasticsearch", "noshell", changes=['CMD ["python3", "-u", "/opt/flocker/elasticsearch/server.py"]'])
    finally:
        remover.remove(force=True)
    return "flocker/elasticsearch:noshell"


def test_an_image_without_a_shell_moves_the_plain_way(
    nodes: list[ClusterNode], workdir: Path, stack_name: str, cleanup: list[Pulumi]
) -> None:
    """No staging and no exit watch without /bin/sh: the container starts after phase 2 and
    phase 2 waits for docker stop, with every acknowledged write kept."""
    source, destination = by_name(nodes, "node1"), by_name(nodes, "node2")
    image = {node.name: image_without_shell(node) for node in (source, destination)}["node1"]
    store = make(workdir, stack_name, STORE.replace("flocker/elasticsearch:local", image), "node1")
    cleanup.append(store)
    store.up()
    eventually(lambda: http_json("GET", f"http://{source.address}:9200/"), what="store up")
    try:
        writer, result = move_while_writing(store, [source], "node1", "node2")
        assert "has no /bin/sh to hold" in result.stdout
        container = destination.client().containers.get(f"flocker-{stack_name}-store")
        assert container.attrs["Config"]["Entrypoint"] is None  # the image's own command, no gate
        assert not lost_writes(destination, writer)
    finally:
        store.destroy()
        for node in (source, destination):
            node.client().images.remove(image, force=True)


def test_move_there_and_back_sends_only_the_delta(nodes: list[ClusterNode], workdir: Path, stack_name: str, cleanup: list[Pulumi]) -> None:
    store = make(workdir, stack_name, STORE, "node1")
    cleanup.append(store)
    store.up()
    node1 = by_name(nodes, "node1")
    url = f"http://{node1.address}:9200"
    eventually(lambda: http_json("GET", url + "/"), what="store up")
    blob = "x" * 200_000
    for i in range(100):  # ~20 MB of documents
        http_json("PUT", f"{url}/bulk/_doc/{i}", {"blob": blob})

    store.config({"node": "node2"})
    store.up()
    first = store.outputs()["last_move"]
    assert first["rounds"][0]["bytes_sent"] > 15_000_000

    http_json("PUT", f"http://{by_name(nodes, 'node2').address}:9200/bulk/_doc/new", {"blob": "small"})
    store.config({"node": "node1"})
    store.up()
    back = store.outputs()["last_move"]
    total = back["rounds"][0]["total_size"]
    assert total > 15_000_000
    # The retired copy on node1 already had everything but one small document.
    assert back["rounds"][0]["bytes_sent"] < 1_000_000, back
    assert back["phase2_bytes_sent"] < 1_000_000, back
    assert http_json("GET", f"{url}/bulk/_doc/new")["found"]


def test_large_file_rewritten_in_place_sends_a_small_fraction(
    nodes: list[ClusterNode], workdir: Path, stack_name: str, cleanup: list[Pulumi]
) -> None:
    app = make(workdir, stack_name, BIG_FILE, "node3")
    cleanup.append(app)
    app.up()
    node3 = by_name(nodes, "node3")
    volume = f"flocker-{stack_name}-bigdb"
    container = node3.client().containers.get(f"flocker-{stack_name}-bigdb")
    eventually(lambda: container.exec_run(["test", "-f", "/data/ready"]).exit_code == 0, timeout=180, what="1 GiB written")
    app.config({"node": "node4"})
    app.up()
    move = app.outputs()["last_move"]
    phase2 = next(r for r in move["rounds"] if r["final"])
    assert phase2["total_size"] >= 1 << 30
    # Only a few rewritten MiB travel in phase 2, not the 1 GiB file.
    assert 0 < phase2["bytes_sent"] < 64 << 20, phase2
    assert volume_checksums(node3, volume) == volume_checksums(by_name(nodes, "node4"), volume)


def test_destination_down_during_phase_one_then_rerun(
    nodes: list[ClusterNode], workdir: Path, stack_name: str, cleanup: list[Pulumi]
) -> None:
    app = make(workdir, stack_name, BIG_FILE, "node3")
    cleanup.append(app)
    app.up()
    node3, node4 = by_name(nodes, "node3"), by_name(nodes, "node4")
    name = f"flocker-{stack_name}-bigdb"
    container = node3.client().containers.get(name)
    eventually(lambda: container.exec_run(["test", "-f", "/data/ready"]).exit_code == 0, timeout=180, what="data")

    app.config({"node": "node4"})
    running = app.popen("up", "--yes", "--skip-preview")
    try:
        eventually(
            lambda: node4.client().containers.list(filters={"label": "io.flocker-pulumi.kind=transfer"}),
            timeout=120,
            interval=0.2,
            what="phase 1 started",
        )
        subprocess.run(["bash", str(REPO / "scripts" / "cluster.sh"), "stop-node", "4"], check=True)
        output, _ = running.communicate(timeout=600)
    finally:
        subprocess.run(["bash", str(REPO / "scripts" / "cluster.sh"), "start-node", "4"], check=True)
    assert running.returncode != 0, output
    assert "phase 1" in output and "node4" in output, output
    assert "nothing was lost" in output, output
    assert "Traceback" not in output, output
    # Still serving on the source, data untouched.
    assert node3.client().containers.get(name).status == "running"
    assert container.exec_run(["test", "-f", "/data/ready"]).exit_code == 0

    app.up()
    moved = node4.client().containers.get(name)
    assert moved.status == "running"
    assert moved.exec_run(["test", "-f", "/data/ready"]).exit_code == 0
    assert name not in [c.name for c in node3.client().containers.list(all=True)]


def test_preview_of_a_move_changes_nothing(nodes: list[ClusterNode], workdir: Path, stack_name: str, cleanup: list[Pulumi]) -> None:
    store = make(workdir, stack_name, STORE, "node1")
    cleanup.append(store)
    store.up()
    before = node_state(nodes)
    store.config({"node": "node2"})
    preview = store.run("preview")
    assert "volume store moves from node1 to node2" in preview.stdout, preview.stdout
    assert "replace" not in preview.stdout.lower().replace("flocker", "")
    assert node_state(nodes) == before


def test_two_moves_in_one_up_run_in_parallel(nodes: list[ClusterNode], workdir: Path, stack_name: str, cleanup: list[Pulumi]) -> None:
    pair = make(workdir, stack_name, PAIR, "node1")
    cleanup.append(pair)
    pair.up()
    node1, node2 = by_name(nodes, "node1"), by_name(nodes, "node2")
    ports = {"alpha": 9201, "beta": 9202}
    blob = "x" * 100_000
    for port in ports.values():
        url = f"http://{node1.address}:{port}"
        eventually(lambda url=url: http_json("GET", url + "/"), what=f"store on port {port} up")
        for i in range(50):  # ~5 MB each, so that each copy takes a moment
            http_json("PUT", f"{url}/docs/_doc/{i}", {"port": port, "blob": blob})

    pair.config({"node": "node2"})
    pair.up()
    alpha, beta = (pair.outputs()[name] for name in ports)
    # Each move started before the other had finished: they ran at the same time.
    assert alpha["started_at"] < beta["finished_at"] and beta["started_at"] < alpha["finished_at"], (alpha, beta)
    for name, port in ports.items():
        hits = http_json("GET", f"http://{node2.address}:{port}/docs/_search?size=100")["hits"]["hits"]
        assert sorted(int(h["_id"]) for h in hits) == list(range(50)), name
        assert {h["_source"]["port"] for h in hits} == {port}, f"{name} holds the other store's documents"
        volume = f"flocker-{stack_name}-{name}"
        assert volume_checksums(node1, volume) == volume_checksums(node2, volume), name
