"""An Application as parsed, plus where each port and link came from in the file.

The cross-application checks run after every application is parsed, yet must
still point at the exact key; the format parsers record those places here.
"""

from __future__ import annotations

from dataclasses import dataclass

from flocker_provider.planning.models import Application

from .errors import Where


@dataclass(frozen=True)
class ParsedApplication:
    application: Application
    maximum_size: int | None
    port_places: tuple[Where, ...]  # where each ports[i] (its external port) was written
    link_places: tuple[Where, ...]  # where each links[i] was written
