"""Secrets from stack config (a variable, the image's tag, a word of the command and of the
health check), and an image, node, port and variable from another resource's Outputs (unknown
in a preview), on the real cluster: the secrets are nowhere in plain text but in the
container itself (its environment, image, command and health check, which Docker shows to
whoever may inspect it), also after moves, which start the destination from them."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from flocker_provider.execution.staging import GATE_ENTRYPOINT
from flocker_provider.planning.containers import SEALED_VARIABLE

from .harness import STACK_LABEL, ClusterNode, Pulumi, eventually, http_json, ours

pytestmark = pytest.mark.cluster

# The image is the output of a resource of the program's own (a stand-in for one that builds or
# pushes it), so FlockerApplication gets it as an Output, as from pulumi-docker's Image. A new
# revision replaces it: its outputs, and all made of them (the node, an internal port, a
# variable here), are unknown in that preview. The image's tag is a secret (the test tags the
# store's image with it on every node), and so are a word of its command (the shell's $0) and
# of its health check.
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
    image=pulumi.Output.all(built.ref, config.require_secret("imageTag")).apply(lambda v: v[0].rsplit(":", 1)[0] + ":" + v[1]),
    node=built.ref.apply(lambda _: config.require("node")),
    ports=[{"internal": built.ref.apply(lambda _: 9200), "external": 9311}],
    environment={"DB_PASSWORD": config.require_secret("dbPassword"), "LEVEL": built.ref.apply(lambda _: built_level)},
    volume={"mountpoint": "/var/lib/elasticsearch"},
    command=["sh", "-c", "exec python3 -u /opt/flocker/elasticsearch/server.py", config.require_secret("commandWord")],
    health_check={"command": config.require_secret("checkWord").apply(lambda word: f"test -n '{word}'")},
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


def test_secrets_are_in_the_container_and_nowhere_else(nodes: list[ClusterNode], workdir: Path, stack_name: str) -> None:
    password, tag, word, check = (f"{what}-{secrets.token_hex(8)}" for what in ("pw", "tag", "word", "check"))
    for node in nodes:
        node.client().images.get("flocker/elasticsearch:local").tag("flocker/elasticsearch", tag=tag)
    pulumi = Pulumi(workdir, stack_name)
    pulumi.write_program(PROGRAM)
    pulumi.init({"node": nodes[0].name})
    for key, value in (("dbPassword", password), ("imageTag", tag), ("commandWord", word), ("checkWord", check)):
        pulumi.run("config", "set", "--secret", key, value)
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

        # A move alone: the destination is started, held at the staging gate, from the spec read
        # back from the source (its sealed image, command and health check), and the
        # application's own update then finds it up to date, not replaced by a plain start.
        pulumi.config({"node": nodes[0].name})
        printed += [(run := pulumi.up()).stdout, run.stderr]
        outputs = pulumi.outputs()
        eventually(lambda: http_json("GET", f"http://{nodes[0].address}:9311/"), what="the store moved back answers")
        moved = nodes[0].client().containers.get(outputs["container_id"]).attrs
        assert moved["Config"]["Entrypoint"] == GATE_ENTRYPOINT, "let through its gate, not started again"
        assert moved["Config"]["Image"] == f"flocker/elasticsearch:{tag}"
        assert moved["Config"]["Cmd"][-1] == word
        assert check in moved["Config"]["Healthcheck"]["Test"][-1]
        assert moved["State"]["Health"]["Status"] == "healthy"
        assert any(entry.startswith(f"{SEALED_VARIABLE}=") for entry in moved["Config"]["Env"])

        exported = pulumi.run("stack", "export").stdout
        shown = pulumi.run("stack", "output", "--json", "--show-secrets=false").stdout
        labels = our_labels(nodes, stack_name)
        assert labels and any(json.dumps("DB_PASSWORD") in value for value in labels), "the spec label names the variable"
        found = {
            (where, secret): [text[max(0, i - 300) : i + 100] for text in texts if (i := text.find(secret)) >= 0]
            for secret in (password, tag, word, check)
            for where, texts in (
                ("stack export", [exported]),
                ("stack output", [shown]),
                ("printed by preview and up", printed),
                ("Docker labels", labels),
            )
        }
        assert not any(found.values()), {key: around for key, around in found.items() if around}
        # Secret in the state, not dropped: the export holds it encrypted.
        assert '"DB_PASSWORD": {' in exported or "4dabf18193072939515e22adb298388d" in exported
    finally:
        pulumi.destroy()
        for node in nodes:
            node.client().images.remove(f"flocker/elasticsearch:{tag}")
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
