"""Tests for the Flocker configuration loader (application.yml, fig.yml, deployment.yml)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from flocker_provider.planning.models import Application, Link, Port, RestartPolicy, VolumeMount
from flocker_pulumi.flocker_config import (
    ConfigError,
    Configuration,
    ConfiguredApplication,
    ImageName,
    load_application_config,
    load_configuration,
    parse_image_name,
    parse_size,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "elk"

# The configuration files of the ClusterHQ ELK blog post, verbatim.
ARTICLE_APPLICATION_YML = """\
"version": 1
"applications":
  "elasticsearch":
    "image": "clusterhq/elasticsearch"
    "ports":
    - "internal": 9200
      "external": 9200
    "volume":
      "mountpoint": "/var/lib/elasticsearch/"
  "logstash":
    "image": "clusterhq/logstash"
    "ports":
    - "internal": 5000
      "external": 5000
    "links":
    - "local_port": 9200
      "remote_port": 9200
      "alias": "es"
  "kibana":
    "image": "clusterhq/kibana"
    "ports":
    - "internal": 8080
      "external": 80
"""

ARTICLE_DEPLOYMENT_YML = """\
"version": 1
"nodes":
  "172.16.255.250": ["elasticsearch"]
  "172.16.255.251": ["logstash"]
  "172.16.255.252": ["kibana"]
"""

ARTICLE_FIG_YML = """\
elasticsearch:
  image: clusterhq/elasticsearch
  ports:
    - "9200:9200"
  volumes:
    - /var/lib/elasticsearch/
logstash:
  image: clusterhq/logstash
  ports:
    - "5000:5000"
  links:
    - "elasticsearch:es"
kibana:
  image: clusterhq/kibana
  ports:
    - "80:8080"
"""

ELASTICSEARCH = Application(
    name="elasticsearch",
    image="clusterhq/elasticsearch:latest",
    ports=(Port(internal=9200, external=9200),),
    volume=VolumeMount(volume="elasticsearch", mountpoint="/var/lib/elasticsearch"),
)
LOGSTASH = Application(
    name="logstash",
    image="clusterhq/logstash:latest",
    ports=(Port(internal=5000, external=5000),),
    links=(Link(alias="es", local_port=9200, remote_port=9200),),
)
KIBANA = Application(
    name="kibana",
    image="clusterhq/kibana:latest",
    ports=(Port(internal=8080, external=80),),
)
ARTICLE_APPLICATIONS = {
    "elasticsearch": (ELASTICSEARCH, None),
    "logstash": (LOGSTASH, None),
    "kibana": (KIBANA, None),
}
ARTICLE_CONFIGURATION = Configuration(
    applications=(
        ConfiguredApplication(ELASTICSEARCH, "172.16.255.250", None),
        ConfiguredApplication(KIBANA, "172.16.255.252", None),
        ConfiguredApplication(LOGSTASH, "172.16.255.251", None),
    ),
    nodes=("172.16.255.250", "172.16.255.251", "172.16.255.252"),
)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # Relative file names keep the expected messages exactly as a user would see them.
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(directory: Path, name: str, text: str) -> str:
    (directory / name).write_text(text)
    return name


# --- the article ------------------------------------------------------------------


def test_article_files_load_into_the_expected_configuration(workdir: Path) -> None:
    write(workdir, "application.yml", ARTICLE_APPLICATION_YML)
    write(workdir, "deployment.yml", ARTICLE_DEPLOYMENT_YML)
    assert load_configuration("deployment.yml", "application.yml") == ARTICLE_CONFIGURATION


def test_article_application_config_in_flocker_format(workdir: Path) -> None:
    write(workdir, "application.yml", ARTICLE_APPLICATION_YML)
    assert load_application_config("application.yml") == ARTICLE_APPLICATIONS


def test_fig_equivalent_of_the_article_loads_to_the_same_applications(
    workdir: Path,
) -> None:
    write(workdir, "fig.yml", ARTICLE_FIG_YML)
    assert load_application_config("fig.yml") == ARTICLE_APPLICATIONS


# The example files are the article's, with the images built here (no registry): OpenSearch,
# rsyslog, and a log page in Kibana's place, which reads the store on the server side (a link).
LOCAL_IMAGES = {"elasticsearch": "flocker/opensearch:local", "logstash": "flocker/rsyslog:local", "kibana": "flocker/logpage:local"}
LOCAL_APPLICATIONS = {
    name: (
        dataclasses.replace(app, image=LOCAL_IMAGES[name], links=LOGSTASH.links if name == "kibana" else app.links),
        size,
    )
    for name, (app, size) in ARTICLE_APPLICATIONS.items()
}


def test_example_files_are_the_article_with_local_images() -> None:
    assert (EXAMPLES / "deployment.yml").read_text() == ARTICLE_DEPLOYMENT_YML
    assert load_application_config(EXAMPLES / "application.yml") == LOCAL_APPLICATIONS
    assert load_application_config(EXAMPLES / "fig.yml") == LOCAL_APPLICATIONS


def test_migration_step_of_the_article_moves_elasticsearch(workdir: Path) -> None:
    write(workdir, "application.yml", ARTICLE_APPLICATION_YML)
    write(
        workdir,
        "deployment.yml",
        """\
