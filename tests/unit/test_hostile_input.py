"""Hostile and bad input: whatever the files or the resource inputs hold, the result is a model or
one of our own errors naming where the problem is, never a traceback.

Property-based (hypothesis): the strategies write documents shaped like the real formats, with
every value now and then replaced by anything YAML can hold, so that each validator is reached.
"""

from __future__ import annotations

import posixpath
import re
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from unittest import mock

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from flocker_provider.inputs import InvalidInputs, parse_application, parse_volume
from flocker_provider.planning.models import Application
from flocker_pulumi.flocker_config import ConfigError, load_application_config, load_configuration, yaml_files
from flocker_pulumi.flocker_config.yaml_files import MAX_YAML_BYTES, MAX_YAML_DEPTH, MAX_YAML_NODES

# Few enough examples for the unit suite; a failure found once is replayed first next time.
# No deadline: an example is judged by what it ends in, never by the clock of a shared machine.
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Each example writes and reads a file: fewer of them.
FILES = settings(PROPERTY, max_examples=100)

# An independent statement of the rules, to judge what the loaders accepted.
DOCKER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
FORBIDDEN_MOUNTS = {"/", "/proc", "/sys", "/dev", "/etc"}

# Strings that have broken parsers before: digits that are not ASCII, numbers longer than
# int() accepts, paths that climb out, names Docker refuses, separators Docker splits on.
TRICKY = st.sampled_from(
    [
        "",
        " ",
        "..",
        "/",
        "//",
        "/proc",
        "/proc/self",
        "//proc",
        "/sys/kernel",
        "/dev/sda",
        "/etc",
        "/etc/",
        "/data/../etc",
        "/data/..",
        "data",
        "./data",
        "/data:ro",
        "/da\x00ta",
        "/data\n",
        "/var/lib/data",
        "80:8080",
        "²:80",
        "٣:80",
        "80:٣",
        "on-failure:²",
        "on-failure:3",
        "no",
        "x=y",
        "=y",
        "A B=c",
        "\x00=1",
        "é",
        "repo:é",
        "clusterhq/elasticsearch",
        "localhost:5000/x:1",
        "-oProxyCommand=x",
        "a b",
        "a\nb",
        "web",
        "db",
        "10.0.0.1",
        "::1",
        "1e400",
        "2.5G",
        "٣M",
    ]
)
# Longer than int() reads (4300 digits), where a program splits a number out of a string.
LONG_NUMBERS = st.builds(
    "{}{}{}".format, st.sampled_from(["", "on-failure:"]), st.integers(4301, 4400).map(lambda n: "9" * n), st.sampled_from(["", ":80"])
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    TRICKY,
)
ANYTHING = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.one_of(st.text(max_size=6), TRICKY), children, max_size=3),
    max_leaves=8,
)


def sometimes(valid: st.SearchStrategy) -> st.SearchStrategy:
    """Mostly well-formed, so the validators behind the first one are reached too."""
    # one_of would pick either side half the time, whatever repeats it was given; and
    # hypothesis favours the ends of a range, so the one draw in ten is in its middle.
    return st.integers(0, 9).flatmap(lambda draw: ANYTHING if draw == 5 else valid)


BAD_NAMES = st.sampled_from(["-x", ".x", "a b", "é", "x/y", "a=b", "", "a\nb", "a\x00"])
# Hashable (no lists or mappings), for mapping keys too.
NAMES = st.integers(0, 19).flatmap(lambda draw: {9: SCALARS, 10: BAD_NAMES}.get(draw, st.sampled_from(["web", "db", "es", "a.b", "a_b-1"])))
PORT_NUMBERS = sometimes(st.integers(min_value=1, max_value=65535))
MOUNTPOINTS = sometimes(
    st.lists(
        st.sampled_from(["", ".", "..", "proc", "sys", "dev", "etc", "data", "lib", "a:b", "x y", "\x00"]), min_size=1, max_size=4
    ).map(lambda parts: "/".join(parts))
)
IMAGES = sometimes(st.sampled_from(["clusterhq/elasticsearch", "postgres:15", "localhost:5000/x:1", "Bad", "repo:é", "a@sha256:0"]))
ENVIRONMENT = sometimes(st.dictionaries(NAMES, sometimes(st.text(max_size=8)), max_size=3))

