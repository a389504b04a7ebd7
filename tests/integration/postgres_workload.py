"""PostgreSQL 15 (the flocker/postgres:local image) as a workload for tests and benchmarks.

Endpoints are ``ADDRESS:PORT`` strings, as for ``harness.Writer``. The database is the
``postgres`` one, user ``postgres``; the image trusts every connection (a local test cluster).

- ``prepare(endpoint, scale)``: pgbench's tables, as ``pgbench -i -s SCALE`` makes them,
  and a ``commits`` table for the ``Committer``.
- ``Committer``: one row per transaction; every acknowledged id must survive.
- ``Updater``: random deltas to random accounts; ``SUM(abalance)`` must be what was
  acknowledged (give or take the transactions whose answer was lost, see ``in_doubt``).
- ``missing_commits``, ``balance_sum``, ``amcheck``: the checks after a move or restart.
- ``run_client``: a program of the image (pgbench, pg_amcheck, psql) in a throw-away container.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from typing import TYPE_CHECKING, Any

import pg8000.native

if TYPE_CHECKING:
    from .harness import ClusterNode

IMAGE = "flocker/postgres:local"
PGDATA = "/var/lib/postgresql/data"  # the volume's mountpoint in the image
PORT = 5432
USER = "postgres"
DATABASE = "postgres"
# Short, so that a move's outage shows as the gap between acknowledgements rather than
# hiding in one long wait on a dead socket.
TIMEOUT = 3.0

# pgbench -i's layout (PostgreSQL 15, src/bin/pgbench/pgbench.c): branches, 10 tellers and
# 100,000 accounts per unit of scale; aid is a bigint from scale 20,000 on.
TELLERS = 10
ACCOUNTS = 100_000


def accounts(scale: int) -> int:
    return ACCOUNTS * scale


def connect(endpoint: str, timeout: float = TIMEOUT) -> pg8000.native.Connection:
    host, port = endpoint.rsplit(":", 1)
    return pg8000.native.Connection(USER, host=host, port=int(port), database=DATABASE, timeout=timeout, application_name="flocker-test")


def query(endpoint: str, sql: str, timeout: float = 60, **params: Any) -> list[list[Any]]:
    """One statement on a connection of its own (the checks run after the clients stopped)."""
    conn = connect(endpoint, timeout)
    try:
        return conn.run(sql, **params)
    finally:
        conn.close()


def wait_ready(endpoint: str, timeout: float = 60) -> None:
    """Until the server answers a query: a first start runs initdb before it listens."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            query(endpoint, "SELECT 1", timeout=TIMEOUT)
            return
        except (pg8000.native.Error, OSError) as exc:
            if time.monotonic() > deadline:
                raise AssertionError(f"PostgreSQL at {endpoint} not ready within {timeout}s: {exc}") from exc
            time.sleep(0.2)


def prepare(endpoint: str, scale: int) -> None:
    """What ``pgbench -i -s SCALE -I dtGvp`` does (drop, create, generate on the server,
    vacuum, primary keys), and an empty ``commits`` table.

    By SQL rather than by pgbench itself: it needs only the endpoint, not a node to run a
    client container on, and the tables are the same (``run_client(node, "pgbench", ...)``
    runs pgbench's own transactions against them).
    """
    aid = "bigint" if scale >= 20_000 else "int"
    conn = connect(endpoint, timeout=3600)  # scale 60 generates ~1 GB
    try:
        conn.run("DROP TABLE IF EXISTS pgbench_accounts, pgbench_branches, pgbench_history, pgbench_tellers, commits")
        conn.run(f"CREATE TABLE pgbench_history (tid int, bid int, aid {aid}, delta int, mtime timestamp, filler char(22))")
        conn.run("CREATE TABLE pgbench_tellers (tid int not null, bid int, tbalance int, filler char(84)) WITH (fillfactor=100)")
        conn.run(f"CREATE TABLE pgbench_accounts (aid {aid} not null, bid int, abalance int, filler char(84)) WITH (fillfactor=100)")
        conn.run("CREATE TABLE pgbench_branches (bid int not null, bbalance int, filler char(88)) WITH (fillfactor=100)")
        conn.run("BEGIN")
        conn.run("INSERT INTO pgbench_branches (bid, bbalance) SELECT bid, 0 FROM generate_series(1, :n) AS bid", n=scale)
        conn.run(
            "INSERT INTO pgbench_tellers (tid, bid, tbalance) SELECT tid, (tid - 1) / :per + 1, 0 FROM generate_series(1, :n) AS tid",
            per=TELLERS,
            n=TELLERS * scale,
        )
        conn.run(
            "INSERT INTO pgbench_accounts (aid, bid, abalance, filler)"
            " SELECT aid, (aid - 1) / :per + 1, 0, '' FROM generate_series(1, :n) AS aid",
            per=ACCOUNTS,
            n=accounts(scale),
        )
        conn.run("COMMIT")
        for table in ("pgbench_branches", "pgbench_tellers", "pgbench_accounts", "pgbench_history"):
            conn.run(f"VACUUM ANALYZE {table}")
        conn.run("ALTER TABLE pgbench_branches ADD PRIMARY KEY (bid)")
        conn.run("ALTER TABLE pgbench_tellers ADD PRIMARY KEY (tid)")
        conn.run("ALTER TABLE pgbench_accounts ADD PRIMARY KEY (aid)")
        conn.run("CREATE TABLE commits (id bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())")
    finally:
        conn.close()


