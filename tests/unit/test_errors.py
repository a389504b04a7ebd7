"""How every error of the tree (errors.py) is shown: raised where it arises, on stand-in
engines (docker_fakes.py) under the real Docker layer, executor and moves, through a
provider hook, as the provider host hands it to `pulumi` (provider_host.format_exc).

One message each, no traceback: the resource, the node and the step where there is one,
what happened, and what to do. Anything else that escapes a hook is a bug, and keeps its
traceback.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import docker.errors
import pytest
from docker_fakes import FakeClient, FakeContainer, FakeContainers, FakeHost, fake_nodes

from flocker_provider import dynamic_providers, errors, provider_host
from flocker_provider.docker_layer.docker_node import DockerNode
from flocker_provider.dynamic_providers import ApplicationProvider, VolumeProvider
from flocker_provider.execution import migration
from flocker_provider.inputs import node_props
from flocker_provider.nodes import load_node_file
from flocker_provider.planning import labels as L
from flocker_provider.planning.containers import ContainerSpec
from flocker_provider.planning.models import Node

N1, N2 = NODES = tuple(Node(f"node{i}", f"10.0.0.{i}", f"tcp://10.0.0.{i}:2375") for i in (1, 2))
WEB = "flocker-s-web"
START = f"start {WEB} (web:1) on node1"


def routing() -> dict:
    return {"route_nodes": [node_props(n) for n in NODES], "hold_seconds": 5.0, "router_image": "flocker/base:local"}


def web(**changes: object) -> dict:
    return {
        "name": "web",
        "project": "p",
        "stack": "s",
        **node_props(N1),
        "node_error": None,
        "image": "web:1",
        "ports": [{"internal": 80, "external": 8080}],
        **routing(),
        **changes,
    }


def data(node: Node) -> dict:
    return {"name": "data", "project": "p", "stack": "s", **node_props(node), "node_error": None, **routing()}


def shown(hook: Callable[[], object]) -> str:
    """What `pulumi up` prints of the hook's failure."""
    try:
        hook()
    except Exception:
        return provider_host.format_exc()
    raise AssertionError("the hook did not fail")


def create_web(**changes: object) -> str:
    return shown(lambda: ApplicationProvider().create(web(**changes)))


UNDONE = "what it had started was removed again"


@pytest.fixture
def hosts(monkeypatch: pytest.MonkeyPatch) -> dict[Node, FakeHost]:
    return fake_nodes(monkeypatch, NODES)


def test_an_image_that_is_not_on_the_node_and_cannot_be_pulled(hosts: dict[Node, FakeHost]) -> None:
    """errors.ImageUnavailable, from the Docker layer's pull."""
    hosts[N1].missing_images.add("web:1")
    assert create_web() == (
        f"application web: step '{START}' failed: node node1: image web:1 is not on the node and could not be pulled: "
        f"pull access denied for web, repository does not exist; {UNDONE}. What to do: {errors.ImageUnavailable.remedy}"
    )


def test_a_secret_image_that_cannot_be_pulled_is_not_named(hosts: dict[Node, FakeHost]) -> None:
    """By the Docker layer itself: a move starts containers for their volume, whose hooks do
    not know the application's secrets to blank them."""
    spec = ContainerSpec(name=WEB, image="web:tag-Zx81", sealed=("image",))
    hosts[N1].missing_images.add(spec.image)
    with pytest.raises(errors.ImageUnavailable) as failure:
        DockerNode(N1, FakeClient(hosts[N1])).start_container(spec)  # type: ignore[arg-type]
    said = str(failure.value)
    assert "image [secret] is not on the node and could not be pulled: pull access denied for [secret], repository" in said
    assert "web" not in said


def test_no_free_host_port(hosts: dict[Node, FakeHost]) -> None:
    """errors.PortTaken: Docker says a host port is taken at every candidate."""
    hosts[N1].bind = lambda port, holder: False  # type: ignore[method-assign]
    assert create_web() == (
        f"application web: step '{START}' failed: node node1: no free host port for {WEB} after 8 candidates; {UNDONE}. "
        f"What to do: {errors.PortTaken.remedy}"
    )


def test_a_container_that_exits_while_starting(hosts: dict[Node, FakeHost], monkeypatch: pytest.MonkeyPatch) -> None:
    """errors.ContainerFailed, with the container's last log lines."""

    def exit_at_once(container: FakeContainer) -> None:
        container.status = "exited"

    monkeypatch.setattr(FakeContainer, "start", exit_at_once)
    monkeypatch.setattr(FakeContainer, "logs", lambda container, tail=None: b"web: cannot open /etc/web.conf")
    assert create_web() == (
        f"application web: step 'wait for {WEB} on node1' failed: node node1: {WEB} exited while starting; last log lines:\n"
        f"web: cannot open /etc/web.conf\n; {UNDONE}. What to do: {errors.ContainerFailed.remedy}"
    )


