"""The PostgreSQL image on a real engine, without Pulumi: `docker stop` with clients connected
is a fast shutdown, and a restart keeps every acknowledged transaction."""

from __future__ import annotations

import time
import uuid

import pytest

from .harness import ClusterNode, eventually
from .postgres_workload import (
    IMAGE,
    PGDATA,
    Committer,
    Updater,
    accounts,
    amcheck,
    balance_sum,
    client_args,
    missing_commits,
    prepare,
    run_client,
    wait_ready,
)

pytestmark = pytest.mark.cluster

HOST_PORT = 15432  # not 5432: a database someone runs on the node by hand keeps its port
# With a client connected, SIGTERM (smart shutdown) would wait out docker's whole timeout;
# SIGINT takes well under a second here. The bound leaves room for a busy machine.
STOP_TIMEOUT = 30
STOP_BOUND = 10


def test_restart_keeps_acknowledged_transactions(nodes: list[ClusterNode]) -> None:
    node = nodes[0]
    client = node.client()
    name = f"pgtest-{uuid.uuid4().hex[:8]}"
    endpoint = f"{node.address}:{HOST_PORT}"
    container = client.containers.run(
        IMAGE, name=name, detach=True, volumes={name: {"bind": PGDATA, "mode": "rw"}}, ports={"5432/tcp": HOST_PORT}
    )
    committer, updater = Committer([endpoint]), Updater([endpoint], accounts(1))

    def stop_clients() -> None:
        for thread in (committer, updater):
            thread.stop.set()
            if thread.is_alive():
                thread.join()

    try:
        wait_ready(endpoint)
        prepare(endpoint, scale=1)
        assert balance_sum(endpoint) == 0
        committer.start()
        updater.start()
        eventually(
            lambda: len(committer.acknowledged) > 200 and updater.acknowledged > 200, timeout=30, what="transactions before the stop"
        )

        started = time.monotonic()
        container.stop(timeout=STOP_TIMEOUT)
        stopped = time.monotonic() - started
        assert stopped < STOP_BOUND, f"docker stop took {stopped:.1f}s: the stop signal is not SIGINT?"
        assert container.wait(timeout=5)["StatusCode"] == 0, container.logs(tail=20).decode()

        container.start()
        restarted = time.monotonic()
        eventually(
            lambda: committer.served_since(restarted) and updater.served_since(restarted),
            timeout=30,
            what="transactions after the restart",
        )
        stop_clients()

        assert missing_commits(endpoint, committer) == []
        total = balance_sum(endpoint)
        assert updater.explains(total), (total, updater.acknowledged_sum, updater.in_doubt)
        assert amcheck(endpoint) == []
        # The image's own programs: pg_amcheck prints nothing when all is well; pgbench runs
        # its select-only script on the tables prepare made.
        assert run_client(node, "pg_amcheck", *client_args(endpoint), "--heapallindexed", "postgres") == ""
        output = run_client(node, "pgbench", *client_args(endpoint), "-n", "-S", "-t", "20", "postgres")
        assert "number of transactions actually processed: 20/20" in output, output
    finally:
        stop_clients()
        container.remove(force=True)
        client.volumes.get(name).remove(force=True)
