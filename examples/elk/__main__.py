"""The ELK stack of Flocker's article, as code.

Each service runs on the node named in stack config; change `elasticsearchNode` and run
`pulumi up` to move Elasticsearch together with its data:

    pulumi config set elasticsearchNode node4 && pulumi up
"""

import pulumi

from flocker_pulumi import FlockerApplication

config = pulumi.Config()

# The official images by default; `make up` sets the local stand-ins (no registry here).
IMAGES = {
    "elasticsearch": "docker.elastic.co/elasticsearch/elasticsearch:8.15.3",
    "logstash": "docker.elastic.co/logstash/logstash:8.15.3",
    "kibana": "docker.elastic.co/kibana/kibana:8.15.3",
}
NODES = {"elasticsearch": "node1", "logstash": "node2", "kibana": "node3"}


def image(service: str) -> str:
    return config.get(f"{service}Image") or IMAGES[service]


def node(service: str) -> str:
    return config.get(f"{service}Node") or NODES[service]


elasticsearch = FlockerApplication(
    "elasticsearch",
    image=image("elasticsearch"),
    node=node("elasticsearch"),
    ports=[{"internal": 9200, "external": 9200}],
    volume={"mountpoint": "/var/lib/elasticsearch"},
)

logstash = FlockerApplication(
    "logstash",
    image=image("logstash"),
    node=node("logstash"),
    ports=[{"internal": 5000, "external": 5000}],
    links=[{"alias": "es", "local_port": 9200, "remote_port": 9200}],
)

# The article's Kibana ran in the browser; the stand-in page reads the store itself,
# so it links to Elasticsearch like Logstash does.
kibana = FlockerApplication(
    "kibana",
    image=image("kibana"),
    node=node("kibana"),
    ports=[{"internal": 8080, "external": 80}],
    links=[{"alias": "es", "local_port": 9200, "remote_port": 9200}],
)

for name, app in (("elasticsearch", elasticsearch), ("logstash", logstash), ("kibana", kibana)):
    pulumi.export(f"{name}_node", app.node)
    pulumi.export(f"{name}_addresses", app.addresses)