def test_a_health_check_that_does_not_pass_in_time(hosts: dict[Node, FakeHost], monkeypatch: pytest.MonkeyPatch) -> None:
    """errors.DeadlinePassed: the application's wait_timeout."""
    attrs = FakeContainer.attrs.fget
    health = {"Status": "starting", "Log": [{"ExitCode": 1, "Output": "connection refused"}]}
    monkeypatch.setattr(FakeContainer, "attrs", property(lambda c: {**attrs(c), "State": {"StartedAt": c.id, "Health": health}}))
    text = create_web(wait_timeout=0.2)
    assert text.startswith(
        f"application web: step 'wait for {WEB} on node1' failed: node node1: {WEB} not up after 0.2s "
        f"(status running, starting: its health check exited 1: connection refused); {UNDONE}. What to do: "
    )
    assert "raise the application's wait_timeout" in text and "Traceback" not in text


def test_an_engine_that_refuses_a_request(hosts: dict[Node, FakeHost], monkeypatch: pytest.MonkeyPatch) -> None:
    """errors.EngineRefused: Docker's own error, in the engine's words."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise docker.errors.APIError("500 Server Error", explanation="no space left on device")

    monkeypatch.setattr(FakeContainers, "create", refuse)
    assert create_web() == (
        f"application web: step '{START}' failed: node node1: the Docker engine refused: no space left on device; {UNDONE}. "
        f"What to do: {errors.EngineRefused.remedy}"
    )


def test_routes_a_router_does_not_put_in_force(hosts: dict[Node, FakeHost]) -> None:
    """errors.RoutingFailed: node2's router cannot bind the port someone else holds."""
    hosts[N2].bound[8080] = "a program of someone else's"
    assert create_web() == (
        "application web: step 'route port 8080 on node1, node2 to web on node1' failed: node node2: "
        "the router did not take the route of port 8080 within 10 s (see `docker logs flocker-s.router`); "
        f"{UNDONE}. What to do: {errors.RoutingFailed.remedy}"
    )


def test_an_object_with_our_name_that_is_not_ours(hosts: dict[Node, FakeHost]) -> None:
    """errors.NotOurs, with the remedy of its raise site."""
    hosts[N1].containers[WEB] = FakeContainer(hosts[N1], WEB, {}, None)
    text = create_web()
    assert text.startswith(f"application web: node node1: a container named {WEB} exists that flocker-pulumi did not create; ")
    assert text.endswith("What to do: rename or remove it on the node, or choose another application name, then run `pulumi up` again")


def test_an_engine_that_does_not_answer() -> None:
    """errors.NodeUnreachable, from the real connection to a port nothing listens on."""
    down = {**node_props(Node("node1", "127.0.0.1", "tcp://127.0.0.1:9")), "route_nodes": []}
    text = shown(lambda: ApplicationProvider().create(web(**down)))
    assert text.startswith("application web: node node1: Docker engine at tcp://127.0.0.1:9 did not answer: Connection refused; ")
    assert text.endswith(f"What to do: {errors.NodeUnreachable.remedy}") and "\n" not in text


def test_invalid_inputs() -> None:
    """errors.InvalidInput, found before anything changes."""
    assert shown(lambda: ApplicationProvider().create(web(image=""))) == (
        "application web: invalid inputs: image: expected an image name such as 'repo:tag'; got an empty value. "
        f"What to do: {errors.InvalidInput.remedy}"
    )


def test_a_move_with_no_copy_to_move(hosts: dict[Node, FakeHost]) -> None:
    """errors.PlanError, with the remedy of its raise site: the copy on node1 was handed over already."""
    VolumeProvider().create(data(N1))
    retired = {L.MANAGED: "true", L.RETIRED: "true", L.VOLUME: "flocker-s-data"}
    hosts[N1].containers["flocker-s-data-retired"] = FakeContainer(hosts[N1], "flocker-s-data-retired", retired, None)
    assert shown(lambda: VolumeProvider().update("flocker-s-data", data(N1), data(N2))) == (
        "volume data: step 'plan the move from node1 to node2' failed: volume flocker-s-data has no live copy on node1 "
        "to move to node2. What to do: run `pulumi refresh` to see where it is, then `pulumi up` again"
    )


def test_a_move_whose_copy_fails(hosts: dict[Node, FakeHost], monkeypatch: pytest.MonkeyPatch) -> None:
    """errors.MoveFailed: before the handoff, so the move says what it undid."""

    def fail(channel: migration.TransferChannel, final: bool, timeout: float) -> list[dict]:
        raise errors.MoveFailed("stream from node1 to node2 failed: tar: short read / flocker-received 2")

    monkeypatch.setattr(migration.TransferChannel, "push", fail)
    VolumeProvider().create(data(N1))
    assert shown(lambda: VolumeProvider().update("flocker-s-data", data(N1), data(N2))) == (
        "volume data: step 'phase 1: copy flocker-s-data from node1 to node2' failed: stream from node1 to node2 failed: "
        "tar: short read / flocker-received 2; nothing was lost: the application kept running on the source; "
        f"the partial copy on node2 was removed. What to do: {errors.MoveFailed.remedy}"
    )
    assert "flocker-s-data" not in hosts[N2].volumes


