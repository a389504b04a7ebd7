"""The ELK example, on the real cluster, through the real Pulumi CLI (issue: foundation)."""

from __future__ import annotations

import re
import socket
import subprocess
from pathlib import Path

import pytest

from .harness import REPO, ClusterNode, Pulumi, es_count, eventually, http_json, http_text, ours, send_lines

pytestmark = pytest.mark.cluster


@pytest.fixture
def elk(nodes: list[ClusterNode], workdir: Path, stack_name: str):
    # The repository's own project, as `make up` and a user's `pulumi up` run it; only
    # the state (a file backend in workdir) and the stack are the test's own.
    pulumi = Pulumi(workdir, stack_name, project_dir=REPO)
    yield pulumi
    pulumi.destroy()
    (REPO / f"Pulumi.{stack_name}.yaml").unlink(missing_ok=True)
    assert all(not items for items in ours(nodes, stack_name).values()), ours(nodes, stack_name)


def address(nodes: list[ClusterNode], name: str) -> str:
    return next(n.address for n in nodes if n.name == name)


def test_elk_up_preview_refresh_destroy(elk: Pulumi, nodes: list[ClusterNode], stack_name: str) -> None:
    # `make up` runs this script: it must deploy and say where each service answers.
    made = subprocess.run(["bash", "scripts/elk-up.sh", stack_name], cwd=REPO, env=elk.env, capture_output=True, text=True)
    assert made.returncode == 0, made.stdout + made.stderr
    for service, node, port in (("elasticsearch", "node1", 9200), ("logstash", "node2", 5000), ("kibana", "node3", 80)):
        assert re.search(rf"^  {service} +on {node} +at {address(nodes, node)}:{port}$", made.stdout, re.MULTILINE), made.stdout
    outputs = elk.outputs()
    assert (outputs["elasticsearch_node"], outputs["logstash_node"], outputs["kibana_node"]) == (
        "node1",
        "node2",
        "node3",
    )
    placed = ours(nodes, stack_name)
    assert f"container:flocker-{stack_name}-elasticsearch" in placed["node1"]
    assert f"volume:flocker-{stack_name}-elasticsearch" in placed["node1"]
    assert f"container:flocker-{stack_name}-logstash" in placed["node2"]
    assert f"container:flocker-{stack_name}-kibana" in placed["node3"]

    es, ls, kb = address(nodes, "node1"), address(nodes, "node2"), address(nodes, "node3")
    assert outputs["elasticsearch_addresses"] == [f"{es}:9200"]
    eventually(lambda: http_json("GET", f"http://{es}:9200/")["tagline"], what="elasticsearch answering")
    eventually(lambda: socket.create_connection((ls, 5000), timeout=2).close() or True, what="logstash answering")
    eventually(lambda: "<html" in http_text(f"http://{kb}:80/").lower(), what="kibana answering")

    # Lines sent to Logstash on node2 arrive in the store on node1 through the `es` link.
    send_lines(ls, [f"line {i}" for i in range(5)])
    eventually(lambda: es_count(es) == 5, what="5 documents indexed")
    eventually(lambda: "line 4" in http_text(f"http://{kb}:80/"), what="kibana lists the lines")

    # Nothing changed, so a second preview must say so.
    preview = elk.run("preview", "--expect-no-changes", check=False)
    assert preview.returncode == 0, preview.stdout + preview.stderr

    # A container removed by hand: refresh notices, up recreates it.
    node2 = next(n for n in nodes if n.name == "node2").client()
    node2.containers.get(f"flocker-{stack_name}-logstash").remove(force=True)
    refresh = elk.run("refresh", "--yes", "--skip-preview")
    assert "deleted" in refresh.stdout, refresh.stdout
    elk.up()
    assert node2.containers.get(f"flocker-{stack_name}-logstash").status == "running"

    # The article's move, as code: one line of stack config, and the data goes along.
    if len(nodes) < 4:
        pytest.skip(f"the move needs a 4th node, the cluster has {len(nodes)}")
    es_to = address(nodes, "node4")
    lines = [f"before the move {i}" for i in range(10)]
    send_lines(ls, lines)
    eventually(lambda: es_count(es) == 15, what="15 documents indexed")
    elk.config({"elasticsearchNode": "node4"})
    elk.up()
    assert elk.outputs()["elasticsearch_addresses"] == [f"{es_to}:9200"]
    assert es_count(es_to) == 15
    found = {hit["_source"].get("message") for hit in http_json("GET", f"http://{es_to}:9200/logstash/_search?size=100")["hits"]["hits"]}
    assert {f"line {i}" for i in range(5)} | set(lines) <= found
