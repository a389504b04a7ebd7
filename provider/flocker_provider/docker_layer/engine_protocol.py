"""What the executor, the moves and the providers ask of one node's engine.

``DockerNode`` (docker_layer.py) is the engine; nothing outside the Docker layer imports
docker-py: it sees these methods, the errors of errors.py, and docker-py's own failures only
as ``docker_layer.translated`` turns them into those. The contract suite
(tests/contract/engine_contract.py) holds a fake and the real engine to the same behaviour.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from typing import Protocol

from flocker_provider.planning.containers import ContainerSpec, MountedContainer, RouterSpec
from flocker_provider.planning.models import Node, NodeVolumeState, Owner, RunningContainer


class ExitWatcher(Protocol):
    """Says when an application's processes are gone (``attached_exec.ExitWatch``)."""

    def watching(self) -> bool: ...

    def wait(self, timeout: float) -> bool: ...

    def close(self) -> None: ...


class HelperCommand(Protocol):
    """A command in a move's helper: ``fire`` runs it and yields its output until it exits."""

    def fire(self) -> Iterator[bytes]: ...

    def exit_code(self) -> int | None: ...


class ArmedCommand(HelperCommand, Protocol):
    """A command started ahead, waiting to be fired; closed if it never is."""

    def close(self) -> None: ...


class VolumesAndContainers(Protocol):
    """What a node holds, found by name and labels: the part of an engine that the contract
    suite covers, and so the part an engine in memory may stand in for."""

    node: Node

    # A retired copy is one a move handed over; a partial one, a move's not handed over yet.
    def discover_volume(self, name: str) -> NodeVolumeState: ...

    def volume_owner_is(self, name: str, owner: Owner) -> bool: ...

    def create_volume(self, name: str, labels: dict[str, str]) -> None: ...

    def remove_volume(self, name: str) -> None: ...

    def retire_volume(self, volume: str, image: str, labels: dict[str, str]) -> None: ...

    def mark_partial(self, volume: str, image: str, labels: dict[str, str]) -> None: ...

    # The retirement made ahead, outside a move's downtime (a container's creation syncs the
    # node's file system): a marker that means nothing until ``retire_volume`` renames it,
    # and that ``forget_retirement`` removes when the move ends without its handoff.
    def prepare_retirement(self, volume: str, image: str, labels: dict[str, str]) -> None: ...

    def forget_retirement(self, volume: str) -> None: ...

    # The copy is the live one: neither retired nor partial.
    def make_live(self, volume: str) -> None: ...

    def mounting_containers(self, volume: str) -> tuple[MountedContainer, ...]: ...

    def discover_application(self, name: str) -> RunningContainer | None: ...

    def container_owner_is(self, name: str, owner: Owner) -> bool: ...

    def start_container(self, spec: ContainerSpec) -> str: ...

    def start_existing(self, name: str) -> None: ...

    def wait_running(self, name: str, timeout: float) -> None: ...

    def watch_exit(self, name: str) -> ExitWatcher | None: ...

    def run_in_container(self, name: str, command: tuple[str, ...], timeout: float) -> tuple[int | None, str]:
        """``command`` run in the running container ``name``: its exit status (None: still
        running after ``timeout`` seconds, left to end on its own) and its output."""
        ...

    def stop_container(self, name: str, timeout: int = 10) -> None: ...

    # Stopped, and not started again by its restart policy, not even when the engine restarts.
    def stop_for_good(self, name: str, timeout: int = 10) -> None: ...

    def remove_container(self, name: str, timeout: int = 10) -> None: ...

    def published_ports(self, name: str) -> dict[int, int]: ...


class Engine(VolumesAndContainers, Protocol):
    def ping(self) -> None: ...

    def volume_size(self, name: str) -> int | None: ...

    def ensure_image(self, image: str) -> None: ...

    # Held at its gate until a move lets it through (staging.py).
    def stage_container(self, spec: ContainerSpec) -> bool: ...

    def confirm_running(self, name: str, seconds: float) -> None: ...

    # Ports and routes.
    def host_port_holders(self, ports: Collection[int], router: RouterSpec) -> tuple[MountedContainer, ...]: ...

    def port_user(self, port: int, router: RouterSpec) -> str | None: ...

    # External port -> its route, as the router on this node holds them.
    def read_routes(self, router: RouterSpec) -> dict[int, dict]: ...

    def prepare_routes(self, router: RouterSpec) -> None: ...

    def point_routes(self, router: RouterSpec, routes: dict[int, dict]) -> None: ...

    def remove_routes(self, router: RouterSpec, application: str, ports: tuple[int, ...]) -> None: ...

    # A move's helpers, by container id (transfer_containers.py).
    def run_helper(
        self,
        image: str,
        name: str,
        command: list[str],
        labels: dict[str, str],
        volume: str,
        environment: dict[str, str] | None = None,
        port: int | None = None,
        read_only: bool = False,
        searches_extents: bool = False,
    ) -> str: ...

    def wait_for_helper_port(self, helper: str, port: int, ready: bytes, role: str) -> int: ...

    def helper_logs(self, helper: str, tail: int) -> str: ...

    def exec_in_helper(self, helper: str, command: list[str], environment: dict[str, str]) -> HelperCommand: ...

    def arm_in_helper(self, helper: str, command: list[str], environment: dict[str, str]) -> ArmedCommand: ...

    def remove_helper(self, helper: str) -> None: ...

    def remove_transfer_containers(self, volume: str) -> None: ...
