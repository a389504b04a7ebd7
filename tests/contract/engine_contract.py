"""One contract for an engine's volumes and containers (``engine_protocol.VolumesAndContainers``):
the in-memory fake (tests/unit/fake_engine.py) and the real DockerNode on a cluster node run
these same tests, so what the fake does is what Docker does (as Flocker's test_docker.py held
its fake and the real client to one suite).

A test module subclasses ``EngineContract`` (as ``Test...``) and defines the ``subject``
fixture. Every name a test makes starts with ``subject.prefix``: on a real node, whatever is
left under it is removed after the test.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

import pytest

from flocker_provider.docker_layer.engine_protocol import VolumesAndContainers
from flocker_provider.errors import ContainerFailed, NotOurs
from flocker_provider.planning import labels as L
from flocker_provider.planning.containers import ContainerSpec, MountedContainer
from flocker_provider.planning.host_port_choice import HOST_PORT_COUNT, HOST_PORT_FIRST
from flocker_provider.planning.models import NodeVolumeState, Owner, Port, RunningContainer

# Ends at once on docker stop's SIGTERM (a shell as process 1 ignores it otherwise, and the
# stop would wait out its grace period).
SLEEPER = ("sh", "-c", "trap 'exit 0' TERM; sleep 300 & wait $!")


@dataclass(frozen=True)
class Subject:
    """An engine under test, with what only its own side can do: make objects of our names
    that flocker-pulumi did not create."""

    engine: VolumesAndContainers
    prefix: str
    image: str
    foreign_container: Callable[[str], None]
    foreign_volume: Callable[[str], None]

    def owner(self, resource: str) -> Owner:
        return Owner(project="contract", stack=self.prefix, resource=resource)

    def spec(self, resource: str, volume: str | None = None, ports: Collection[int] = (), sealed: tuple[str, ...] = ()) -> ContainerSpec:
        return ContainerSpec(
            name=f"{self.prefix}-{resource}",
            image=self.image,
            environment=(("GREETING", "hello"),),
            ports=tuple(Port(internal=port, external=port) for port in ports),
            volume_name=volume,
            mountpoint="/data" if volume else None,
            command=SLEEPER,
            labels=tuple(sorted(L.owner_labels(self.owner(resource), L.KIND_APPLICATION).items())),
            sealed=sealed,
        )


class EngineContract:
    """The tests; the module that runs them provides the ``subject`` fixture."""

    # -- volumes -----------------------------------------------------------------------

    def test_a_created_volume_is_discovered_with_its_owner(self, subject: Subject) -> None:
        engine, name = subject.engine, f"{subject.prefix}-data"
        assert engine.discover_volume(name) == NodeVolumeState(name, exists=False)
        engine.create_volume(name, L.owner_labels(subject.owner("data"), L.KIND_VOLUME))
        engine.create_volume(name, L.owner_labels(subject.owner("data"), L.KIND_VOLUME))  # there already: nothing to do
        assert engine.discover_volume(name) == NodeVolumeState(name, exists=True, retired=False)
        assert engine.volume_owner_is(name, subject.owner("data"))
        assert not engine.volume_owner_is(name, subject.owner("other"))
        assert not engine.volume_owner_is(f"{subject.prefix}-absent", subject.owner("data"))

    def test_a_removed_volume_is_gone_and_removing_it_again_does_nothing(self, subject: Subject) -> None:
        engine, name = subject.engine, f"{subject.prefix}-data"
        engine.create_volume(name, L.owner_labels(subject.owner("data"), L.KIND_VOLUME))
        engine.remove_volume(name)
        assert engine.discover_volume(name) == NodeVolumeState(name, exists=False)
        engine.remove_volume(name)

    @pytest.mark.parametrize("kind", ["retired", "partial"])
    def test_a_marked_copy_is_discovered_as_one_until_made_live_and_goes_with_its_volume(self, subject: Subject, kind: str) -> None:
        """Retired: handed over by a move. Partial: a move's copy not handed over yet."""
        engine, name = subject.engine, f"{subject.prefix}-data"
        labels = L.owner_labels(subject.owner("data"), L.KIND_VOLUME)
        mark = engine.retire_volume if kind == "retired" else engine.mark_partial
        engine.create_volume(name, labels)
        mark(name, subject.image, labels)
        mark(name, subject.image, labels)  # marked already: nothing to do
        assert engine.discover_volume(name) == NodeVolumeState(name, exists=True, **{kind: True})
        engine.make_live(name)
        engine.make_live(name)
        assert engine.discover_volume(name) == NodeVolumeState(name, exists=True)
        mark(name, subject.image, labels)
        engine.remove_volume(name)
        assert engine.discover_volume(name) == NodeVolumeState(name, exists=False)

    def test_a_retirement_made_ahead_marks_nothing_until_the_copy_is_retired(self, subject: Subject) -> None:
        """A move makes the source's retirement marker before its downtime: no mark until
        ``retire_volume`` makes it the one; unused, it goes with ``forget_retirement``, with
        ``make_live`` or with its volume."""
        engine, name = subject.engine, f"{subject.prefix}-data"
        labels = L.owner_labels(subject.owner("data"), L.KIND_VOLUME)
        live, retired = NodeVolumeState(name, exists=True), NodeVolumeState(name, exists=True, retired=True)
        engine.create_volume(name, labels)
        engine.prepare_retirement(name, subject.image, labels)
        engine.prepare_retirement(name, subject.image, labels)  # made already: nothing to do
        assert engine.discover_volume(name) == live
        engine.forget_retirement(name)
        engine.forget_retirement(name)
        assert engine.discover_volume(name) == live
        engine.prepare_retirement(name, subject.image, labels)
        engine.retire_volume(name, subject.image, labels)
        engine.retire_volume(name, subject.image, labels)
        engine.forget_retirement(name)  # used: nothing is left to forget
        engine.prepare_retirement(name, subject.image, labels)  # retired already: nothing to make
        assert engine.discover_volume(name) == retired
        engine.make_live(name)
        assert engine.discover_volume(name) == live
        engine.prepare_retirement(name, subject.image, labels)
        engine.make_live(name)
        engine.prepare_retirement(name, subject.image, labels)
        engine.remove_volume(name)  # it mounts the volume: it goes first
        assert engine.discover_volume(name) == NodeVolumeState(name, exists=False)

    def test_a_volume_we_did_not_create_is_refused_and_left_alone(self, subject: Subject) -> None:
        engine, name = subject.engine, f"{subject.prefix}-theirs"
        subject.foreign_volume(name)
        for touch in (
            lambda: engine.discover_volume(name),
            lambda: engine.create_volume(name, L.owner_labels(subject.owner("theirs"), L.KIND_VOLUME)),
            lambda: engine.remove_volume(name),
        ):
            with pytest.raises(NotOurs) as refused:
                touch()
            assert refused.value.node == engine.node.name
        assert not engine.volume_owner_is(name, subject.owner("theirs"))

    # -- containers --------------------------------------------------------------------

    def test_a_started_container_is_discovered_running_with_its_config_hash(self, subject: Subject) -> None:
        engine, spec = subject.engine, subject.spec("web")
        assert engine.discover_application(spec.name) is None
        container_id = engine.start_container(spec)
        engine.wait_running(spec.name, timeout=30)
        assert engine.discover_application(spec.name) == RunningContainer(spec.name, container_id, True, spec.config_hash())
        assert engine.container_owner_is(spec.name, subject.owner("web"))
        assert not engine.container_owner_is(spec.name, subject.owner("other"))
        assert not engine.container_owner_is(f"{subject.prefix}-absent", subject.owner("web"))

    def test_a_stopped_container_is_discovered_stopped_and_started_again(self, subject: Subject) -> None:
        engine, spec = subject.engine, subject.spec("web")
        container_id = engine.start_container(spec)
        engine.stop_container(spec.name, timeout=5)
        engine.stop_container(spec.name, timeout=5)  # stopped already: nothing to do
        assert engine.discover_application(spec.name) == RunningContainer(spec.name, container_id, False, spec.config_hash())
        assert engine.watch_exit(spec.name) is None  # nothing runs to watch
        engine.start_existing(spec.name)
        engine.wait_running(spec.name, timeout=30)
        assert engine.discover_application(spec.name) == RunningContainer(spec.name, container_id, True, spec.config_hash())

    def test_a_command_runs_in_a_running_container_and_tells_its_status(self, subject: Subject) -> None:
        engine, spec = subject.engine, subject.spec("web")
        engine.start_container(spec)
        engine.wait_running(spec.name, timeout=30)
        assert engine.run_in_container(spec.name, ("true",), timeout=30)[0] == 0
        assert engine.run_in_container(spec.name, ("false",), timeout=30)[0] == 1
        engine.stop_container(spec.name, timeout=5)
        with pytest.raises(ContainerFailed, match="is not running") as failed:
            engine.run_in_container(spec.name, ("true",), timeout=30)
        assert failed.value.node == engine.node.name
        with pytest.raises(ContainerFailed, match="is not running"):
            engine.run_in_container(f"{subject.prefix}-absent", ("true",), timeout=30)

    def test_a_container_stopped_for_good_is_kept_stopped_with_the_volume_it_mounts(self, subject: Subject) -> None:
        engine, volume = subject.engine, f"{subject.prefix}-data"
        engine.create_volume(volume, L.owner_labels(subject.owner("data"), L.KIND_VOLUME))
        spec = subject.spec("web", volume=volume)
        container_id = engine.start_container(spec)
        engine.stop_for_good(spec.name, timeout=5)
        engine.stop_for_good(spec.name, timeout=5)  # stopped already: nothing to do
        assert engine.discover_application(spec.name) == RunningContainer(spec.name, container_id, False, spec.config_hash())
        assert engine.mounting_containers(volume) == (MountedContainer(spec.name, spec, False),)
        engine.remove_container(spec.name, timeout=5)
        engine.stop_for_good(spec.name, timeout=5)  # gone: nothing to do
        assert engine.discover_application(spec.name) is None

    def test_a_removed_container_is_gone_and_removing_it_again_does_nothing(self, subject: Subject) -> None:
        engine, spec = subject.engine, subject.spec("web")
        engine.start_container(spec)
        engine.remove_container(spec.name, timeout=5)
        assert engine.discover_application(spec.name) is None
        engine.remove_container(spec.name, timeout=5)
        engine.stop_container(spec.name, timeout=5)
        engine.start_existing(spec.name)
        assert engine.discover_application(spec.name) is None
        assert engine.watch_exit(spec.name) is None

    def test_a_container_we_did_not_create_is_refused_and_left_alone(self, subject: Subject) -> None:
        engine, name = subject.engine, f"{subject.prefix}-theirs"
        subject.foreign_container(name)
        for touch in (
            lambda: engine.discover_application(name),
            lambda: engine.start_existing(name),
            lambda: engine.stop_container(name, timeout=5),
            lambda: engine.stop_for_good(name, timeout=5),
            lambda: engine.remove_container(name, timeout=5),
            lambda: engine.run_in_container(name, ("true",), timeout=5),
        ):
            with pytest.raises(NotOurs) as refused:
                touch()
            assert refused.value.node == engine.node.name
        assert not engine.container_owner_is(name, subject.owner("theirs"))

    def test_a_container_publishes_each_internal_port_while_it_runs(self, subject: Subject) -> None:
        engine, spec = subject.engine, subject.spec("web", ports=(8080, 9090))
        engine.start_container(spec)
        published = engine.published_ports(spec.name)
        assert sorted(published) == [8080, 9090]
        assert all(HOST_PORT_FIRST <= port < HOST_PORT_FIRST + HOST_PORT_COUNT for port in published.values()), published
        engine.stop_container(spec.name, timeout=5)
        assert engine.published_ports(spec.name) == {}  # the executor reads this as "not running"
        engine.remove_container(spec.name, timeout=5)
        with pytest.raises(ContainerFailed):
            engine.published_ports(spec.name)

    def test_the_containers_mounting_a_volume_are_found_with_their_specs(self, subject: Subject) -> None:
        engine, volume = subject.engine, f"{subject.prefix}-data"
        engine.create_volume(volume, L.owner_labels(subject.owner("data"), L.KIND_VOLUME))
        web, worker = subject.spec("web", volume=volume), subject.spec("worker", volume=volume)
        engine.start_container(worker)
        engine.start_container(web)
        engine.start_container(subject.spec("elsewhere"))
        engine.stop_container(worker.name, timeout=5)
        assert engine.mounting_containers(volume) == (MountedContainer(web.name, web, True), MountedContainer(worker.name, worker, False))
        engine.remove_container(web.name, timeout=5)
        engine.remove_container(worker.name, timeout=5)
        assert engine.mounting_containers(volume) == ()

    def test_a_container_of_secret_settings_is_discovered_with_its_hash_and_found_with_its_spec(self, subject: Subject) -> None:
        # Read back from the container's own environment: its labels do not hold them.
        engine, volume = subject.engine, f"{subject.prefix}-data"
        engine.create_volume(volume, L.owner_labels(subject.owner("data"), L.KIND_VOLUME))
        spec = subject.spec("web", volume=volume, ports=(8080,), sealed=("command", "environment", "image", "ports"))
        container_id = engine.start_container(spec)
        engine.wait_running(spec.name, timeout=30)
        assert engine.discover_application(spec.name) == RunningContainer(spec.name, container_id, True, spec.config_hash())
        assert engine.mounting_containers(volume) == (MountedContainer(spec.name, spec, True),)
        engine.remove_container(spec.name, timeout=5)