class _Client(threading.Thread):
    """One transaction after another, on one connection, to the first endpoint that answers.

    Like ``harness.Writer``: ``served`` holds the ``time.monotonic()`` of every
    acknowledgement, so the outage of a move is the longest gap between two. A transaction
    whose statement was sent but whose answer never came (the server stopped, the
    connection broke) may or may not have committed: it goes to ``in_doubt``, not to the
    acknowledged ones, and the client reconnects.
    """

    def __init__(self, endpoints: list[str], timeout: float = TIMEOUT, seed: int | None = None) -> None:
        super().__init__(daemon=True)
        self.endpoints = endpoints
        self.timeout = timeout
        self.random = random.Random(seed)
        self.served: list[float] = []
        self.connections = 0  # made, the first one included
        self.errors: list[str] = []  # the last few, for an assertion's message
        self.stop = threading.Event()

    def _next(self) -> Any:
        raise NotImplementedError

    def _execute(self, conn: pg8000.native.Connection, value: Any) -> None:
        raise NotImplementedError

    def _acknowledged(self, value: Any) -> None:
        raise NotImplementedError

    def _unknown(self, value: Any) -> None:
        raise NotImplementedError

    def _connect(self) -> pg8000.native.Connection | None:
        for endpoint in self.endpoints:
            try:
                return connect(endpoint, self.timeout)
            except (pg8000.native.Error, OSError) as exc:
                self._note(exc)
        return None

    def _note(self, exc: BaseException) -> None:
        self.errors = [*self.errors[-4:], f"{type(exc).__name__}: {exc}"]

    def run(self) -> None:
        conn: pg8000.native.Connection | None = None
        while not self.stop.is_set():
            if conn is None:
                conn = self._connect()
                if conn is None:
                    time.sleep(0.05)
                    continue
                self.connections += 1
            value = self._next()
            try:
                self._execute(conn, value)
            # Whatever failed after the statement was sent: even an error from the server
            # (a fast shutdown's "terminating connection") may come after the commit.
            except (pg8000.native.Error, OSError) as exc:
                self._note(exc)
                self._unknown(value)
                with contextlib.suppress(Exception):
                    conn.close()
                conn = None
                continue
            self._acknowledged(value)
            self.served.append(time.monotonic())
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def served_since(self, moment: float) -> bool:
        return bool(self.served) and self.served[-1] > moment

    def outage(self) -> float:
        """The longest time between two acknowledged transactions."""
        return max((b - a for a, b in zip(self.served, self.served[1:], strict=False)), default=0.0)


class Committer(_Client):
    """Inserts one row into ``commits`` per transaction (autocommit); a new id each attempt,
    so a retry never meets a row an unacknowledged attempt may have committed."""

    def __init__(self, endpoints: list[str], timeout: float = TIMEOUT) -> None:
        super().__init__(endpoints, timeout)
        self.acknowledged: list[int] = []
        self.in_doubt: list[int] = []
        self._id = 0

    def _next(self) -> int:
        self._id += 1
        return self._id

    def _execute(self, conn: pg8000.native.Connection, value: int) -> None:
        conn.run("INSERT INTO commits (id) VALUES (:id)", id=value)

    def _acknowledged(self, value: int) -> None:
        self.acknowledged.append(value)

    def _unknown(self, value: int) -> None:
        self.in_doubt.append(value)


