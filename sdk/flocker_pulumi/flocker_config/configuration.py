"""The loader's result: every application and the node it should run on."""

from __future__ import annotations

from dataclasses import dataclass

from flocker_provider.planning.models import Application


@dataclass(frozen=True)
class ConfiguredApplication:
    application: Application
    # None when deployment.yml lists it on no node: Flocker then simply did not run it.
    node: str | None
    volume_maximum_size: int | None


@dataclass(frozen=True)
class Configuration:
    applications: tuple[ConfiguredApplication, ...]  # sorted by name
    nodes: tuple[str, ...]  # deployment.yml order, including nodes that run nothing
