"""The Fig (docker-compose v1) format: the subset and rules Flocker 0.3+ accepted."""

from __future__ import annotations

import re
from dataclasses import replace

from flocker_provider.planning.models import Application, Link, Port, RestartPolicy, VolumeMount

from . import fields
from .errors import Where, describe
from .flocker_format import IMAGE_EXPECTED
from .parsed_application import ParsedApplication

# Keys Fig knows but Flocker cannot honour: they would silently change how the
# container runs, so they are refused rather than ignored.
UNSUPPORTED_KEYS = (
    "working_dir",
    "entrypoint",
    "user",
    "hostname",
    "domainname",
    "privileged",
    "dns",
    "net",
    "volumes_from",
    "expose",
    "command",
)
SUPPORTED_KEYS = (
    "image",
    "build",
    "environment",
    "ports",
    "links",
    "volumes",
    "mem_limit",
    "cpu_shares",
    "restart",
)
_RESTART_NAMES = {"no": "never", "always": "always", "on-failure": "on-failure"}
# ASCII digits, and few of them: str.isdigit() also says yes to '²' (which int() refuses) and
# to '٣' (which it reads as 3), and int() refuses more than 4300 digits.
_PORTS = re.compile(r"([0-9]{1,5}):([0-9]{1,5})")
_RETRY_COUNT = re.compile(r"[0-9]{1,9}")


def looks_like_fig(document: dict) -> bool:
    return any(isinstance(spec, dict) and ("image" in spec or "build" in spec) for spec in document.values())


def parse_fig(file: str, document: dict) -> list[ParsedApplication]:
    parsed: list[tuple[ParsedApplication, list[tuple[Where, str, str]]]] = []
    for name, spec in document.items():
        name = fields.application_name(Where(file), name)
        parsed.append(_parse_application(Where(file, name), name, spec))
    # Links name other applications: resolve them once every app's ports are known.
    by_name = {app.application.name: app.application for app, _ in parsed}
    result = []
    for app, link_specs in parsed:
        links: list[Link] = []
        places: list[Where] = []
        for where, target, alias in link_specs:
            if target not in by_name:
                where.fail(f"links to application '{target}', which is not defined in {file}")
            # A Fig link reaches every port of the target: one Flocker link per port.
            for port in by_name[target].ports:
                links.append(Link(alias=alias, local_port=port.internal, remote_port=port.external))
                places.append(where)
        result.append(
            replace(
                app,
                application=replace(app.application, links=tuple(links)),
                link_places=tuple(places),
            )
        )
    return result


def _parse_application(where: Where, name: str, spec: object) -> tuple[ParsedApplication, list[tuple[Where, str, str]]]:
    spec = fields.expect_mapping(where, spec, "a mapping of settings such as 'image' and 'ports'")
    if "image" in spec and "build" in spec:
        where.fail("has both 'image' and 'build'; Flocker runs a ready-made image, so give only 'image'")
    if "build" in spec:
        where.at("build").fail("not supported yet; build and push the image, then name it with 'image'")
    unsupported = [key for key in spec if key in UNSUPPORTED_KEYS]
    if unsupported:
        where.fail(f"Unsupported fig keys found: {', '.join(unsupported)}")
    fields.check_known_keys(where, spec, SUPPORTED_KEYS)
    fields.require_keys(where, spec, {"image": IMAGE_EXPECTED})

    app = Application(name=name, image="")
    port_places: tuple[Where, ...] = ()
    maximum_size = None  # Fig has no way to say it
    link_specs: list[tuple[Where, str, str]] = []
    for key, value in spec.items():
        at = where.at(key)
        if key == "image":
            app = replace(app, image=fields.image(at, value))
        elif key == "ports":
            ports, port_places = _ports(at, value)
            app = replace(app, ports=ports)
        elif key == "volumes":
            app = replace(app, volume=_volume(at, name, value))
        elif key == "environment":
            app = replace(app, environment=_environment(at, value))
        elif key == "links":
            link_specs = _link_specs(at, value)
        elif key == "mem_limit":
            limit = fields.non_negative_int(at, value, "a memory limit in bytes (an integer)")
            app = replace(app, mem_limit=limit)
        elif key == "cpu_shares":
            shares = fields.non_negative_int(at, value, "an integer number of CPU shares")
            app = replace(app, cpu_shares=shares)
        elif key == "restart":
            app = replace(app, restart_policy=_restart(at, value))
    return ParsedApplication(app, maximum_size, port_places, ()), link_specs


