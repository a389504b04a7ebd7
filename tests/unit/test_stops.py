"""A move's stops against a stand-in engine: the step ends when the application's processes
are gone, and the engine's stop is waited for before the source is cleaned up."""

import contextlib
import threading
from collections.abc import Iterator

import pytest

from flocker_provider.execution.executor import Engines
from flocker_provider.execution.move_context import Stops
from flocker_provider.planning.models import Node
from flocker_provider.planning.steps import FinishStop, StopApplication, WatchExit

NODE = Node("node1", "10.0.0.1", "tcp://10.0.0.1:2375")
STEP = StopApplication(NODE, "flocker-dev-es")
WATCH = WatchExit(NODE, "flocker-dev-es")


class FakeWatch:
    def __init__(self, watching: bool, sees_exit: bool) -> None:
        self._watching, self._sees_exit = watching, sees_exit
        self.closed = False

    def watching(self) -> bool:
        return self._watching

    def wait(self, timeout: float) -> bool:
        return self._sees_exit

    def close(self) -> None:
        self.closed = True


class FakeEngine:
    """Its stop returns only once ``finish`` is set (the engine's network teardown)."""

    def __init__(self, watch: FakeWatch | None, fail: bool = False) -> None:
        self.watch = watch
        self.fail = fail
        self.finish = threading.Event()
        self.stopped: list[str] = []

    def watch_exit(self, name: str) -> FakeWatch | None:
        return self.watch

    def stop_container(self, name: str, timeout: int) -> None:
        assert self.finish.wait(5)
        if self.fail:
            raise RuntimeError("stop failed")
        self.stopped.append(name)


def engines_of(engine: FakeEngine) -> Engines:
    @contextlib.contextmanager
    def opener(node: Node) -> Iterator[FakeEngine]:
        yield engine

    return Engines(opener)  # type: ignore[arg-type]


def stop_in_thread(stops: Stops) -> threading.Thread:
    thread = threading.Thread(target=stops.stop, args=(STEP,), daemon=True)
    thread.start()
    return thread


def test_the_step_ends_when_the_processes_are_gone_and_the_handoff_waits_for_the_engine() -> None:
    engine = FakeEngine(FakeWatch(watching=True, sees_exit=True))
    with engines_of(engine) as engines:
        stops = Stops(engines)
        stops.watch(WATCH)
        stop_in_thread(stops).join(2)  # ended while the engine's stop is still going on
        assert stops.stopped == [STEP] and engine.stopped == []
        settled = threading.Thread(target=stops.settle, daemon=True)
        settled.start()
        settled.join(0.2)
        assert settled.is_alive()  # removing the source waits for it
        engine.finish.set()
        settled.join(2)
        assert engine.stopped == [STEP.container]
        stops.close()
    assert engine.watch is not None and engine.watch.closed  # its connection goes back once used


@pytest.mark.parametrize(
    "watch",
    [
        None,  # no shell in the image, or a transport that cannot hijack
        FakeWatch(watching=False, sees_exit=True),  # ended before the stop: an earlier crash
        FakeWatch(watching=True, sees_exit=False),  # ended other than by the kernel's SIGKILL
    ],
)
def test_without_a_watch_that_saw_the_end_the_step_waits_for_the_engine(watch: FakeWatch | None) -> None:
    engine = FakeEngine(watch)
    with engines_of(engine) as engines:
        stops = Stops(engines)
        stops.watch(WATCH)
        thread = stop_in_thread(stops)
        thread.join(0.2)
        assert thread.is_alive()
        engine.finish.set()
        thread.join(2)
        assert engine.stopped == [STEP.container]
        stops.close()


def test_finishing_a_stop_waits_for_the_engine_s_stop_of_that_container_only() -> None:
    engine = FakeEngine(FakeWatch(watching=True, sees_exit=True))
    with engines_of(engine) as engines:
        stops = Stops(engines)
        stops.finish(FinishStop(NODE, "flocker-dev-other"))  # none asked for: nothing to wait for
        stops.watch(WATCH)
        stop_in_thread(stops).join(2)
        finished = threading.Thread(target=stops.finish, args=(FinishStop(NODE, STEP.container),), daemon=True)
        finished.start()
        finished.join(0.2)
        assert finished.is_alive()  # the plan's removal of the source's container waits for it
        engine.finish.set()
        finished.join(2)
        assert not finished.is_alive() and engine.stopped == [STEP.container]
        stops.close()


def test_a_failed_stop_is_raised_when_settled() -> None:
    engine = FakeEngine(FakeWatch(watching=True, sees_exit=True), fail=True)
    with engines_of(engine) as engines:
        stops = Stops(engines)
        stops.watch(WATCH)
        stop_in_thread(stops).join(2)
        engine.finish.set()
        with pytest.raises(RuntimeError, match="stop failed"):
            stops.settle()
        assert stops.stopped == [STEP]  # started again on the source by the failure path
        stops.close()
