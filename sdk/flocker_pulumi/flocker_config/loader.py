"""Entry points: read application.yml (either format) and deployment.yml."""

from __future__ import annotations

import os

from flocker_provider.planning.models import Application

from .cluster_checks import check_external_ports_unique, check_links_reach_a_port
from .configuration import Configuration, ConfiguredApplication
from .deployment_format import parse_deployment
from .errors import Where
from .fig_format import looks_like_fig, parse_fig
from .flocker_format import looks_like_flocker, parse_flocker
from .parsed_application import ParsedApplication
from .yaml_files import read_yaml, top_level_mapping


def load_application_config(
    path: str | os.PathLike[str],
) -> dict[str, tuple[Application, int | None]]:
    """name -> (application, volume maximum size), in file order."""
    return {parsed.application.name: (parsed.application, parsed.maximum_size) for parsed in _parse_application_file(os.fspath(path))}


def load_configuration(deployment_path: str | os.PathLike[str], application_path: str | os.PathLike[str]) -> Configuration:
    deployment_file = os.fspath(deployment_path)
    application_file = os.fspath(application_path)
    # deployment.yml first, as flocker-deploy read it: its own mistakes need no
    # application.yml to be found.
    deployment = parse_deployment(deployment_file, top_level_mapping(deployment_file, read_yaml(deployment_file)))
    applications = {parsed.application.name: parsed for parsed in _parse_application_file(application_file)}

    placement: dict[str, str] = {}
    for entry in deployment.entries:
        if entry.application not in applications:
            entry.where.fail(f"not defined in {application_file} (listed on node '{entry.node}')")
        other = placement.get(entry.application)
        if other is not None:
            # Flocker accepted this and ran two copies fighting over one volume.
            entry.where.fail(f"listed on both node '{other}' and node '{entry.node}'; an application runs on exactly one node")
        placement[entry.application] = entry.node

    return Configuration(
        applications=tuple(
            ConfiguredApplication(
                application=parsed.application,
                node=placement.get(name),
                volume_maximum_size=parsed.maximum_size,
            )
            for name, parsed in sorted(applications.items())
        ),
        nodes=deployment.nodes,
    )


def _parse_application_file(file: str) -> list[ParsedApplication]:
    document = top_level_mapping(file, read_yaml(file))
    # Fig first, then Flocker, in the order Flocker itself tried them.
    if looks_like_fig(document):
        parsed = parse_fig(file, document)
    elif looks_like_flocker(document):
        parsed = parse_flocker(file, document)
    else:
        Where(file).fail("Configuration is not a valid Fig or Flocker format")
    check_external_ports_unique(parsed)
    check_links_reach_a_port(parsed)
    return parsed