def _ports(where: Where, value: object) -> tuple[tuple[Port, ...], tuple[Where, ...]]:
    items = fields.expect_list(where, value, "a list of 'external:internal' strings")
    ports, places = [], []
    for index, item in enumerate(items):
        at = where.at(index)
        if not isinstance(item, str):
            hint = " (quote it: YAML reads an unquoted 22:22 as a number)" if fields.is_int(item) else ""
            at.fail(f"expected a string 'external:internal' such as '80:8080', got {describe(item)}{hint}")
        match = _PORTS.fullmatch(item)
        if match is None:
            at.fail(f"expected 'external:internal' such as '80:8080', got {describe(item)}")
        external, internal = (fields.port_number(at, int(part)) for part in match.groups())
        ports.append(Port(internal=internal, external=external))
        places.append(at)
    return tuple(ports), tuple(places)


def _volume(where: Where, name: str, value: object) -> VolumeMount:
    items = fields.expect_list(where, value, "a list with exactly one container path")
    if len(items) != 1:
        where.fail(f"expected exactly one volume, got {len(items)}; Flocker gives each application one volume, which moves with it")
    path = items[0]
    # 'host:/container' would bind a directory of one host, which cannot follow the
    # application to another node; only a Flocker-managed volume can.
    if isinstance(path, str) and ":" in path:
        where.at(0).fail(
            f"expected a container path such as '/var/lib/data', got {describe(path)}; "
            "host paths and ':ro' are not supported because the volume moves "
            "with the application"
        )
    return fields.volume(where.at(0), name, path)


def _environment(where: Where, value: object) -> tuple[tuple[str, str], ...]:
    if isinstance(value, dict):
        return fields.environment((where.at(str(k)), k, v) for k, v in value.items())
    items = fields.expect_list(where, value, "a mapping of names to strings or a list of 'NAME=value'")
    triples = []
    for index, item in enumerate(items):
        at = where.at(index)
        if not (isinstance(item, str) and "=" in item):
            at.fail(f"expected 'NAME=value', got {describe(item)}")
        name, _, text = item.partition("=")
        triples.append((at, name, text))
    return fields.environment(triples)


def _link_specs(where: Where, value: object) -> list[tuple[Where, str, str]]:
    items = fields.expect_list(where, value, "a list of 'application[:alias]' strings")
    specs = []
    for index, item in enumerate(items):
        at = where.at(index)
        text = fields.expect_string(at, item, "'application' or 'application:alias'")
        target, _, alias = text.partition(":")
        target = fields.application_name(at, target)
        specs.append((at, target, fields.link_alias(at, alias or target)))
    return specs


def _restart(where: Where, value: object) -> RestartPolicy:
    text = fields.expect_string(where, value, "'no', 'always', 'on-failure' or 'on-failure:N'")
    name, colon, count_text = text.partition(":")
    if name not in _RESTART_NAMES:
        where.fail(f"expected 'no', 'always', 'on-failure' or 'on-failure:N', got {describe(text)}")
    count: object = None
    if colon:
        if not _RETRY_COUNT.fullmatch(count_text):
            where.fail(f"expected 'on-failure:N' with N a whole number (at most 9 digits), got {describe(text)}")
        count = int(count_text)
    return fields.restart_policy(where, _RESTART_NAMES[name], where, count)
