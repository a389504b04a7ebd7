"""Flocker's own application.yml format: ``{version: 1, applications: {...}}``."""

from __future__ import annotations

from flocker_provider.planning.models import Application, Link, Port, RestartPolicy, VolumeMount

from . import fields
from .errors import Where
from .parsed_application import ParsedApplication

TOP_LEVEL_KEYS = ("version", "applications")
APPLICATION_KEYS = (
    "image",
    "ports",
    "volume",
    "environment",
    "links",
    "mem_limit",
    "cpu_shares",
    "restart_policy",
)
IMAGE_EXPECTED = "an image name such as 'clusterhq/elasticsearch'"


def looks_like_flocker(document: dict) -> bool:
    # Either key is enough: a file with 'applications' but no 'version' is a
    # Flocker file with a mistake and deserves that message, not "unknown format".
    return "applications" in document or "version" in document


def parse_flocker(file: str, document: dict) -> list[ParsedApplication]:
    where = Where(file)
    fields.check_version(where, document)
    fields.require_keys(where, document, {"applications": "a mapping of application names"})
    fields.check_known_keys(where, document, TOP_LEVEL_KEYS)
    applications = fields.expect_mapping(
        where.at("applications"),
        document["applications"],
        "a mapping of application names",
    )
    parsed = []
    for name, spec in applications.items():
        name = fields.application_name(where.at("applications"), name)
        parsed.append(_parse_application(Where(file, name), name, spec))
    return parsed


def _parse_application(where: Where, name: str, spec: object) -> ParsedApplication:
    spec = fields.expect_mapping(where, spec, "a mapping of settings such as 'image' and 'ports'")
    fields.check_known_keys(where, spec, APPLICATION_KEYS)
    fields.require_keys(where, spec, {"image": IMAGE_EXPECTED})

    image = ""
    ports: tuple[Port, ...] = ()
    port_places: tuple[Where, ...] = ()
    volume: VolumeMount | None = None
    maximum_size: int | None = None
    environment: tuple[tuple[str, str], ...] = ()
    links: tuple[Link, ...] = ()
    link_places: tuple[Where, ...] = ()
    mem_limit: int | None = None
    cpu_shares: int | None = None
    restart_policy = RestartPolicy()
    # File order, so the first mistake the user reads is the first one reported.
    for key, value in spec.items():
        at = where.at(key)
        if key == "image":
            image = fields.image(at, value)
        elif key == "ports":
            ports, port_places = _ports(at, value)
        elif key == "volume":
            volume, maximum_size = _volume(at, name, value)
        elif key == "environment":
            env = fields.expect_mapping(at, value, "a mapping of variable names to strings")
            environment = fields.environment((at.at(str(k)), k, v) for k, v in env.items())
        elif key == "links":
            links, link_places = _links(at, value)
        elif key == "mem_limit":
            mem_limit = fields.non_negative_int(at, value, "a memory limit in bytes (an integer)")
        elif key == "cpu_shares":
            cpu_shares = fields.non_negative_int(at, value, "an integer number of CPU shares")
        elif key == "restart_policy":
            restart_policy = _restart_policy(at, value)
    application = Application(
        name=name,
        image=image,
        ports=ports,
        environment=environment,
        volume=volume,
        links=links,
        mem_limit=mem_limit,
        cpu_shares=cpu_shares,
        restart_policy=restart_policy,
    )
    return ParsedApplication(application, maximum_size, port_places, link_places)


def _ports(where: Where, value: object) -> tuple[tuple[Port, ...], tuple[Where, ...]]:
    items = fields.expect_list(where, value, "a list of {internal, external} mappings")
    ports, places = [], []
    for index, item in enumerate(items):
        at = where.at(index)
        item = fields.expect_mapping(at, item, "a mapping with 'internal' and 'external'")
        fields.check_known_keys(at, item, ("internal", "external"))
        fields.require_keys(
            at,
            item,
            {"internal": "the container's port", "external": "the port on the nodes"},
        )
        ports.append(
            Port(
                internal=fields.port_number(at.at("internal"), item["internal"]),
                external=fields.port_number(at.at("external"), item["external"]),
            )
        )
        places.append(at.at("external"))
    return tuple(ports), tuple(places)


def _volume(where: Where, name: str, value: object) -> tuple[VolumeMount, int | None]:
    spec = fields.expect_mapping(where, value, "a mapping with 'mountpoint'")
    fields.check_known_keys(where, spec, ("mountpoint", "maximum_size"))
    fields.require_keys(where, spec, {"mountpoint": "an absolute path such as '/var/lib/data'"})
    mount = fields.volume(where.at("mountpoint"), name, spec["mountpoint"])
    size = None
    if "maximum_size" in spec:
        size = fields.maximum_size(where.at("maximum_size"), spec["maximum_size"])
    return mount, size


def _links(where: Where, value: object) -> tuple[tuple[Link, ...], tuple[Where, ...]]:
    items = fields.expect_list(where, value, "a list of {local_port, remote_port, alias} mappings")
    links, places = [], []
    for index, item in enumerate(items):
        at = where.at(index)
        item = fields.expect_mapping(at, item, "a mapping with 'local_port', 'remote_port', 'alias'")
        fields.check_known_keys(at, item, ("local_port", "remote_port", "alias"))
        fields.require_keys(
            at,
            item,
            {
                "local_port": "the port the linking container connects to",
                "remote_port": "the external port of the linked application",
                "alias": "a name such as 'es'",
            },
        )
        links.append(
            Link(
                alias=fields.link_alias(at.at("alias"), item["alias"]),
                local_port=fields.port_number(at.at("local_port"), item["local_port"]),
                remote_port=fields.port_number(at.at("remote_port"), item["remote_port"]),
            )
        )
        places.append(at)
    return tuple(links), tuple(places)


def _restart_policy(where: Where, value: object) -> RestartPolicy:
    spec = fields.expect_mapping(where, value, "a mapping with 'name'")
    fields.check_known_keys(where, spec, ("name", "maximum_retry_count"))
    fields.require_keys(where, spec, {"name": "one of never, always, on-failure"})
    return fields.restart_policy(
        where.at("name"),
        spec["name"],
        where.at("maximum_retry_count"),
        spec.get("maximum_retry_count"),
    )
