"""What a move's steps need beyond the engines, handed to the executor by the move that
owns it (migration.py): the transfer channel, the applications' stops, the report."""

from __future__ import annotations

import contextlib
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from .engine_protocol import ExitWatcher
from .models import Node
from .steps import Step, StopApplication, WatchExit

if TYPE_CHECKING:
    from .executor import Engines

# docker stop's grace period before SIGKILL, and how much longer the end of the
# application's processes may take to be seen before the plain stop is waited for.
STOP_SECONDS = 10
STOP_MARGIN = 20


@dataclass
class MoveReport:
    """Measured facts about one move, kept in the volume's outputs."""

    source: str
    destination: str
    rounds: list[dict] = field(default_factory=list)
    downtime_seconds: float | None = None
    # Seconds per step, to see where a slow move spends its time.
    steps: list[dict] = field(default_factory=list)
    # Wall-clock (epoch) times, comparable across moves and with clients' clocks:
    # they show whether moves in one `pulumi up` ran at the same time.
    started_at: float | None = None
    finished_at: float | None = None

    def as_output(self) -> dict:
        return {
            "from": self.source,
            "to": self.destination,
            "rounds": self.rounds,
            "phase2_bytes_sent": next((r["bytes_sent"] for r in self.rounds if r["final"]), None),
            "downtime_seconds": self.downtime_seconds,
            "steps": self.steps,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


class Transfer(Protocol):
    """The copy of one volume between two nodes for one move (migration.TransferChannel)."""

    label: str
    image: str
    # What the last round of phase 1 predicted phase 2 would take.
    predicted: float | None

    def push(self, final: bool, timeout: float) -> list[dict]: ...

    def arm(self) -> None: ...

    def verify(self, timeout: float) -> None: ...


class Stops:
    """The applications a move stops. Each stop is asked of its engine in the background,
    and the step ends as soon as the application's processes are gone (``ExitWatch``).

    The engine's own work after that (taking the container's network down, 0.2-0.4 s, and
    longer while a big copy loads the node) goes on while phase 2 copies and the
    destination starts, and is waited for before the source's containers are removed. Not
    before the handoff: the data no longer changes once the processes are gone, and
    nothing starts them again (the engine marks a stop as asked for before it signals, so
    no restart policy applies). An application whose end cannot be watched (no shell in
    its image) is waited for the plain way."""

    def __init__(self, engines: Engines) -> None:
        self._engines = engines
        self._watches: dict[tuple[Node, str], ExitWatcher | None] = {}
        self._pool = ThreadPoolExecutor(max_workers=4)
        self._pending: list[Future[None]] = []
        self.stopped: list[StopApplication] = []

    def watch(self, step: WatchExit) -> None:
        """Watch the application from now on (an exec's start, 40-100 ms, is not downtime yet)."""
        self._watches[(step.node, step.container)] = self._engines[step.node].watch_exit(step.container)

    def stop(self, step: StopApplication) -> None:
        watch = self._watches.pop((step.node, step.container), None)
        # A watch that ended already saw an earlier end (a crash the engine restarted from).
        watching = watch is not None and watch.watching()
        stopping = self._pool.submit(self._engines[step.node].stop_container, step.container, STOP_SECONDS)
        self.stopped.append(step)
        self._pending.append(stopping)
        try:
            if watching and watch is not None and watch.wait(STOP_SECONDS + STOP_MARGIN):
                return
        finally:
            if watch is not None:
                watch.close()
        stopping.result()

    def settle(self) -> None:
        """Every stop the engines were asked for has returned; the first failure is raised."""
        pending, self._pending = self._pending, []
        for stopping in pending:
            stopping.result()

    def close(self) -> None:
        for watch in self._watches.values():
            if watch is not None:
                watch.close()
        with contextlib.suppress(Exception):  # reported by the step that failed
            self.settle()
        self._pool.shutdown(wait=True)


@dataclass
class MoveContext:
    """One move's run: what its steps use, and what it measured and did so far."""

    channel: Transfer
    stops: Stops
    report: MoveReport
    # The steps that ran to their end, in order: a failure after the handoff undoes nothing.
    done: list[Step] = field(default_factory=list)
    # When the first stop was asked for: the application stops serving during it, so the
    # downtime runs from there to the end of the destination's wait.
    stopped_at: float | None = None