FLOCKER_APPLICATION = sometimes(
    st.fixed_dictionaries(
        {"image": IMAGES},
        optional={
            "ports": sometimes(
                st.lists(sometimes(st.fixed_dictionaries({"internal": PORT_NUMBERS, "external": PORT_NUMBERS})), max_size=3)
            ),
            "volume": sometimes(st.fixed_dictionaries({"mountpoint": MOUNTPOINTS}, optional={"maximum_size": sometimes(TRICKY)})),
            "environment": ENVIRONMENT,
            "links": sometimes(
                st.lists(
                    sometimes(st.fixed_dictionaries({"local_port": PORT_NUMBERS, "remote_port": PORT_NUMBERS, "alias": NAMES})),
                    max_size=2,
                )
            ),
            "mem_limit": sometimes(st.integers(min_value=0, max_value=2**40)),
            "cpu_shares": sometimes(st.integers(min_value=0, max_value=4096)),
            "restart_policy": sometimes(
                st.fixed_dictionaries(
                    {"name": sometimes(st.sampled_from(["never", "always", "on-failure"]))},
                    optional={"maximum_retry_count": sometimes(st.integers(min_value=0, max_value=10))},
                )
            ),
        },
    )
)
FLOCKER_DOCUMENTS = st.fixed_dictionaries(
    {"version": sometimes(st.just(1)), "applications": sometimes(st.dictionaries(NAMES, FLOCKER_APPLICATION, max_size=3))}
)

FIG_PORTS = st.one_of(
    TRICKY,
    st.builds("{}:{}".format, PORT_NUMBERS, PORT_NUMBERS),
    st.text(alphabet="0123456789:²٣ ", max_size=8),
    LONG_NUMBERS,
)
FIG_APPLICATION = sometimes(
    st.fixed_dictionaries(
        {"image": IMAGES},
        optional={
            "ports": sometimes(st.lists(sometimes(FIG_PORTS), max_size=3)),
            "volumes": sometimes(st.lists(MOUNTPOINTS, min_size=1, max_size=2)),
            "environment": st.one_of(ENVIRONMENT, st.lists(sometimes(st.builds("{}={}".format, NAMES, NAMES)), max_size=3)),
            "links": sometimes(st.lists(sometimes(st.builds("{}:{}".format, NAMES, NAMES) | NAMES), max_size=2)),
            "mem_limit": sometimes(st.integers(min_value=0, max_value=2**40)),
            "restart": sometimes(st.sampled_from(["no", "always", "on-failure", "on-failure:2"]) | TRICKY | LONG_NUMBERS),
        },
    )
)
FIG_DOCUMENTS = st.dictionaries(NAMES, FIG_APPLICATION, min_size=1, max_size=3)

DEPLOYMENT_DOCUMENTS = st.fixed_dictionaries(
    {
        "version": sometimes(st.just(1)),
        "nodes": sometimes(
            st.dictionaries(
                st.one_of(st.sampled_from(["10.0.0.1", "node-2.example", "::1"]), TRICKY, st.text(max_size=6)),
                sometimes(st.lists(sometimes(st.sampled_from(["web", "db"])), max_size=3)),
                max_size=3,
            )
        ),
    }
)
VALID_APPLICATIONS = "version: 1\napplications:\n  web: {image: nginx, ports: [{internal: 80, external: 8080}]}\n  db: {image: postgres}\n"
# Characters YAML gives meaning to, for documents that are not YAML at all.
YAML_TEXT = st.text(alphabet="{}[]:,-&*!|>'\"%@`?# \n\t\\abc1/.<=~", max_size=60)


@contextmanager
def yaml_file(text: str | bytes, name: str = "application.yml") -> Iterator[str]:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory, name)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        yield str(path)


def loaded_or_refused(load: Callable[[], object], file: str) -> object | None:
    """The model, or None when a ConfigError naming ``file`` refused the document; anything
    else that escapes fails the property."""
    try:
        return load()
    except ConfigError as error:
        assert str(error).startswith(file), error
        assert error.file == file
        return None


def safe_mountpoint(path: str) -> bool:
    parts = PurePosixPath(path).parts
    system = len(parts) > 1 and parts[1] in ("proc", "sys", "dev")
    return path.startswith("/") and ".." not in path.split("/") and path not in FORBIDDEN_MOUNTS and not system and ":" not in path


def assert_sound(application: Application) -> None:
    """What an accepted application may hand to Docker."""
    assert DOCKER_NAME.fullmatch(application.name)
    assert all(1 <= p <= 65535 for port in application.ports for p in (port.internal, port.external))
    if application.volume is not None:
        assert safe_mountpoint(application.volume.mountpoint), application.volume.mountpoint
        assert posixpath.normpath(application.volume.mountpoint) == application.volume.mountpoint
    for key, value in application.environment:
        assert key and "=" not in key and not any(c.isspace() or ord(c) < 32 for c in key) and "\x00" not in value
    for link in application.links:
        assert re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_-]*", link.alias)


def dump(document: object) -> str:
    return yaml.safe_dump(document, allow_unicode=True)