"version": 1
"nodes":
  "172.16.255.250": []
  "172.16.255.251": ["logstash"]
  "172.16.255.252": ["kibana"]
  "172.16.255.253": ["elasticsearch"]
""",
    )
    configuration = load_configuration("deployment.yml", "application.yml")
    assert configuration.nodes == (
        "172.16.255.250",
        "172.16.255.251",
        "172.16.255.252",
        "172.16.255.253",
    )
    assert configuration.applications[0] == ConfiguredApplication(ELASTICSEARCH, "172.16.255.253", None)


def test_application_listed_on_no_node_is_loaded_but_not_running(workdir: Path) -> None:
    write(workdir, "application.yml", ARTICLE_APPLICATION_YML)
    write(
        workdir,
        "deployment.yml",
        'version: 1\nnodes:\n  "10.0.0.1": [elasticsearch, logstash]\n',
    )
    configuration = load_configuration("deployment.yml", "application.yml")
    assert configuration == Configuration(
        applications=(
            ConfiguredApplication(ELASTICSEARCH, "10.0.0.1", None),
            ConfiguredApplication(KIBANA, None, None),
            ConfiguredApplication(LOGSTASH, "10.0.0.1", None),
        ),
        nodes=("10.0.0.1",),
    )


# --- every accepted key -------------------------------------------------------------


def test_every_flocker_key(workdir: Path) -> None:
    write(
        workdir,
        "application.yml",
        """\
version: 1
applications:
  db:
    image: "registry.example.com:5000/team/postgres:9.4"
    ports:
      - {internal: 5432, external: 5432}
    volume:
      mountpoint: /var/lib/postgresql/data
      maximum_size: "2.5G"
    environment:
      POSTGRES_USER: flocker
      EMPTY: ""
    mem_limit: 100000000
    cpu_shares: 512
    restart_policy:
      name: on-failure
      maximum_retry_count: 3
  web:
    image: "nginx@sha256:%s"
    links:
      - {local_port: 5432, remote_port: 5432, alias: db}
    restart_policy: {name: always}
"""
        % ("a" * 64),
    )
    assert load_application_config("application.yml") == {
        "db": (
            Application(
                name="db",
                image="registry.example.com:5000/team/postgres:9.4",
                ports=(Port(internal=5432, external=5432),),
                environment=(("EMPTY", ""), ("POSTGRES_USER", "flocker")),
                volume=VolumeMount(volume="db", mountpoint="/var/lib/postgresql/data"),
                mem_limit=100000000,
                cpu_shares=512,
                restart_policy=RestartPolicy("on-failure", 3),
            ),
            2684354560,
        ),
        "web": (
            Application(
                name="web",
                image="nginx@sha256:" + "a" * 64,
                links=(Link(alias="db", local_port=5432, remote_port=5432),),
                restart_policy=RestartPolicy("always"),
            ),
            None,
        ),
    }


def test_every_fig_key(workdir: Path) -> None:
    write(
        workdir,
        "fig.yml",
        """\
db:
  image: postgres:9.4
  ports: ["5432:5432", "15432:5433"]
  volumes: [/var/lib/postgresql/data]
  environment: [POSTGRES_USER=flocker, "OPTS=a=b"]
  mem_limit: 100000000
  cpu_shares: 512
  restart: "on-failure:3"
web:
  image: nginx
  links: [db]
  environment: {MODE: production}
  restart: "no"
""",
    )
    assert load_application_config("fig.yml") == {
        "db": (
            Application(
                name="db",
                image="postgres:9.4",
                ports=(Port(5432, 5432), Port(5433, 15432)),
                environment=(("OPTS", "a=b"), ("POSTGRES_USER", "flocker")),
                volume=VolumeMount(volume="db", mountpoint="/var/lib/postgresql/data"),
                mem_limit=100000000,
                cpu_shares=512,
                restart_policy=RestartPolicy("on-failure", 3),
            ),
            None,
        ),
        "web": (
            Application(
                name="web",
                image="nginx:latest",
                # One link per port of the target, alias defaulting to its name.
                links=(Link("db", 5432, 5432), Link("db", 5433, 15432)),
                environment=(("MODE", "production"),),
            ),
            None,
        ),
    }


def test_yaml_merge_keys_are_not_mistaken_for_duplicates(workdir: Path) -> None:
    write(
        workdir,
        "application.yml",
        """\