class Updater(_Client):
    """Adds a random delta (-1000..1000) to the balance of a random account per transaction."""

    def __init__(self, endpoints: list[str], accounts: int, timeout: float = TIMEOUT, seed: int | None = None) -> None:
        super().__init__(endpoints, timeout, seed)
        self.accounts = accounts
        self.acknowledged = 0  # transactions
        self.acknowledged_sum = 0
        self.in_doubt: list[int] = []  # deltas

    def _next(self) -> tuple[int, int]:
        return self.random.randint(1, self.accounts), self.random.randint(-1000, 1000)

    def _execute(self, conn: pg8000.native.Connection, value: tuple[int, int]) -> None:
        aid, delta = value
        conn.run("UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid", delta=delta, aid=aid)

    def _acknowledged(self, value: tuple[int, int]) -> None:
        self.acknowledged += 1
        self.acknowledged_sum += value[1]

    def _unknown(self, value: tuple[int, int]) -> None:
        self.in_doubt.append(value[1])

    def explains(self, total: int) -> bool:
        """Whether ``total`` (``balance_sum``) is the acknowledged sum plus the deltas of some
        of the transactions in doubt: nothing acknowledged lost, nothing made up."""
        reachable = {0}
        for delta in self.in_doubt:  # one or two per outage: the set stays small
            reachable |= {s + delta for s in reachable}
        return total - self.acknowledged_sum in reachable


def missing_commits(endpoint: str, committer: Committer) -> list[int]:
    """The committer's acknowledged ids that are not in the table."""
    found = {row[0] for row in query(endpoint, "SELECT id FROM commits")}
    return sorted(set(committer.acknowledged) - found)


def balance_sum(endpoint: str) -> int:
    """SUM(abalance) over all accounts: 0 after ``prepare``."""
    return int(query(endpoint, "SELECT coalesce(sum(abalance), 0) FROM pgbench_accounts")[0][0])


def amcheck(endpoint: str, heapallindexed: bool = True) -> list[str]:
    """What the amcheck extension finds wrong, as pg_amcheck checks by default: every
    permanent table's heap (``verify_heapam``) and every valid B-tree index
    (``bt_index_check``; with ``heapallindexed``, also that each heap tuple is in it).
    Empty when all is well."""
    conn = connect(endpoint, timeout=3600)
    problems: list[str] = []
    try:
        conn.run("CREATE EXTENSION IF NOT EXISTS amcheck")
        tables = conn.run("SELECT oid, oid::regclass::text FROM pg_class WHERE relkind IN ('r', 'm', 't') AND relpersistence = 'p'")
        for oid, name in tables:
            try:
                for block, offset, attribute, message in conn.run("SELECT blkno, offnum, attnum, msg FROM verify_heapam(:oid)", oid=oid):
                    problems.append(f"{name} block {block} offset {offset} attribute {attribute}: {message}")
            except pg8000.native.DatabaseError as exc:
                problems.append(f"{name}: {exc}")
        indexes = conn.run(
            "SELECT c.oid, c.oid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_am am ON am.oid = c.relam WHERE am.amname = 'btree' AND c.relpersistence = 'p' AND i.indisvalid AND i.indisready"
        )
        for oid, name in indexes:
            try:
                conn.run("SELECT bt_index_check(:oid, :all)", oid=oid, all=heapallindexed)
            except pg8000.native.DatabaseError as exc:
                problems.append(f"{name}: {exc}")
    finally:
        conn.close()
    return problems


def run_client(node: ClusterNode, *argv: str) -> str:
    """``argv`` (pgbench, pg_amcheck, psql, ...) in a throw-away container of the image on
    ``node``'s host network; its output. Raises docker.errors.ContainerError if it fails."""
    output = node.client().containers.run(IMAGE, list(argv), network_mode="host", remove=True, stdout=True, stderr=True)
    return output.decode()


def client_args(endpoint: str) -> list[str]:
    """The connection options of libpq's programs for ``endpoint``."""
    host, port = endpoint.rsplit(":", 1)
    return ["-h", host, "-p", port, "-U", USER]
