"""Validators shared by the Flocker and Fig parsers.

Both formats describe the same ``Application``; only their spelling differs. Each
rule (what a port is, what a mountpoint is, ...) lives here once, and the format
modules only translate spelling into calls to these functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from flocker_provider.inputs import DOCKER_NAME, ENV_NAME, LINK_ALIAS, NODE_NAME, checked_mountpoint
from flocker_provider.planning.models import RESTART_POLICIES, RestartPolicy, VolumeMount

from .errors import Where, describe
from .image_names import parse_image_name
from .sizes import parse_size


def is_int(value: object) -> bool:
    # YAML 'true' is a Python bool, which is an int; a port of 'true' is a mistake.
    return isinstance(value, int) and not isinstance(value, bool)


def expect_mapping(where: Where, value: object, expected: str) -> dict:
    if not isinstance(value, dict):
        where.fail(f"expected {expected}, got {describe(value)}")
    return value


def expect_list(where: Where, value: object, expected: str) -> list:
    if not isinstance(value, list):
        where.fail(f"expected {expected}, got {describe(value)}")
    return value


def expect_string(where: Where, value: object, expected: str) -> str:
    if not isinstance(value, str):
        where.fail(f"expected {expected}, got {describe(value)}")
    return value


def missing(where: Where, expected: str) -> None:
    where.fail(f"missing; expected {expected}")


def require_keys(where: Where, mapping: Mapping, required: Mapping[str, str]) -> None:
    """``required`` maps each key to what it should hold, for the message."""
    for key, expected in required.items():
        if key not in mapping:
            missing(where.at(key), expected)


def check_known_keys(where: Where, mapping: Mapping, allowed: Iterable[str]) -> None:
    allowed = sorted(allowed)
    unknown = [str(key) for key in mapping if key not in allowed]
    if unknown:
        where.fail(f"unrecognised keys: {', '.join(unknown)}; allowed keys are {', '.join(allowed)}")


def check_version(where: Where, document: Mapping) -> None:
    if "version" not in document:
        missing(where.at("version"), "'version: 1'")
    version = document["version"]
    if not (is_int(version) and version == 1):
        where.at("version").fail(f"expected 'version: 1', got {describe(version)}")


def application_name(where: Where, name: object) -> str:
    # An application name becomes (part of) a Docker container name.
    if not (isinstance(name, str) and DOCKER_NAME.fullmatch(name)):
        where.fail(
            f"expected an application name of letters, digits, '_', '.' and '-', starting with a letter or digit, got {describe(name)}"
        )
    return name


def node_address(where: Where, value: object) -> str:
    # It becomes part of the ssh:// or tcp:// URL of the node's engine.
    if not (isinstance(value, str) and NODE_NAME.fullmatch(value)):
        where.fail(f"expected a node address such as '172.16.255.250', got {describe(value)}")
    return value


def image(where: Where, value: object) -> str:
    """The canonical image reference, so 'repo' and 'repo:latest' compare equal."""
    text = expect_string(where, value, "an image name such as 'clusterhq/elasticsearch'")
    try:
        return str(parse_image_name(text))
    except ValueError as error:
        where.fail(f"not a valid image name {describe(text)}: {error}")


def port_number(where: Where, value: object) -> int:
    if not (is_int(value) and 1 <= value <= 65535):
        where.fail(f"expected an integer port 1-65535, got {describe(value)}")
    return value


def non_negative_int(where: Where, value: object, expected: str) -> int:
    # Docker's fields are 64-bit: a larger number would be refused only by the engine, mid-deploy.
    if not (is_int(value) and 0 <= value < 2**63):
        where.fail(f"expected {expected}, got {describe(value)}")
    return value


def environment(
    pairs: Iterable[tuple[Where, object, object]],
) -> tuple[tuple[str, str], ...]:
    """``(where, name, value)`` triples -> sorted pairs.

    Sorted so the dict and ``K=V`` list spellings of Fig, and a reordering of the
    file, all describe the same Application.
    """
    result: dict[str, str] = {}
    for where, name, value in pairs:
        if not (isinstance(name, str) and ENV_NAME.fullmatch(name)):
            where.fail(f"expected an environment variable name without '=', spaces or control characters, got {describe(name)}")
        if not isinstance(value, str):
            where.fail(f"the value of '{name}' must be a string; got type '{type(value).__name__}' (quote it in the YAML)")
        if "\x00" in value:
            where.fail(f"the value of '{name}' cannot hold a NUL character")
        if name in result:
            where.fail(f"environment variable '{name}' is set twice")
        result[name] = value
    return tuple(sorted(result.items()))


def volume(where: Where, application: str, mountpoint: object) -> VolumeMount:
    """One Flocker volume per application, named after it, as Flocker did."""
    path = expect_string(where, mountpoint, "an absolute path such as '/var/lib/data'")
    # The provider's own rule, so that a file it would refuse is refused when it is read.
    try:
        return VolumeMount(volume=application, mountpoint=checked_mountpoint(path))
    except ValueError as error:
        where.fail(str(error))


def maximum_size(where: Where, value: object) -> int:
    text = expect_string(
        where,
        value,
        "a size string such as '500M' or '2.5G' (quote a plain byte count)",
    )
    try:
        size = parse_size(text)
    except ValueError:
        where.fail(f"expected a size such as '500M', '2.5G' or '1073741824', got {describe(text)}")
    if size <= 0:
        where.fail(f"expected a size greater than zero, got {describe(text)}")
    return size


def link_alias(where: Where, value: object) -> str:
    if not (isinstance(value, str) and LINK_ALIAS.fullmatch(value)):
        where.fail(f"expected a link alias of letters, digits, '_' and '-', starting with a letter or digit, got {describe(value)}")
    return value


def restart_policy(name_where: Where, name: object, count_where: Where, count: object | None) -> RestartPolicy:
    if name not in RESTART_POLICIES or not isinstance(name, str):
        name_where.fail(f"expected one of {', '.join(RESTART_POLICIES)}, got {describe(name)}")
    if count is None:
        return RestartPolicy(name=name)
    if name != "on-failure":
        count_where.fail(f"only allowed with restart policy 'on-failure', not '{name}'")
    return RestartPolicy(
        name=name,
        maximum_retry_count=non_negative_int(count_where, count, "a whole number 0 or more"),
    )
