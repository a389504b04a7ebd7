"""Docker counts disk usage once at a time: a second count meanwhile is refused with 409."""

from __future__ import annotations

import threading

import docker.errors
import pytest
from docker_fakes import FakeClient, FakeHost

from flocker_provider.docker_layer import docker_node as docker_layer
from flocker_provider.docker_layer.docker_node import DockerNode
from flocker_provider.planning.models import Node

N1 = Node("node1", "10.0.0.1", "tcp://10.0.0.1:2375")


class Busy(docker.errors.APIError):
    def __init__(self) -> None:
        response = type("Response", (), {"status_code": 409, "reason": "Conflict"})()
        super().__init__("409 Client Error: Conflict", response, "a disk usage operation is already running")


def test_volume_size_waits_out_a_count_already_running_and_ours_take_turns(monkeypatch: pytest.MonkeyPatch) -> None:
    host = FakeHost()
    host.volumes["v"] = {}
    client = FakeClient(host)
    counting, refused = threading.Lock(), []
    other_clients_count = iter([True, True])  # another client's count still runs for two of our tries
    count = client.df

    def df() -> dict:
        if next(other_clients_count, False):
            refused.append(1)
            raise Busy()
        if not counting.acquire(blocking=False):  # Docker's own rule: one count at a time
            raise AssertionError("two counts of ours at once")
        try:
            return count()
        finally:
            counting.release()

    monkeypatch.setattr(client, "df", df)
    monkeypatch.setattr(docker_layer, "DISK_USAGE_RETRY_SECONDS", 0.001)
    engine = DockerNode(N1, client)  # type: ignore[arg-type]
    sizes: list[int | None] = []
    threads = [threading.Thread(target=lambda: sizes.append(engine.volume_size("v"))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sizes == [0, 0, 0, 0] and len(refused) == 2


def test_volume_size_passes_other_refusals_on(monkeypatch: pytest.MonkeyPatch) -> None:
    client = FakeClient(FakeHost())

    def df() -> dict:
        raise docker.errors.APIError("500 Server Error", explanation="the disk is on fire")

    monkeypatch.setattr(client, "df", df)
    with pytest.raises(docker.errors.APIError, match="on fire"):
        DockerNode(N1, client).volume_size("v")  # type: ignore[arg-type]
