#!/usr/bin/env bash
# `make up`: deploy the ELK example to the local cluster, then say where it answers.
set -euo pipefail
cd "$(dirname "$0")/.."
stack="${1:-local}"
mkdir -p .pulumi-state
pulumi stack select "$stack" 2>/dev/null || pulumi stack init "$stack" >/dev/null
# The local cluster has no registry: the images `make images` built (OpenSearch, rsyslog, the
# log page), which are also the program's default; said here so that a stack once switched
# to Elastic's images (`images official`) comes back to them.
pulumi config set images local --stack "$stack"
# Stacks made by earlier versions of this script name the stand-in images one by one.
for service in elasticsearch logstash kibana; do
  if [ "$(pulumi config get "${service}Image" --stack "$stack" 2>/dev/null)" = "flocker/${service}:local" ]; then
    pulumi config rm "${service}Image" --stack "$stack"
  fi
done
pulumi up --yes --stack "$stack" --non-interactive --skip-preview
echo
echo "ELK is up on the local cluster:"
pulumi stack output --stack "$stack" --json | "$PULUMI_PYTHON_CMD" -c '
import json, sys
out = json.load(sys.stdin)
for service in ("elasticsearch", "logstash", "kibana"):
    node, addresses = out[service + "_node"], ", ".join(out[service + "_addresses"])
    print(f"  {service:14} on {node:6} at {addresses}")
'
