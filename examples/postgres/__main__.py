"""PostgreSQL with its data on a Flocker volume, reachable on port 5432 of every node.

    pulumi config set node node2 && pulumi up      # moves it, with every committed transaction

A move copies the volume while the database serves (pre-copy rounds send the pages it wrote
since the last round), has it write its dirty pages (CHECKPOINT, the flush command) and copies
them too, stops it with SIGINT (a fast shutdown: it waits for no client), sends what its
shutdown checkpoint wrote since, and starts it on the new node; clients of any node's port
5432 are held meanwhile, then reach it there.
"""

import pulumi

from flocker_pulumi import FlockerApplication

config = pulumi.Config()
# The server's settings on its command line, e.g. `pulumi config set sharedBuffers 1GB`.
settings = {"shared_buffers": config.get("sharedBuffers")}
database = FlockerApplication(
    "postgres",
    image=config.get("image") or "flocker/postgres:local",
    node=config.get("node") or "node1",
    command=["postgres", *[arg for key, value in settings.items() if value for arg in ("-c", f"{key}={value}")]],
    ports=[{"internal": 5432, "external": 5432}],
    volume={"mountpoint": "/var/lib/postgresql/data"},
    # A checkpoint while it still serves: its shutdown then writes (and the move copies) only
    # what changed since, not every dirty page of shared_buffers.
    flush_command=["psql", "-U", "postgres", "-c", "CHECKPOINT"],
)
pulumi.export("node", database.node)
pulumi.export("addresses", database.addresses)
pulumi.export("last_move", database.volume.last_move)
