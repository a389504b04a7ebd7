"""A secret from stack config, and an image, node, port and variable from another resource's
Outputs (unknown in a preview), on the real cluster: the secret is nowhere in plain text but in
the container's own environment."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from .harness import STACK_LABEL, ClusterNode, Pulumi, eventually, http_json, ours

pytestmark = pytest.mark.cluster

# The image is the output of a resource of the program's own (a stand-in for one that builds or
# pushes it), so FlockerApplication gets it as an Output, as from pulumi-docker's Image. A new
# revision replaces it: its outputs, and all made of them (the node, an internal port, a
# variable here), are unknown in that preview.
PROGRAM = """
import pulumi
import pulumi.dynamic
from flocker_pulumi import FlockerApplication


class _Built(pulumi.dynamic.ResourceProvider):
    def create(self, props):
        return pulumi.dynamic.CreateResult(id_=f"{props['image']}-{props['revision']}", outs={**props, "ref": props["image"]})

    def diff(self, _id, olds, news):
        replaced = olds.get("revision") != news.get("revision")
        return pulumi.dynamic.DiffResult(changes=replaced, replaces=["revision"] if replaced else [])


class BuiltImage(pulumi.dynamic.Resource):
    ref: pulumi.Output[str]
    revision: pulumi.Output[str]

    def __init__(self, name, image, revision):
        # Not an input: known once made, as a pushed image's digest.
        super().__init__(_Built(), name, {"image": image, "revision": revision, "ref": None})


config = pulumi.Config()
built_level = config.get("level") or "info"
built = BuiltImage("store-image", "flocker/elasticsearch:local", built_level)
store = FlockerApplication(
    "store",
    image=built.ref,
    node=built.ref.apply(lambda _: config.require("node")),
    ports=[{"internal": built.ref.apply(lambda _: 9200), "external": 9311}],
    environment={"DB_PASSWORD": config.require_secret("dbPassword"), "LEVEL": built.ref.apply(lambda _: built_level)},
    volume={"mountpoint": "/var/lib/elasticsearch"},
)
pulumi.export("addresses", store.addresses)
pulumi.export("node", store.node)
pulumi.export("container_id", store.container_id)
"""


def our_labels(nodes: list[ClusterNode], stack: str) -> list[str]:
    """Every label value of every container and volume of the stack, on every node."""
    values = []
    for node in nodes:
        client = node.client()
        for container in client.containers.list(all=True, filters={"label": f"{STACK_LABEL}={stack}"}):
            values += container.labels.values()
        for volume in client.volumes.list(filters={"label": f"{STACK_LABEL}={stack}"}):
            values += (volume.attrs.get("Labels") or {}).values()
    return values


def environment_of(node: ClusterNode, container_id: str) -> list[str]:
    return node.client().containers.get(container_id).attrs["Config"]["Env"]


def test_a_secret_is_in_the_containers_environment_and_nowhere_else(nodes: list[ClusterNode], workdir: Path, stack_name: str) -> None:
    password = f"pw-{secrets.token_hex(8)}"
    pulumi = Pulumi(workdir, stack_name)
    pulumi.write_program(PROGRAM)
    pulumi.init({"node": nodes[0].name})
    pulumi.run("config", "set", "--secret", "dbPassword", password)
    printed: list[str] = []
    try:
        for run in (pulumi.run("preview", "--diff"), pulumi.up()):
            printed += [run.stdout, run.stderr]
        outputs = pulumi.outputs()
        assert outputs["node"] == nodes[0].name
        eventually(lambda: http_json("GET", f"http://{nodes[0].address}:9311/"), what="the store answers")
        assert f"DB_PASSWORD={password}" in environment_of(nodes[0], outputs["container_id"])

        # A change shown by preview, and a move: the destination starts from the spec found on the source.
        pulumi.config({"level": "debug", "node": nodes[1].name})
        preview = pulumi.run("preview", "--diff")
        said = preview.stdout + preview.stderr
        assert "flocker: plan: application store: environment, image, node, ports, volume not known until apply" in said
        assert "flocker: plan: volume store: node not known until apply" in said
        for run in (preview, pulumi.up()):
            printed += [run.stdout, run.stderr]
        outputs = pulumi.outputs()
        assert outputs["node"] == nodes[1].name
        eventually(lambda: http_json("GET", f"http://{nodes[1].address}:9311/"), what="the moved store answers")
        assert {f"DB_PASSWORD={password}", "LEVEL=debug"} <= set(environment_of(nodes[1], outputs["container_id"]))

        exported = pulumi.run("stack", "export").stdout
        shown = pulumi.run("stack", "output", "--json", "--show-secrets=false").stdout
        labels = our_labels(nodes, stack_name)
        assert labels and any(json.dumps("DB_PASSWORD") in value for value in labels), "the spec label names the variable"
        found = {
            "stack export": password in exported,
            "stack output": password in shown,
            "printed by preview and up": any(password in text for text in printed),
            "Docker labels": any(password in value for value in labels),
        }
        assert not any(found.values()), found
        # Secret in the state, not dropped: the export holds it encrypted.
        assert '"DB_PASSWORD": {' in exported or "4dabf18193072939515e22adb298388d" in exported
    finally:
        pulumi.destroy()
    assert all(not items for items in ours(nodes, stack_name).values()), ours(nodes, stack_name)


def test_a_secret_in_an_input_that_fails_its_check_is_not_in_the_error(nodes: list[ClusterNode], workdir: Path, stack_name: str) -> None:
    password = f"pw-{secrets.token_hex(8)}"
    pulumi = Pulumi(workdir, stack_name)
    pulumi.write_program(
        """
import pulumi
from flocker_pulumi import FlockerApplication

config = pulumi.Config()
# A secret where a number belongs: the check failure would quote it.
FlockerApplication("store", image="flocker/elasticsearch:local", node="node1", hold_seconds=config.require_secret("dbPassword"))
"""
    )
    pulumi.init()
    pulumi.run("config", "set", "--secret", "dbPassword", password)
    try:
        failed = pulumi.run("up", "--yes", check=False)
        assert failed.returncode != 0
        said = failed.stdout + failed.stderr
        assert "hold_seconds" in said and "expected seconds between 0 and 3600" in said, said
        assert password not in said, said
    finally:
        pulumi.destroy()
    assert all(not items for items in ours(nodes, stack_name).values()), ours(nodes, stack_name)