@pytest.mark.parametrize(("documents", "name"), [(FLOCKER_DOCUMENTS, "application.yml"), (FIG_DOCUMENTS, "fig.yml")])
@FILES
@given(data=st.data())
def test_any_application_file_loads_or_is_refused_with_its_name(documents: st.SearchStrategy, name: str, data: st.DataObject) -> None:
    with yaml_file(dump(data.draw(documents)), name) as file:
        loaded = loaded_or_refused(lambda: load_application_config(file), file)
    event("accepted" if loaded else "refused")
    for application, _size in (loaded or {}).values():
        assert_sound(application)


@FILES
@given(DEPLOYMENT_DOCUMENTS)
def test_any_deployment_file_loads_or_is_refused_with_its_name(document: dict) -> None:
    with yaml_file(VALID_APPLICATIONS) as applications, yaml_file(dump(document), "deployment.yml") as deployment:
        loaded = loaded_or_refused(lambda: load_configuration(deployment, applications), deployment)
    for node in loaded.nodes if loaded else ():
        assert re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*|[0-9a-fA-F:.]*:[0-9a-fA-F:.]*", node), node


@FILES
@given(st.one_of(YAML_TEXT, st.binary(max_size=40).map(lambda data: data.decode("latin-1"))))
def test_any_text_at_all_is_a_model_or_a_config_error(text: str) -> None:
    with yaml_file(text.encode("utf-8", "surrogateescape")) as file:
        loaded_or_refused(lambda: load_application_config(file), file)


@FILES
@given(MOUNTPOINTS)
def test_the_loader_and_the_provider_agree_on_mountpoints(mountpoint: object) -> None:
    document = {"version": 1, "applications": {"db": {"image": "postgres", "volume": {"mountpoint": mountpoint}}}}
    with yaml_file(dump(document)) as file:
        by_loader = loaded_or_refused(lambda: load_application_config(file), file)
    props = {"name": "db", "node": "node1", "image": "postgres", "volume": {"name": "v", "mountpoint": mountpoint}}
    try:
        by_provider = parse_application(props)
    except InvalidInputs:
        by_provider = None
    assert (by_loader is None) == (by_provider is None)
    if by_provider is not None:
        assert by_loader["db"][0].volume.mountpoint == by_provider.application.volume.mountpoint


# -- resource inputs ----------------------------------------------------------------------

NODE_PROPS = {
    "node": sometimes(st.sampled_from(["node1", "10.0.0.1"])),
    "node_address": sometimes(st.sampled_from(["10.0.0.1", "::1", "node-2.example"])),
    "docker_host": sometimes(st.just("tcp://10.0.0.1:2375")),
    "tls": sometimes(
        st.none() | st.fixed_dictionaries({"ca_cert": st.just("ca"), "client_cert": st.just("c"), "client_key": st.just("k")})
    ),
    "node_error": sometimes(st.none()),
}
COMMON_PROPS = {
    "project": sometimes(st.just("p")),
    "stack": sometimes(st.sampled_from(["dev", "s"])),
    **NODE_PROPS,
    "route_nodes": sometimes(st.lists(sometimes(st.fixed_dictionaries({"node": NAMES, "node_address": NAMES})), max_size=2)),
    "hold_seconds": sometimes(st.floats(min_value=0.1, max_value=60)),
    "router_image": sometimes(st.just("flocker/base:local")),
}
APPLICATION_PROPS = st.fixed_dictionaries(
    {"name": sometimes(NAMES)},
    optional={
        **COMMON_PROPS,
        "image": IMAGES,
        "ports": sometimes(st.lists(sometimes(st.fixed_dictionaries({"internal": PORT_NUMBERS, "external": PORT_NUMBERS})), max_size=3)),
        "environment": ENVIRONMENT,
        "volume": sometimes(
            st.fixed_dictionaries({"name": sometimes(st.just("flocker-s-db")), "mountpoint": MOUNTPOINTS}, optional={"node": NAMES})
        ),
        "links": sometimes(
            st.lists(
                sometimes(st.fixed_dictionaries({"alias": NAMES, "local_port": PORT_NUMBERS, "remote_port": PORT_NUMBERS})), max_size=2
            )
        ),
        "mem_limit": sometimes(st.integers(min_value=1, max_value=2**40)),
        "cpu_shares": sometimes(st.integers(min_value=1, max_value=4096)),
        "restart_policy": sometimes(st.fixed_dictionaries({"name": sometimes(st.just("on-failure")), "maximum_retry_count": PORT_NUMBERS})),
        "command": sometimes(st.lists(st.text(max_size=5), max_size=3)),
        "health_check": sometimes(st.fixed_dictionaries({"command": sometimes(st.just("true")), "interval": sometimes(st.just(1.0))})),
        "wait_timeout": sometimes(st.floats(min_value=1, max_value=600)),
    },
)
VOLUME_PROPS = st.fixed_dictionaries(
    {"name": sometimes(NAMES)},
    optional={
        **COMMON_PROPS,
        "maximum_size": sometimes(st.integers(min_value=1, max_value=2**40)),
        "keep_retired": sometimes(st.booleans()),
        "move_timeout": sometimes(st.floats(min_value=1, max_value=3600)),
        "transfer_image": sometimes(st.just("flocker/base:local")),
        "downtime_budget": sometimes(st.floats(min_value=0.01, max_value=10)),
    },
)


