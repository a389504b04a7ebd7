#!/bin/bash
# Health check of flocker/opensearch:local (Docker runs it every second). Healthy once
# OpenSearch answers and every primary shard is assigned (cluster health yellow or green), so
# that every document it holds can be read and written. The image has no curl: bash's
# /dev/tcp speaks the two requests.
#
# Before that, once per container: no replicas for new indices. A replica needs a second node,
# and with none every index would stay yellow. OpenSearch takes this default only from the
# cluster's settings (cluster.default_number_of_replicas in opensearch.yml or -E is accepted
# and ignored), so it is put there through the API, persistent: it is kept in the data
# directory, and moves with it. Done here because nothing reaches the store before this check
# has passed: flocker-pulumi routes to an application only once it is healthy.
set -euo pipefail

request() {   # method path [json-body]: true on HTTP 200
  local body="${3:-}" status
  exec 3<>/dev/tcp/127.0.0.1/9200
  printf '%s %s HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s' \
    "$1" "$2" "${#body}" "$body" >&3
  read -r -t 5 _ status _ <&3
  exec 3>&-
  [ "$status" = 200 ]
}

marker=/tmp/.flocker-opensearch-replicas
if [ ! -e "$marker" ]; then
  request PUT /_cluster/settings '{"persistent": {"cluster.default_number_of_replicas": 0}}'
  : >"$marker"
fi
request GET '/_cluster/health?wait_for_status=yellow&timeout=1s'
