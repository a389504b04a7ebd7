"""Rules that involve several applications at once, shared by both formats."""

from __future__ import annotations

from collections.abc import Sequence

from .parsed_application import ParsedApplication


def check_external_ports_unique(applications: Sequence[ParsedApplication]) -> None:
    # Every node forwards each external port to the one node running its
    # application, so two applications cannot share an external port anywhere.
    owners: dict[int, str] = {}
    for parsed in applications:
        app = parsed.application
        for port, where in zip(app.ports, parsed.port_places, strict=True):
            owner = owners.get(port.external)
            if owner == app.name:
                where.fail(f"external port {port.external} is published twice by this application")
            if owner is not None:
                where.fail(
                    f"external port {port.external} is also published by application "
                    f"'{owner}'; each external port belongs to one application in the "
                    "cluster"
                )
            owners[port.external] = app.name


def check_links_reach_a_port(applications: Sequence[ParsedApplication]) -> None:
    # A link connects to remote_port on a node, which only leads somewhere if some
    # application publishes that port; otherwise the linking app fails at runtime.
    published = {port.external for parsed in applications for port in parsed.application.ports}
    for parsed in applications:
        for link, where in zip(parsed.application.links, parsed.link_places, strict=True):
            if link.remote_port not in published:
                where.fail(f"link '{link.alias}' connects to port {link.remote_port}, which no application publishes as an external port")