def parsed_or_refused(parse: Callable[[dict], object], props: dict) -> object | None:
    try:
        return parse(props)
    except InvalidInputs as error:
        # Each failure names the property it is about.
        assert error.failures and all(prop and reason for prop, reason in error.failures), error.failures
        return None


@PROPERTY
@given(APPLICATION_PROPS)
def test_any_application_inputs_parse_or_are_check_failures(props: dict) -> None:
    parsed = parsed_or_refused(parse_application, props)
    if parsed is not None:
        assert_sound(parsed.application)
        assert DOCKER_NAME.fullmatch(f"flocker-{parsed.owner.stack}-{parsed.owner.resource}")
        assert parsed.volume_name is None or DOCKER_NAME.fullmatch(parsed.volume_name)
        assert all(DOCKER_NAME.fullmatch(node.name) for node in parsed.routing.nodes if node.name)


@PROPERTY
@given(VOLUME_PROPS)
def test_any_volume_inputs_parse_or_are_check_failures(props: dict) -> None:
    parsed = parsed_or_refused(parse_volume, props)
    if parsed is not None:
        assert DOCKER_NAME.fullmatch(parsed.name)


# -- bombs and big files ------------------------------------------------------------------

BILLION_LAUGHS = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]
    + ["version: 1", "applications: {web: {image: nginx, environment: {X: *i}}}"]
)


def refused_quickly(text: str | bytes, name: str = "application.yml") -> str:
    """The refusal of ``text``, after composing no more values than the limits allow. PyYAML
    takes 10 s to read 1 MB, so a refusal is quick when the work before it is bounded by the
    limits; that work is counted here, not timed (the machines that run this are shared)."""
    composed = 0
    compose = yaml_files._BoundedLoader.compose_node

    def counted(self: yaml_files._BoundedLoader, parent: object, index: object) -> object:
        nonlocal composed
        composed += 1
        return compose(self, parent, index)  # type: ignore[arg-type]

    with yaml_file(text, name) as file, mock.patch.object(yaml_files._BoundedLoader, "compose_node", counted):
        with pytest.raises(ConfigError) as error:
            load_application_config(file)
    assert composed <= MAX_YAML_NODES + MAX_YAML_DEPTH + 1, composed
    assert str(error.value).startswith(file)
    return str(error.value)[len(file) :]


def test_an_alias_bomb_is_refused_quickly() -> None:
    assert f"more than {MAX_YAML_NODES} values once its aliases are expanded" in refused_quickly(BILLION_LAUGHS)


def test_a_long_list_is_refused_at_the_limit_not_at_its_end() -> None:
    text = "version: 1\napplications: {}\nx: [" + "1," * (MAX_YAML_NODES + 5000) + "1]\n"
    assert f"more than {MAX_YAML_NODES} values" in refused_quickly(text)


def test_a_file_too_large_is_refused_before_it_is_parsed() -> None:
    # Valid YAML all through: only the size refuses it.
    text = "version: 1\napplications: {}\n" + "#" * MAX_YAML_BYTES
    assert refused_quickly(text) == f": the file is larger than {MAX_YAML_BYTES} bytes; a configuration is far smaller."


def test_nesting_too_deep_is_refused() -> None:
    assert f"nested deeper than {MAX_YAML_DEPTH} levels" in refused_quickly("[" * 5000 + "]" * 5000)


def test_a_value_that_contains_itself_is_refused() -> None:
    assert "refers to itself" in refused_quickly("version: 1\napplications: &loop {web: {image: nginx, environment: *loop}}\n")


def test_aliases_and_merges_of_a_real_file_still_load() -> None:
    fig = "web: &web {image: nginx, environment: {MODE: prod}}\napi: {<<: *web, ports: ['8080:80']}\n"
    with yaml_file(fig, "fig.yml") as file:
        loaded = load_application_config(file)
    assert loaded["api"][0].environment == loaded["web"][0].environment == (("MODE", "prod"),)
