"""Programs under Pulumi's mocks (no engine, no Docker), for the tests that check what they declare.

The pickled provider (``__provider``) is left out of what is recorded: it is the same class
either way and its bytes are not comparable.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pulumi
import pytest
from pulumi.runtime import rpc
from pulumi.runtime.mocks import MockMonitor

from flocker_pulumi import cluster as cluster_module
from flocker_pulumi import resources as resources_module


class Monitor(MockMonitor):
    """What the mocks are not told, by URN: each resource's registration (its parent, its
    aliases) and the outputs each component registers."""

    def __init__(self, mocks: pulumi.runtime.Mocks) -> None:
        super().__init__(mocks)
        self.requests: dict[str, Any] = {}
        self.outputs: dict[str, dict[str, Any]] = {}

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)
        self.requests[response.urn] = request
        return response

    def RegisterResourceOutputs(self, request: Any) -> Any:
        self.outputs[request.urn] = rpc.deserialize_properties(request.outputs)
        return super().RegisterResourceOutputs(request)


class Recorder(pulumi.runtime.Mocks):
    """Each declared resource as (type, name, inputs); the rest of what was registered in ``monitor``."""

    def __init__(self) -> None:
        self.resources: list[tuple[str, str, dict[str, Any]]] = []
        self.monitor = Monitor(self)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict]:
        self.resources.append((args.typ, args.name, {key: value for key, value in args.inputs.items() if key != "__provider"}))
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list[tuple[str, str]] | None]:
        return {}, None


def record(program: Callable[[], Any], project: str) -> Recorder:
    """``program`` run under mocks as a stack of ``project``; what it declared."""
    recorder = Recorder()
    pulumi.runtime.set_mocks(recorder, project=project, stack="test", preview=False, monitor=recorder.monitor)
    resources_module._published.clear()
    pulumi.runtime.test(program)()
    return recorder


def node_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nodes: list[dict[str, str]]) -> Iterator[Path]:
    """A node file of ``nodes`` for the programs, with nothing of the process's own settings or
    caches: cluster.py caches the stack config's inventory and resources.py remembers published
    ports for the process, and every program must stand on its own."""
    path = tmp_path / "nodes.json"
    path.write_text(json.dumps({"nodes": nodes}))
    monkeypatch.setenv("FLOCKER_NODES_FILE", str(path))
    monkeypatch.delenv("FLOCKER_DOCKER_HOST_TEMPLATE", raising=False)
    monkeypatch.delenv("FLOCKER_TLS_DIR", raising=False)
    cluster_module._stack_inventory.cache_clear()
    resources_module._published.clear()
    yield path
    cluster_module._stack_inventory.cache_clear()
    resources_module._published.clear()
