"""Foreseeable failures reach the user of `pulumi up` as one message, without a Python traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from .harness import ClusterNode, Pulumi, ours

pytestmark = pytest.mark.cluster

# An image no node has and no registry serves: the local cluster has no registry at all.
GHOST = """
from flocker_pulumi import FlockerApplication

FlockerApplication("ghost", image="flocker/none:local", node="node2", ports=[{"internal": 80, "external": 18081}])
"""


def test_an_image_that_is_nowhere_fails_up_with_one_line_and_no_traceback(nodes: list[ClusterNode], workdir: Path, stack_name: str) -> None:
    pulumi = Pulumi(workdir, stack_name)
    pulumi.write_program(GHOST)
    pulumi.init()
    try:
        failed = pulumi.up(check=False)
        output = failed.stdout + failed.stderr
        assert failed.returncode != 0, output
        assert "Traceback" not in output, output
        lines = [line for line in output.splitlines() if "image flocker/none:local is not on the node" in line]
        assert lines, output
        # The whole message on one line: the resource, the step and its node, why, what was undone, what to do.
        for line in lines:
            message = line[line.index("application ghost: ") :]
            assert message.startswith(
                f"application ghost: step 'start flocker-{stack_name}-ghost (flocker/none:local) on node2' failed: "
                "node node2: image flocker/none:local is not on the node and could not be pulled: "
            ), line
            assert "what it had started was removed again. What to do: put the image on the node" in message, line
            assert message.endswith("then run `pulumi up` again"), line
        assert all(not items for items in ours(nodes, stack_name).values()), ours(nodes, stack_name)
    finally:
        pulumi.destroy()
