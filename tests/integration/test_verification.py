"""The verification of a move's copy, driven directly against two real nodes: it must catch
what phase 2 did not make identical, and say what differs."""

from __future__ import annotations

import pytest

from flocker_provider.errors import MoveFailed
from flocker_provider.execution.executor import Engines
from flocker_provider.execution.migration import TransferChannel
from flocker_provider.inputs import node_props, parse_volume
from flocker_provider.planning import labels as L

from .harness import ClusterNode

pytestmark = pytest.mark.cluster


def volume_on(node: ClusterNode, stack: str):
    return parse_volume({"name": "verified", "project": "p", "stack": stack, **node_props(node.provider_node())})


def test_verification_finds_a_difference_the_copy_did_not_fix(nodes: list[ClusterNode], stack_name: str) -> None:
    source, destination = volume_on(nodes[0], stack_name), volume_on(nodes[1], stack_name)
    with Engines() as engines:
        engines[source.node].create_volume(source.name, L.owner_labels(source.owner, L.KIND_VOLUME))
        try:
            nodes[0].client().containers.run(
                "flocker/base:local",
                ["sh", "-c", "mkdir -p /data/sub && echo one > /data/sub/a && echo two > /data/b"],
                volumes={source.name: {"bind": "/data", "mode": "rw"}},
                remove=True,
            )
            with TransferChannel(engines, source, destination) as channel:
                channel.push(final=False, timeout=60)
                channel.push(final=True, timeout=60)
                channel.verify(timeout=60)  # identical: passes
                # Something writes on the destination behind the copy's back.
                assert channel.receiver is not None
                nodes[1].client().containers.get(channel.receiver).exec_run(["sh", "-c", "echo three > /data/sub/a"])
                with pytest.raises(MoveFailed) as failed:
                    channel.verify(timeout=60)
            assert failed.value.node == destination.node.name
            assert "the copy differs from the source: different or only on the source: sub/a" in str(failed.value)
        finally:
            for volume in (source, destination):
                engines[volume.node].remove_volume(volume.name)
