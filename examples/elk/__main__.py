"""The ELK stack of Flocker's article, as code.

Each service runs on the node named in stack config; change `elasticsearchNode` and run
`pulumi up` to move Elasticsearch together with its data:

    pulumi config set elasticsearchNode node4 && pulumi up

Which software plays each part is stack config `images`:

- `local` (the default, what `make up` runs): images `make images` builds from registry
  packages, for nodes without a container registry. OpenSearch 2.19 is the Elasticsearch,
  rsyslog (its Elasticsearch output) the Logstash, and a small page listing the stored lines
  stands where Kibana was: neither Kibana nor OpenSearch Dashboards can be had here.
- `official`: Elastic's own elasticsearch, logstash and kibana images, set up to work as one
  stack, for nodes that can pull them. Not run by this project's tests, which have no registry.

`<service>Image` (e.g. `elasticsearchImage`) replaces one image and keeps its set's settings:
to pin an image by digest, say.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi

from flocker_pulumi import FlockerApplication

SERVICES = ("elasticsearch", "logstash", "kibana")
NODES = {"elasticsearch": "node1", "logstash": "node2", "kibana": "node3"}
IMAGE_SETS = ("local", "official")
ELASTIC_VERSION = "8.15.3"

# Logstash and the page reach the store by the link's alias, through their own node's router,
# so that a move of the store changes nothing for them.
STORE_LINK = {"alias": "es", "local_port": 9200, "remote_port": 9200}

# A store's start is part of a move's (and a replacement's) downtime, and a JVM takes 10-40 s
# to start on two busy cores, more when the machine is loaded: new connections are held up to
# 2 minutes instead of the default 30 s, and a start may take 5 before `pulumi up` gives up.
STORE_HOLD_SECONDS = 120
WAIT_TIMEOUT = 300

# Logstash's pipeline: every line on TCP 5000 becomes a document in index "logstash" of the
# linked store, as rsyslog does in the local set. An index named, so no data stream (Logstash
# 8's default towards Elasticsearch 8), and the documents are where the walkthrough counts them.
LOGSTASH_PIPELINE = (
    "input { tcp { port => 5000 codec => line } } "
    'output { elasticsearch { hosts => ["http://es:9200"] index => "logstash" data_stream => "false" } }'
)


def _local(service: str) -> dict[str, Any]:
    if service == "elasticsearch":
        # The image's own health check: up once the shards are assigned (see images/opensearch).
        return {
            "image": "flocker/opensearch:local",
            "ports": [{"internal": 9200, "external": 9200}],
            "volume": {"mountpoint": "/var/lib/elasticsearch"},  # its path.data, the article's mountpoint
            "wait_timeout": WAIT_TIMEOUT,
            "hold_seconds": STORE_HOLD_SECONDS,
        }
    if service == "logstash":
        return {"image": "flocker/rsyslog:local", "ports": [{"internal": 5000, "external": 5000}], "links": [dict(STORE_LINK)]}
    # The article's Kibana 3 ran in the browser; the page reads the store on the server side,
    # so it links to the store like Logstash does.
    return {"image": "flocker/logpage:local", "ports": [{"internal": 8080, "external": 80}], "links": [dict(STORE_LINK)]}


def _official(service: str) -> dict[str, Any]:
    if service == "elasticsearch":
        return {
            "image": f"docker.elastic.co/elasticsearch/elasticsearch:{ELASTIC_VERSION}",
            "ports": [{"internal": 9200, "external": 9200}],
            "environment": {
                # One node: without this, Elasticsearch 8 waits for others to form a cluster with,
                # and enforces the production bootstrap checks.
                "discovery.type": "single-node",
                # Plain HTTP without a password, so that Logstash and Kibana reach it as `es:9200`
                # with nothing more. Only for a network of your own: with security on, Elasticsearch
                # speaks HTTPS with a generated password, and both need its CA and credentials.
                "xpack.security.enabled": "false",
                "ES_JAVA_OPTS": "-Xms1g -Xmx1g",
            },
            # Where the image keeps its data: a volume anywhere else would move empty, and leave
            # the data behind in the old container.
            "volume": {"mountpoint": "/usr/share/elasticsearch/data"},
            # Up, and routed to, once every primary shard is assigned, not once the port is open.
            "health_check": {
                "command": "curl -fsS 'http://127.0.0.1:9200/_cluster/health?wait_for_status=yellow&timeout=1s'",
                "interval": 1,
                "timeout": 5,
                "retries": 3,
                "start_period": WAIT_TIMEOUT,
            },
            "wait_timeout": WAIT_TIMEOUT,
            "hold_seconds": STORE_HOLD_SECONDS,
        }
    if service == "logstash":
        return {
            "image": f"docker.elastic.co/logstash/logstash:{ELASTIC_VERSION}",
            "ports": [{"internal": 5000, "external": 5000}],
            "links": [dict(STORE_LINK)],
            # -e: this pipeline instead of the image's (Beats on 5044, to stdout).
            "command": ["logstash", "-e", LOGSTASH_PIPELINE],
            # Its monitoring would look for a host named "elasticsearch" every few seconds.
            "environment": {"XPACK_MONITORING_ENABLED": "false"},
            "wait_timeout": WAIT_TIMEOUT,
        }
    return {
        "image": f"docker.elastic.co/kibana/kibana:{ELASTIC_VERSION}",
        "ports": [{"internal": 5601, "external": 80}],
        "links": [dict(STORE_LINK)],
        "environment": {"ELASTICSEARCH_HOSTS": "http://es:9200"},
        "wait_timeout": WAIT_TIMEOUT,
    }


def specs(
    images: str = "local", nodes: Mapping[str, str] | None = None, image_overrides: Mapping[str, str] | None = None
) -> dict[str, dict[str, Any]]:
    """The `FlockerApplication` arguments of each service, in declaration order (the link
    target, Elasticsearch, first)."""
    if images not in IMAGE_SETS:
        raise ValueError(f"config images: expected one of {', '.join(IMAGE_SETS)}, got {images!r}")
    spec_of = _local if images == "local" else _official
    chosen = {**NODES, **(nodes or {})}
    result = {}
    for service in SERVICES:
        spec = spec_of(service)
        if image_overrides and image_overrides.get(service):
            spec["image"] = image_overrides[service]
        result[service] = {**spec, "node": chosen[service]}
    return result


def main() -> None:
    config = pulumi.Config()
    try:
        services = specs(
            config.get("images") or "local",
            nodes={s: config.get(f"{s}Node") for s in SERVICES if config.get(f"{s}Node")},
            image_overrides={s: config.get(f"{s}Image") for s in SERVICES if config.get(f"{s}Image")},
        )
    except ValueError as exc:
        raise pulumi.RunError(str(exc)) from exc
    for name, spec in services.items():
        app = FlockerApplication(name, **spec)
        pulumi.export(f"{name}_node", app.node)
        pulumi.export(f"{name}_addresses", app.addresses)


# Pulumi runs this file as __main__; the unit tests import it under another name for specs().
if __name__ == "__main__":
    main()
