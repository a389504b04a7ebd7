"""The article's story with Flocker's own files, through the `flocker-deploy` command.

Deploy ELK from application.yml/deployment.yml (OpenSearch, rsyslog and the log page), index
log lines, edit deployment.yml as the article does (Elasticsearch from the first node to the
fourth), preview (nothing may change), re-run while lines keep coming (the data moves along,
no line is lost), destroy.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import BIN, MANAGED, REPO, STACK_LABEL, ClusterNode, eventually, ours, send_lines
from .test_elk_example import INDEXED_WITHIN, LineSender, holds_exactly, page_listing

pytestmark = pytest.mark.cluster

APPLICATION_YML = (REPO / "examples" / "elk" / "application.yml").read_text()


def deployment_yml(placement: dict[str, list[str]]) -> str:
    lines = ['"version": 1', '"nodes":']
    lines += [f'  "{address}": [{", ".join(f"{a!r}" for a in apps)}]' for address, apps in placement.items()]
    return "\n".join(lines) + "\n"


class FlockerDeploy:
    """The console script with its own state directory and stack: runs never share state."""

    def __init__(self, workdir: Path, stack: str) -> None:
        self.workdir = workdir
        self.stack = stack
        self.deployment = workdir / "deployment.yml"
        self.application = workdir / "application.yml"
        self.application.write_text(APPLICATION_YML)
        self.env = {**os.environ, "PULUMI_CONFIG_PASSPHRASE": "", "PULUMI_SKIP_UPDATE_CHECK": "true"}

    def run(self, *options: str, files: bool = True, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        command = [str(BIN / "flocker-deploy"), "--state-dir", str(self.workdir / "state"), "--stack", self.stack, *options]
        if files:
            command += [str(self.deployment), str(self.application)]
        return subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout)

    def deploy(self, *options: str) -> subprocess.CompletedProcess[str]:
        result = self.run(*options)
        assert result.returncode == 0, f"flocker-deploy {' '.join(options)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        return result


@pytest.fixture
def flocker_deploy(nodes: list[ClusterNode], workdir: Path, stack_name: str) -> Iterator[FlockerDeploy]:
    runner = FlockerDeploy(workdir, stack_name)
    try:
        yield runner
    finally:
        result = runner.run("--destroy", files=False)
        left = ours(nodes, stack_name)
        try:
            assert result.returncode == 0, result.stdout + result.stderr
            assert all(not items for items in left.values()), left
        finally:
            remove_leftovers(nodes, stack_name)


def remove_leftovers(nodes: list[ClusterNode], stack: str) -> None:
    """Whatever destroy missed of this test's own stack (found by its unique label): the cluster is shared."""
    filters = {"label": [f"{MANAGED}=true", f"{STACK_LABEL}={stack}"]}
    for node in nodes:
        client = node.client()
        for container in client.containers.list(all=True, filters=filters):
            container.remove(force=True)
        for volume in client.volumes.list(filters=filters):
            volume.remove(force=True)


def where(stdout: str) -> dict[str, tuple[str, str]]:
    """The "what runs where" table: application -> (node, addresses)."""
    table = stdout[stdout.rindex("what runs where:") :].splitlines()[2:]
    return {name: (node, addresses) for name, node, addresses in (re.split(r"\s{2,}", line, maxsplit=2) for line in table if line)}


def snapshot(nodes: list[ClusterNode], stack: str) -> dict[str, list[tuple[str, ...]]]:
    """`docker ps -a` and `docker volume ls` of every node, less other stacks' objects (other tests may run)."""

    def ours_or_unlabelled(labels: dict[str, str] | None) -> bool:
        labels = labels or {}
        return labels.get(MANAGED) != "true" or labels.get(STACK_LABEL) == stack

    state = {}
    for node in nodes:
        client = node.client()
        items = [("container", c.id, c.name, c.status) for c in client.containers.list(all=True) if ours_or_unlabelled(c.labels)]
        items += [("volume", v.name, "", "") for v in client.volumes.list() if ours_or_unlabelled(v.attrs.get("Labels"))]
        state[node.name] = sorted(items)
    return state


def test_deploy_index_move_with_the_data_and_destroy(nodes: list[ClusterNode], flocker_deploy: FlockerDeploy, stack_name: str) -> None:
    if len(nodes) < 3:
        pytest.skip(f"the article's stack needs 3 nodes, the cluster has {len(nodes)}")
    node_of = {n.address: n.name for n in nodes}
    es_from, ls_at, kb_at = (n.address for n in nodes[:3])

    flocker_deploy.deployment.write_text(deployment_yml({es_from: ["elasticsearch"], ls_at: ["logstash"], kb_at: ["kibana"]}))
    result = flocker_deploy.deploy()
    assert where(result.stdout) == {
        "elasticsearch": (node_of[es_from], f"{es_from}:9200"),
        "kibana": (node_of[kb_at], f"{kb_at}:80"),
        "logstash": (node_of[ls_at], f"{ls_at}:5000"),
    }, result.stdout

    # Log lines go in through Logstash (rsyslog) and reach Elasticsearch (OpenSearch) over the `es` link.
    # Wait for the port before sending once: a retried send could index lines twice.
    eventually(lambda: socket.create_connection((ls_at, 5000), timeout=2).close() or True, what="logstash listening")
    sent = [f"flocker-deploy {stack_name} line {i}" for i in range(20)]
    send_lines(ls_at, sent)
    eventually(lambda: holds_exactly(es_from, sent), timeout=INDEXED_WITHIN, what=f"{len(sent)} lines stored on {es_from}")

    if len(nodes) < 4:
        pytest.skip(f"the article's move needs a 4th node, the cluster has {len(nodes)} (NODES=4 make cluster)")
    es_to = nodes[3].address

    # The article's OLD -> NEW: the first node keeps its entry, with nothing on it.
    flocker_deploy.deployment.write_text(deployment_yml({es_from: [], ls_at: ["logstash"], kb_at: ["kibana"], es_to: ["elasticsearch"]}))
    before = snapshot(nodes, stack_name)
    preview = flocker_deploy.deploy("--preview")
    assert "nothing was changed" in preview.stdout, preview.stdout
    assert re.search(r"^preview: .*to update", preview.stdout, re.MULTILINE), preview.stdout
    assert snapshot(nodes, stack_name) == before

    # Lines keep coming to Logstash while Elasticsearch moves: it holds them until the store is back.
    sender = LineSender(ls_at, f"flocker-deploy {stack_name} during the move", sent)
    sender.start()
    try:
        moved = flocker_deploy.deploy()
    finally:
        sender.stop.set()
        sender.join(30)
    assert sender.errors == [], sender.errors
    assert where(moved.stdout)["elasticsearch"] == (node_of[es_to], f"{es_to}:9200"), moved.stdout
    assert sum(1 for line in sent if " during the move " in line) > 10, sent
    after = [f"flocker-deploy {stack_name} after the move {i}" for i in range(5)]
    send_lines(ls_at, after)
    sent += after
    # Every line once, at the new node and at the old address (every node routes 9200), and on the page.
    eventually(lambda: holds_exactly(es_to, sent), timeout=INDEXED_WITHIN, what=f"{len(sent)} lines stored on {es_to}")
    assert holds_exactly(es_from, sent)
    assert page_listing(kb_at, sent), "lines the page does not list"