version: 1
applications:
  base: &base {image: busybox, cpu_shares: 1}
  other:
    <<: *base
    cpu_shares: 2
""",
    )
    apps = load_application_config("application.yml")
    assert apps["other"] == (Application("other", "busybox:latest", cpu_shares=2), None)


# --- image names and sizes ------------------------------------------------------------

SHA = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("text", "expected", "canonical"),
    [
        ("busybox", ImageName("busybox", "latest", None), "busybox:latest"),
        ("user/repo", ImageName("user/repo", "latest", None), "user/repo:latest"),
        ("user/repo:1.2", ImageName("user/repo", "1.2", None), "user/repo:1.2"),
        (
            "registry:5000/repo:tag",
            ImageName("registry:5000/repo", "tag", None),
            "registry:5000/repo:tag",
        ),
        (
            "registry:5000/repo",
            ImageName("registry:5000/repo", "latest", None),
            "registry:5000/repo:latest",
        ),
        (
            "localhost/a/b_c.d-e",
            ImageName("localhost/a/b_c.d-e", "latest", None),
            "localhost/a/b_c.d-e:latest",
        ),
        (f"repo@{SHA}", ImageName("repo", None, SHA), f"repo@{SHA}"),
        (f"repo:1@{SHA}", ImageName("repo", "1", SHA), f"repo:1@{SHA}"),
        (
            f"host.io:443/a/b:v2@{SHA}",
            ImageName("host.io:443/a/b", "v2", SHA),
            f"host.io:443/a/b:v2@{SHA}",
        ),
    ],
)
def test_parse_image_name(text: str, expected: ImageName, canonical: str) -> None:
    assert parse_image_name(text) == expected
    assert str(parse_image_name(text)) == canonical


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "the image name is empty"),
        (":tag", "the repository part of the image name is empty"),
        ("repo:", "the tag '' is not valid"),
        ("repo:bad/tag", "the registry 'repo:bad' is not a valid host[:port]"),
        ("Clusterhq/Kibana", "the repository 'Clusterhq/Kibana' must be lowercase"),
        ("user//repo", "the repository 'user//repo' has an empty path component"),
        ("repo@sha256:abc", "a sha256 digest must be 'sha256:' followed by 64"),
        ("repo@nonsense", "the digest 'nonsense' is not of the form 'algorithm:hex'"),
        ("my repo", "an image name cannot contain spaces"),
        ("bad_host:port/repo", "the registry 'bad_host:port' is not a valid host[:port]"),
        ("-repo", "the repository path component '-repo' is not valid"),
    ],
)
def test_parse_image_name_rejects(text: str, reason: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_image_name(text)
    assert reason in str(caught.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1073741824", 1073741824),
        ("1", 1),
        ("0", 0),
        ("500M", 500 * 1024**2),
        ("500m", 500 * 1024**2),
        ("2.5G", 2684354560),
        ("1K", 1024),
        ("1T", 1024**4),
        ("0.5K", 512),
        ("1.0001K", 1025),  # whole bytes, rounded up
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "M", "12Q", "-5M", "1.G", "1e9", "five", "1 G B"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="is not a size"):
        parse_size(text)


def test_parse_size_rejects_non_strings() -> None:
    with pytest.raises(ValueError, match="a size must be a string, not int"):
        parse_size(500)  # type: ignore[arg-type]


# --- every error, with its exact message ------------------------------------------

MISSING = None  # the file is not written at all
ALONE = "load application.yml alone"  # the row needs no deployment.yml


def app(name: str, body: str) -> str:
    """A Flocker-format application.yml with one application given in flow style."""
    return f"version: 1\napplications:\n  {name}: {body}\n"


def apps(*entries: str) -> str:
    return "version: 1\napplications:\n" + "".join(f"  {e}\n" for e in entries)


DEPLOY_OK = ARTICLE_DEPLOYMENT_YML

BAD_INPUTS: list[tuple[str, str | None, str | None, str]] = [
    # (id, application.yml, deployment.yml or ALONE, the exact message)
    # ---- files and YAML
    (
        "application file missing",
        MISSING,
        ALONE,
        "application.yml: file not found.",
    ),
    (
        "deployment file missing",
        ARTICLE_APPLICATION_YML,
        MISSING,
        "deployment.yml: file not found.",
    ),
    (
        "unparsable YAML with its line",
        "version: 1\napplications:\n  web:\n    image: nginx\n    ports: [\n      {internal: 80, external: 80}\n    bad: here: now\n",
        ALONE,
        "application.yml, line 7: not valid YAML (expected ',' or ']', but got '<scalar>').",
    ),
    (
        "mapping values not allowed",
        "version: 1\napplications: web: image\n",
        ALONE,
        "application.yml, line 2: not valid YAML (mapping values are not allowed here).",
    ),
    (
        "YAML the parser half-recognises",
        "version: 1\napplications: {web: {image: nginx, cpu_shares: 2014-13-45}}\n",
        ALONE,
        "application.yml: not valid YAML (month must be in 1..12).",
    ),
    (
        "duplicate key",
        "version: 1\napplications:\n  web:\n    image: nginx\n    image: httpd\n",
        ALONE,
        "application.yml, line 5: not valid YAML (duplicate key 'image').",
    ),
    (
        "application.yml not a mapping",
        "- web\n- db\n",
        ALONE,
        "application.yml: expected a mapping at the top level, got a list.",
    ),
    (
        "application.yml empty",
        "",
        ALONE,
        "application.yml: expected a mapping at the top level, got nothing (the file is empty).",
    ),
    (
        "deployment.yml not a mapping",
        ARTICLE_APPLICATION_YML,
        "just text\n",
        "deployment.yml: expected a mapping at the top level, got 'just text'.",
    ),
    (
        "neither fig nor flocker",
        "web: nginx\n",
        ALONE,
        "application.yml: Configuration is not a valid Fig or Flocker format.",
    ),
    # ---- versions and top-level keys
    (
        "application version missing",
        "applications: {}\n",
        ALONE,
        "application.yml: key 'version': missing; expected 'version: 1'.",
    ),
    (
        "application version wrong",
        "version: 2\napplications: {}\n",
        ALONE,
        "application.yml: key 'version': expected 'version: 1', got 2.",
    ),
    (
        "application version boolean",
        "version: true\napplications: {}\n",
        ALONE,
        "application.yml: key 'version': expected 'version: 1', got true.",
    ),
    (
        "deployment version missing",
        ARTICLE_APPLICATION_YML,
        "nodes: {}\n",
        "deployment.yml: key 'version': missing; expected 'version: 1'.",
    ),
    (
        "deployment version wrong",
        ARTICLE_APPLICATION_YML,
        "version: '1'\nnodes: {}\n",
        "deployment.yml: key 'version': expected 'version: 1', got '1'.",
    ),
    (
        "applications missing",
        "version: 1\n",
        ALONE,
        "application.yml: key 'applications': missing; expected a mapping of application names.",
    ),
    (
        "applications not a mapping",
        "version: 1\napplications: [web]\n",
        ALONE,
        "application.yml: key 'applications': expected a mapping of application names, got a list.",
    ),
    (
        "unknown top-level key in application.yml",
        "version: 1\napplications: {}\nnodes: {}\n",
        ALONE,
        "application.yml: unrecognised keys: nodes; allowed keys are applications, version.",
    ),
    (
        "nodes missing",
        ARTICLE_APPLICATION_YML,
        "version: 1\n",
        "deployment.yml: key 'nodes': missing; expected a mapping of node addresses to application lists.",
    ),
    (
        "nodes not a mapping",
        ARTICLE_APPLICATION_YML,
        "version: 1\nnodes: [a, b]\n",
        "deployment.yml: key 'nodes': expected a mapping of node addresses to application lists, got a list.",
    ),
    (
        "unknown top-level key in deployment.yml",
        ARTICLE_APPLICATION_YML,
        "version: 1\nnodes: {}\napplications: {}\n",
        "deployment.yml: unrecognised keys: applications; allowed keys are nodes, version.",
    ),
    # ---- one application
    (
        "application not a mapping",
        app("web", "nginx"),
        ALONE,
        "application.yml: application 'web': expected a mapping of settings such as 'image' and 'ports', got 'nginx'.",
    ),
    (
        "application name not usable",
        app("'my web'", "{image: nginx}"),
        ALONE,
        "application.yml: key 'applications': expected an application name of "
        "letters, digits, '_', '.' and '-', starting with a letter or digit, "
        "got 'my web'.",
    ),
    (
        "unknown application keys",
        app("web", "{image: nginx, x: 1, command: ls}"),
        ALONE,
        "application.yml: application 'web': unrecognised keys: x, command; "
        "allowed keys are cpu_shares, environment, image, links, mem_limit, ports, "
        "restart_policy, volume.",
    ),
    (
        "missing image",
        app("web", "{ports: []}"),
        ALONE,
        "application.yml: application 'web', key 'image': missing; expected an image name such as 'clusterhq/elasticsearch'.",
    ),
    (
        "image not a string",
        app("web", "{image: 5}"),
        ALONE,
        "application.yml: application 'web', key 'image': expected an image name such as 'clusterhq/elasticsearch', got 5.",
    ),
    (
        "empty repository in image",
        app("web", "{image: ':1.0'}"),
        ALONE,
        "application.yml: application 'web', key 'image': not a valid image name ':1.0': the repository part of the image name is empty.",
    ),
    (
        "bad image name",
        app("web", "{image: Clusterhq/Kibana}"),
        ALONE,
        "application.yml: application 'web', key 'image': not a valid image name "
        "'Clusterhq/Kibana': the repository 'Clusterhq/Kibana' must be lowercase.",
    ),
    # ---- ports
    (
        "ports not a list",
        app("web", "{image: nginx, ports: {internal: 80, external: 80}}"),
        ALONE,
        "application.yml: application 'web', key 'ports': expected a list of {internal, external} mappings, got a mapping.",
    ),
    (
        "port not a mapping",
        app("web", "{image: nginx, ports: [80]}"),
        ALONE,
        "application.yml: application 'web', key 'ports[0]': expected a mapping with 'internal' and 'external', got 80.",
    ),
    (
        "port missing internal",
        app("web", "{image: nginx, ports: [{external: 80}]}"),
        ALONE,
        "application.yml: application 'web', key 'ports[0].internal': missing; expected the container's port.",
    ),
    (
        "port missing external",
        app("web", "{image: nginx, ports: [{internal: 80}]}"),
        ALONE,
        "application.yml: application 'web', key 'ports[0].external': missing; expected the port on the nodes.",
    ),
    (
        "port not an integer",
        app("logstash", "{image: x, ports: [{internal: 5000, external: abc}]}"),
        ALONE,
        "application.yml: application 'logstash', key 'ports[0].external': expected an integer port 1-65535, got 'abc'.",
    ),
    (
        "port out of range",
        app("web", "{image: nginx, ports: [{internal: 70000, external: 80}]}"),
        ALONE,
        "application.yml: application 'web', key 'ports[0].internal': expected an integer port 1-65535, got 70000.",
    ),
    (
        "port zero",
        app("web", "{image: nginx, ports: [{internal: 80, external: 0}]}"),
        ALONE,
        "application.yml: application 'web', key 'ports[0].external': expected an integer port 1-65535, got 0.",
    ),
    (
        "port boolean",
        app("web", "{image: nginx, ports: [{internal: true, external: 80}]}"),
        ALONE,
        "application.yml: application 'web', key 'ports[0].internal': expected an integer port 1-65535, got true.",
    ),
    (
        "unknown port keys",
        app("web", "{image: nginx, ports: [{internal: 80, external: 80, udp: 1}]}"),
        ALONE,
        "application.yml: application 'web', key 'ports[0]': unrecognised keys: udp; allowed keys are external, internal.",
    ),
    # ---- volume
    (
        "volume not a mapping",
        app("db", "{image: pg, volume: /data}"),
        ALONE,
        "application.yml: application 'db', key 'volume': expected a mapping with 'mountpoint', got '/data'.",
    ),
    (
        "volume missing mountpoint",
        app("db", "{image: pg, volume: {maximum_size: 1G}}"),
        ALONE,
        "application.yml: application 'db', key 'volume.mountpoint': missing; expected an absolute path such as '/var/lib/data'.",
    ),
    (
        "volume mountpoint not absolute",
        app("db", "{image: pg, volume: {mountpoint: data}}"),
        ALONE,
        "application.yml: application 'db', key 'volume.mountpoint': expected an absolute path such as '/var/lib/data', got 'data'.",
    ),
    (
        "volume mountpoint root",
        app("db", "{image: pg, volume: {mountpoint: /}}"),
        ALONE,
        "application.yml: application 'db', key 'volume.mountpoint': the volume cannot be mounted over the container's root '/'.",
    ),
    (
        "unknown volume keys",
        app("db", "{image: pg, volume: {mountpoint: /d, name: x}}"),
        ALONE,
        "application.yml: application 'db', key 'volume': unrecognised keys: name; allowed keys are maximum_size, mountpoint.",
    ),
    (
        "maximum_size not a string",
        app("db", "{image: pg, volume: {mountpoint: /d, maximum_size: 1000}}"),
        ALONE,
        "application.yml: application 'db', key 'volume.maximum_size': "
        "expected a size string such as '500M' or '2.5G' (quote a plain byte count), "
        "got 1000.",
    ),
    (
        "maximum_size unparsable",
        app("db", "{image: pg, volume: {mountpoint: /d, maximum_size: lots}}"),
        ALONE,
        "application.yml: application 'db', key 'volume.maximum_size': expected a size such as '500M', '2.5G' or '1073741824', got 'lots'.",
    ),
    (
        "maximum_size zero",
        app("db", "{image: pg, volume: {mountpoint: /d, maximum_size: '0M'}}"),
        ALONE,
        "application.yml: application 'db', key 'volume.maximum_size': expected a size greater than zero, got '0M'.",
    ),
    # ---- environment
    (
        "environment not a mapping",
        app("web", "{image: nginx, environment: [A=1]}"),
        ALONE,
        "application.yml: application 'web', key 'environment': expected a mapping of variable names to strings, got a list.",
    ),
    (
        "environment value not a string",
        app("web", "{image: nginx, environment: {WORKERS: 4}}"),
        ALONE,
        "application.yml: application 'web', key 'environment.WORKERS': "
        "the value of 'WORKERS' must be a string; got type 'int' (quote it in the YAML).",
    ),
    (
        "environment name with '='",
        app("web", "{image: nginx, environment: {'A=B': x}}"),
        ALONE,
        "application.yml: application 'web', key 'environment.A=B': "
        "expected an environment variable name without '=', spaces or control characters, got 'A=B'.",
    ),
    # ---- links
    (
        "links not a list",
        app("web", "{image: nginx, links: db}"),
        ALONE,
        "application.yml: application 'web', key 'links': expected a list of {local_port, remote_port, alias} mappings, got 'db'.",
    ),
    (
        "link missing alias",
        app("web", "{image: nginx, links: [{local_port: 1, remote_port: 2}]}"),
        ALONE,
        "application.yml: application 'web', key 'links[0].alias': missing; expected a name such as 'es'.",
    ),
    (
        "link port not an integer",
        app("web", "{image: nginx, links: [{local_port: '1', remote_port: 2, alias: a}]}"),
        ALONE,
        "application.yml: application 'web', key 'links[0].local_port': expected an integer port 1-65535, got '1'.",
    ),
    (
        "link alias unusable",
        app("web", "{image: nginx, links: [{local_port: 1, remote_port: 2, alias: 'a b'}]}"),
        ALONE,
        "application.yml: application 'web', key 'links[0].alias': "
        "expected a link alias of letters, digits, '_' and '-', starting with a letter "
        "or digit, got 'a b'.",
    ),
    (
        "unknown link keys",
        app("web", "{image: nginx, links: [{local_port: 1, remote_port: 2, alias: a, proto: udp}]}"),
        ALONE,
        "application.yml: application 'web', key 'links[0]': unrecognised keys: proto; allowed keys are alias, local_port, remote_port.",
    ),
    # ---- resources and restart policy
    (
        "mem_limit not an integer",
        app("web", "{image: nginx, mem_limit: 1G}"),
        ALONE,
        "application.yml: application 'web', key 'mem_limit': expected a memory limit in bytes (an integer), got '1G'.",
    ),
    (
        "cpu_shares not an integer",
        app("web", "{image: nginx, cpu_shares: 0.5}"),
        ALONE,
        "application.yml: application 'web', key 'cpu_shares': expected an integer number of CPU shares, got 0.5.",
    ),
    (
        "restart_policy missing name",
        app("web", "{image: nginx, restart_policy: {maximum_retry_count: 2}}"),
        ALONE,
        "application.yml: application 'web', key 'restart_policy.name': missing; expected one of never, always, on-failure.",
    ),
    (
        "restart_policy unknown name",
        app("web", "{image: nginx, restart_policy: {name: sometimes}}"),
        ALONE,
        "application.yml: application 'web', key 'restart_policy.name': expected one of never, always, on-failure, got 'sometimes'.",
    ),
    (
        "maximum_retry_count without on-failure",
        app("web", "{image: nginx, restart_policy: {name: always, maximum_retry_count: 2}}"),
        ALONE,
        "application.yml: application 'web', key 'restart_policy.maximum_retry_count': "
        "only allowed with restart policy 'on-failure', not 'always'.",
    ),
    (
        "maximum_retry_count negative",
        app("web", "{image: nginx, restart_policy: {name: on-failure, maximum_retry_count: -1}}"),
        ALONE,
        "application.yml: application 'web', key 'restart_policy.maximum_retry_count': expected a whole number 0 or more, got -1.",
    ),
    # ---- across applications
    (
        "two applications claim one external port",
        apps(
            "web: {image: nginx, ports: [{internal: 80, external: 8080}]}",
            "api: {image: api, ports: [{internal: 80, external: 81}, {internal: 81, external: 8080}]}",
        ),
        ALONE,
        "application.yml: application 'api', key 'ports[1].external': external port "
        "8080 is also published by application 'web'; each external port belongs to "
        "one application in the cluster.",
    ),
    (
        "one application publishes an external port twice",
        app("web", "{image: nginx, ports: [{internal: 80, external: 80}, {internal: 81, external: 80}]}"),
        ALONE,
        "application.yml: application 'web', key 'ports[1].external': external port 80 is published twice by this application.",
    ),
    (
        "link to a port nobody publishes",
        apps(
            "es: {image: es, ports: [{internal: 9200, external: 9200}]}",
            "logstash: {image: ls, links: [{local_port: 9300, remote_port: 9300, alias: es}]}",
        ),
        ALONE,
        "application.yml: application 'logstash', key 'links[0]': link 'es' connects "
        "to port 9300, which no application publishes as an external port.",
    ),
    # ---- fig
    (
        "fig build",
        "web:\n  build: .\n",
        ALONE,
        "application.yml: application 'web', key 'build': not supported yet; build and push the image, then name it with 'image'.",
    ),
    (
        "fig image and build",
        "web:\n  image: nginx\n  build: .\n",
        ALONE,
        "application.yml: application 'web': has both 'image' and 'build'; Flocker runs a ready-made image, so give only 'image'.",
    ),
    (
        "fig unsupported keys",
        "web:\n  image: nginx\n  command: run\n  working_dir: /a\n  expose: [80]\n",
        ALONE,
        "application.yml: application 'web': Unsupported fig keys found: command, working_dir, expose.",
    ),
    (
        "fig unknown keys",
        "web:\n  image: nginx\n  labels: {a: b}\n",
        ALONE,
        "application.yml: application 'web': unrecognised keys: labels; "
        "allowed keys are build, cpu_shares, environment, image, links, mem_limit, "
        "ports, restart, volumes.",
    ),
    (
        "fig missing image",
        "web:\n  image: nginx\ndb:\n  ports: ['1:1']\n",
        ALONE,
        "application.yml: application 'db', key 'image': missing; expected an image name such as 'clusterhq/elasticsearch'.",
    ),
    (
        "fig application not a mapping",
        "web:\n  image: nginx\ndb: postgres\n",
        ALONE,
        "application.yml: application 'db': expected a mapping of settings such as 'image' and 'ports', got 'postgres'.",
    ),
    (
        "fig ports not a list",
        "web:\n  image: nginx\n  ports: '80:80'\n",
        ALONE,
        "application.yml: application 'web', key 'ports': expected a list of 'external:internal' strings, got '80:80'.",
    ),
    (
        "fig port without external",
        "web:\n  image: nginx\n  ports: ['8080']\n",
        ALONE,
        "application.yml: application 'web', key 'ports[0]': expected 'external:internal' such as '80:8080', got '8080'.",
    ),
    (
        "fig port read by YAML as a number",
        "web:\n  image: nginx\n  ports: [22:22]\n",
        ALONE,
        "application.yml: application 'web', key 'ports[0]': "
        "expected a string 'external:internal' such as '80:8080', got 1342 "
        "(quote it: YAML reads an unquoted 22:22 as a number).",
    ),
    (
        "fig port out of range",
        "web:\n  image: nginx\n  ports: ['80:99999']\n",
        ALONE,
        "application.yml: application 'web', key 'ports[0]': expected an integer port 1-65535, got 99999.",
    ),
    (
        "fig link to unknown application",
        "web:\n  image: nginx\n  links: [db]\n",
        ALONE,
        "application.yml: application 'web', key 'links[0]': links to application 'db', which is not defined in application.yml.",
    ),
    (
        "fig link not a string",
        "web:\n  image: nginx\n  links: [{db: x}]\n",
        ALONE,
        "application.yml: application 'web', key 'links[0]': expected 'application' or 'application:alias', got a mapping.",
    ),
    (
        "fig two volumes",
        "db:\n  image: pg\n  volumes: [/a, /b]\n",
        ALONE,
        "application.yml: application 'db', key 'volumes': expected exactly one "
        "volume, got 2; Flocker gives each application one volume, which moves with it.",
    ),
    (
        "fig host volume",
        "db:\n  image: pg\n  volumes: ['/srv/pg:/var/lib/pg']\n",
        ALONE,
        "application.yml: application 'db', key 'volumes[0]': expected a container "
        "path such as '/var/lib/data', got '/srv/pg:/var/lib/pg'; host paths and ':ro' "
        "are not supported because the volume moves with the application.",
    ),
    (
        "fig relative volume",
        "db:\n  image: pg\n  volumes: [data]\n",
        ALONE,
        "application.yml: application 'db', key 'volumes[0]': expected an absolute path such as '/var/lib/data', got 'data'.",
    ),
    (
        "fig environment item without '='",
        "web:\n  image: nginx\n  environment: [DEBUG]\n",
        ALONE,
        "application.yml: application 'web', key 'environment[0]': expected 'NAME=value', got 'DEBUG'.",
    ),
    (
        "fig environment value not a string",
        "web:\n  image: nginx\n  environment: {DEBUG: true}\n",
        ALONE,
        "application.yml: application 'web', key 'environment.DEBUG': "
        "the value of 'DEBUG' must be a string; got type 'bool' (quote it in the YAML).",
    ),
    (
        "fig environment set twice",
        "web:\n  image: nginx\n  environment: [A=1, A=2]\n",
        ALONE,
        "application.yml: application 'web', key 'environment[1]': environment variable 'A' is set twice.",
    ),
    (
        "fig restart unknown",
        "web:\n  image: nginx\n  restart: sometimes\n",
        ALONE,
        "application.yml: application 'web', key 'restart': expected 'no', 'always', 'on-failure' or 'on-failure:N', got 'sometimes'.",
    ),
    # ---- deployment.yml against application.yml
    (
        "node value not a list",
        ARTICLE_APPLICATION_YML,
        "version: 1\nnodes:\n  '10.0.0.1': elasticsearch\n",
        "deployment.yml: key 'nodes.10.0.0.1': expected a list of application names (use [] for none), got 'elasticsearch'.",
    ),
    (
        "node value empty",
        ARTICLE_APPLICATION_YML,
        "version: 1\nnodes:\n  '10.0.0.1':\n",
        "deployment.yml: key 'nodes.10.0.0.1': expected a list of application names (use [] for none), got nothing (null).",
    ),
    (
        "node entry not a name",
        ARTICLE_APPLICATION_YML,
        "version: 1\nnodes:\n  '10.0.0.1': [[kibana]]\n",
        "deployment.yml: key 'nodes.10.0.0.1[0]': expected an application name, got a list.",
    ),
    (
        "node address not a string",
        ARTICLE_APPLICATION_YML,
        "version: 1\nnodes:\n  12: [kibana]\n",
        "deployment.yml: key 'nodes': expected a node address such as '172.16.255.250', got 12.",
    ),
    (
        "unknown application on a node",
        ARTICLE_APPLICATION_YML,
        "version: 1\nnodes:\n  '10.0.0.1': [kibana]\n  '10.0.0.2': [elasticsearch, mongodb]\n",
        "deployment.yml: application 'mongodb', key 'nodes.10.0.0.2[1]': not defined in application.yml (listed on node '10.0.0.2').",
    ),
    (
        "application on two nodes",
        ARTICLE_APPLICATION_YML,
        "version: 1\nnodes:\n  '10.0.0.1': [elasticsearch]\n  '10.0.0.2': [kibana, elasticsearch]\n",
        "deployment.yml: application 'elasticsearch', key 'nodes.10.0.0.2[1]': "
        "listed on both node '10.0.0.1' and node '10.0.0.2'; "
        "an application runs on exactly one node.",
    ),
    (
        "application twice on one node",
        ARTICLE_APPLICATION_YML,
        "version: 1\nnodes:\n  '10.0.0.1': [kibana, kibana]\n",
        "deployment.yml: application 'kibana', key 'nodes.10.0.0.1[1]': listed twice on node '10.0.0.1'.",
    ),
]


@pytest.mark.parametrize(
    ("application_yml", "deployment_yml", "message"),
    [pytest.param(a, d, m, id=i) for i, a, d, m in BAD_INPUTS],
)
def test_bad_input_gives_one_exact_message(workdir: Path, application_yml: str | None, deployment_yml: str | None, message: str) -> None:
    if application_yml is not None:
        write(workdir, "application.yml", application_yml)
    if deployment_yml not in (ALONE, MISSING):
        write(workdir, "deployment.yml", deployment_yml)
    with pytest.raises(ConfigError) as caught:
        if deployment_yml == ALONE:
            load_application_config("application.yml")
        else:
            load_configuration("deployment.yml", "application.yml")
    assert str(caught.value) == message
    assert caught.value.message == message
    assert caught.value.__cause__ is None  # no traceback chained from yaml or int()


def test_both_loaders_report_application_errors_the_same_way(workdir: Path) -> None:
    write(workdir, "application.yml", app("web", "{ports: []}"))
    write(workdir, "deployment.yml", DEPLOY_OK)
    with pytest.raises(ConfigError) as caught:
        load_configuration("deployment.yml", "application.yml")
    assert caught.value.file == "application.yml"
    assert caught.value.application == "web"
    assert caught.value.key == "image"


def test_error_fields(workdir: Path) -> None:
    write(workdir, "application.yml", app("logstash", "{image: x, ports: [{internal: 1, external: abc}]}"))
    with pytest.raises(ConfigError) as caught:
        load_application_config("application.yml")
    error = caught.value
    assert (error.file, error.application, error.key, error.line) == (
        "application.yml",
        "logstash",
        "ports[0].external",
        None,
    )
    assert error.reason == "expected an integer port 1-65535, got 'abc'"


def test_directory_instead_of_file(workdir: Path) -> None:
    (workdir / "application.yml").mkdir()
    with pytest.raises(ConfigError) as caught:
        load_application_config("application.yml")
    assert str(caught.value) == "application.yml: is a directory, expected a YAML file."


def test_binary_garbage_is_a_config_error(workdir: Path) -> None:
    (workdir / "application.yml").write_bytes(b"\xff\xfe\x00garbage\x00")
    with pytest.raises(ConfigError) as caught:
        load_application_config("application.yml")
    assert str(caught.value).startswith("application.yml: not valid YAML (")
