#!/bin/bash
# Entry point of flocker/opensearch:local: gives an empty data directory to the user opensearch,
# then execs OpenSearch as that user. `docker run IMAGE -Esome.setting=value` passes settings;
# any other command (bash, say) is exec'd as given.
set -euo pipefail

first="${1:-}"
if [ "${first:0:1}" = - ]; then set -- opensearch "$@"; fi
[ "${1:-}" = opensearch ] || exec "$@"
shift

DATA="$(sed -n 's/^path\.data:[[:space:]]*//p' "$OPENSEARCH_PATH_CONF/opensearch.yml")"
[ -n "$DATA" ] || { echo "opensearch-entrypoint: no path.data in $OPENSEARCH_PATH_CONF/opensearch.yml" >&2; exit 1; }
# Debian's JDK has no fixed home directory name (it has the architecture in it).
if [ -z "${OPENSEARCH_JAVA_HOME:-}" ]; then
  OPENSEARCH_JAVA_HOME="$(dirname "$(dirname "$(readlink -f /usr/bin/java)")")"
  export OPENSEARCH_JAVA_HOME
fi

if [ "$(id -u)" != 0 ]; then exec opensearch "$@"; fi

# Docker makes a bind mount's or a volume's mountpoint as root when it has nothing to copy
# there; OpenSearch, which refuses to run as root, could not write to it.
mkdir -p "$DATA"
owner="$(stat -c %u "$DATA")"
if [ -z "$(ls -A "$DATA")" ]; then
  chown opensearch:opensearch "$DATA"
  chmod 0750 "$DATA"
elif [ "$owner" != "$(id -u opensearch)" ]; then
  # Data that lost its owner (copied without them) is not silently taken over: the copy is
  # what went wrong, and OpenSearch would fail later on some file anyway.
  echo "opensearch-entrypoint: $DATA holds data owned by uid $owner, not by opensearch (uid $(id -u opensearch));" \
    "copy it keeping owners, or chown -R $(id -u opensearch):$(id -g opensearch) it" >&2
  exit 1
fi
# exec: the JVM replaces this shell (and the launcher) as PID 1, so docker stop's SIGTERM reaches it.
exec setpriv --reuid=opensearch --regid=opensearch --init-groups -- opensearch "$@"
