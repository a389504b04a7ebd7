"""PostgreSQL moved by `pulumi up` under a committing client and random updates: every
acknowledged commit arrives, the data is sound, and phase 2 sends only what changed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from .harness import REPO, ClusterNode, by_name, eventually, make
from .postgres_workload import Committer, Updater, accounts, amcheck, balance_sum, missing_commits, prepare, query, wait_ready

pytestmark = pytest.mark.cluster

# The example's program, as a user runs it.
POSTGRES = (REPO / "examples" / "postgres" / "__main__.py").read_text()
SCALE = 5  # pgbench's scale: 500,000 accounts, ~80 MB of database


def test_postgres_moves_with_every_acknowledged_commit_and_a_small_phase_2(
    nodes: list[ClusterNode], workdir: Path, stack_name: str
) -> None:
    db = make(workdir, stack_name, POSTGRES, "node1")
    # A buffer cache smaller than the database, as in production: the pages a stop's
    # checkpoint flushes (all that were dirty in it) are then a part of the database.
    db.config({"sharedBuffers": "16MB"})
    # Clients go through a third node, as an application elsewhere in the cluster would.
    through = f"{by_name(nodes, 'node3').address}:5432"
    committer, updater = Committer([through]), Updater([through], accounts(SCALE), seed=16)
    try:
        db.up()
        wait_ready(through, timeout=120)
        prepare(through, SCALE)
        query(through, "CHECKPOINT")  # the load's own writes (and hint bits) are on disk before the move
        committer.start()
        updater.start()
        eventually(
            lambda: len(committer.acknowledged) > 200 and updater.acknowledged > 200, timeout=60, what="transactions before the move"
        )

        db.config({"node": "node2"})
        moved = db.up()
        after = time.monotonic()
        eventually(lambda: committer.served_since(after) and updater.served_since(after), timeout=60, what="transactions after the move")
        for client in (committer, updater):
            client.stop.set()
            client.join()

        assert "moves from node1 to node2" in moved.stdout
        assert "phase 2 predicted" in moved.stdout and "phase 2: read" in moved.stdout, moved.stdout
        # The example's flush command (CHECKPOINT) ran in the container, and a round after it.
        assert "move postgres: flushed " in moved.stdout and "warning" not in moved.stdout, moved.stdout
        at_destination = f"{by_name(nodes, 'node2').address}:5432"
        assert missing_commits(at_destination, committer) == []
        total = balance_sum(at_destination)
        assert updater.explains(total), (total, updater.acknowledged_sum, updater.in_doubt)
        assert amcheck(at_destination) == []

        move = db.outputs()["last_move"]
        phase2 = next(r for r in move["rounds"] if r["final"])
        # Random page writes touch every file, so phase 2 reads them all (rsync then sent
        # nearly all of them again); only the blocks PostgreSQL wrote since the last round go.
        assert phase2["files_read"] > 0 and phase2["bytes_sent"] < phase2["total_size"] / 4, (move["rounds"], moved.stdout)
        assert phase2["bytes_read"] <= phase2["total_size"], move
        if by_name(nodes, "node1").volumes_fs == "btrfs":
            # The source helper could search the extents, so changed files are reread only where
            # they changed (whether a file was, depends on how much of it the checkpoint wrote).
            assert all(r["extents"] for r in move["rounds"] if r["method"] == "delta"), move
    finally:
        for client in (committer, updater):
            client.stop.set()
        db.destroy()