def test_a_move_whose_destination_fills_up(hosts: dict[Node, FakeHost], monkeypatch: pytest.MonkeyPatch) -> None:
    """errors.DiskFull: tar's words on the destination become the node and "disk full", with a remedy of its own."""

    sizes = []

    def fill(channel: migration.TransferChannel, final: bool, timeout: float) -> list[dict]:
        sizes.append(f" ({migration.human_bytes(channel.total)})" if channel.total is not None else "")
        channel._check_space("flocker-received 2", "tar: ./blob: Wrote only 512 of 10240 bytes: No space left on device")
        raise AssertionError("a full disk was not seen")

    monkeypatch.setattr(migration.TransferChannel, "push", fill)
    VolumeProvider().create(data(N1))
    text = shown(lambda: VolumeProvider().update("flocker-s-data", data(N1), data(N2)))
    assert text == (
        "volume data: step 'phase 1: copy flocker-s-data from node1 to node2' failed: node node2: disk full: no space left "
        f"for the copy of flocker-s-data{sizes[0]} from node1; "
        "nothing was lost: the application kept running on the source; the partial copy on node2 was removed. "
        f"What to do: {errors.DiskFull.remedy}"
    )
    assert "flocker-s-data" not in hosts[N2].volumes


def test_a_move_to_a_node_without_the_transfer_image(hosts: dict[Node, FakeHost]) -> None:
    """errors.ImageUnavailable as issue 13 met it (a node added without the images): before the move changes anything."""
    VolumeProvider().create(data(N1))
    hosts[N2].missing_images.add("flocker/base:local")
    assert shown(lambda: VolumeProvider().update("flocker-s-data", data(N1), data(N2))) == (
        "volume data: node node2: image flocker/base:local is not on the node and could not be pulled: "
        "pull access denied for flocker/base, repository does not exist. "
        f"What to do: {errors.ImageUnavailable.remedy}"
    )
    assert hosts[N2].volumes == {} and hosts[N2].containers == {}


def test_a_move_whose_copy_takes_too_long(hosts: dict[Node, FakeHost], monkeypatch: pytest.MonkeyPatch) -> None:
    """errors.DeadlinePassed: the volume's move_timeout."""

    def slow(channel: migration.TransferChannel, final: bool, timeout: float) -> list[dict]:
        raise errors.DeadlinePassed(f"copy from node1 to node2 took over {timeout:.0f}s")

    monkeypatch.setattr(migration.TransferChannel, "push", slow)
    VolumeProvider().create(data(N1))
    text = shown(lambda: VolumeProvider().update("flocker-s-data", data(N1), {**data(N2), "move_timeout": 5.0}))
    assert text.startswith(
        "volume data: step 'phase 1: copy flocker-s-data from node1 to node2' failed: copy from node1 to node2 took over 5s; "
        "nothing was lost: "
    )
    assert text.endswith(f"What to do: {errors.DeadlinePassed.remedy}")


def test_a_bad_node_file(tmp_path: Path) -> None:
    """errors.NodeFileError. Read by the program, not a hook: the SDK raises its message as
    pulumi's RunError, which the engine shows without a traceback."""
    path = tmp_path / "nodes.json"
    path.write_text(json.dumps({"nodes": [{"name": "node1"}]}))
    with pytest.raises(errors.NodeFileError) as failed:
        load_node_file(str(path))
    assert str(failed.value) == f"{path}: nodes[0]: missing address. What to do: {errors.NodeFileError.remedy}"


def test_every_kind_of_error_is_shown_here() -> None:
    """A kind added to the tree without a test of its message above fails this."""
    here = Path(__file__).read_text()
    kinds = [kind for kind in vars(errors).values() if isinstance(kind, type) and issubclass(kind, errors.ProviderError)]
    assert [kind.__name__ for kind in kinds if f"errors.{kind.__name__}" not in here and kind is not errors.ProviderError] == []


def test_a_bug_keeps_its_traceback_and_says_what_was_done(hosts: dict[Node, FakeHost], monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> None:
        raise KeyError("spec")

    monkeypatch.setattr(dynamic_providers, "_converge_application", broken)
    text = create_web()
    assert text.startswith("Traceback (most recent call last):") and "KeyError: 'spec'" in text
    assert text.rstrip().endswith(UNDONE)


def test_a_warning_quotes_an_error_without_its_remedy(capsys: pytest.CaptureFixture[str]) -> None:
    """A refresh that cannot reach the node keeps the state and says why, as a warning: nothing to do yet."""
    down = {**data(N1), **node_props(Node("node1", "127.0.0.1", "tcp://127.0.0.1:9"))}
    VolumeProvider().read("flocker-s-data", down)
    assert capsys.readouterr().out == (
        "flocker: warning: node node1: Docker engine at tcp://127.0.0.1:9 did not answer: Connection refused; "
        "volume flocker-s-data is left as the last operation recorded it\n"
    )
