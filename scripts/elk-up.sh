#!/usr/bin/env bash
# `make up`: deploy the ELK example to the local cluster, then say where it answers.
set -euo pipefail
cd "$(dirname "$0")/.."
stack="${1:-local}"
mkdir -p .pulumi-state
pulumi stack select "$stack" 2>/dev/null || pulumi stack init "$stack" >/dev/null
# The local cluster has no registry: use the stand-in images built by `make images`.
for service in elasticsearch logstash kibana; do
  pulumi config set "${service}Image" "flocker/${service}:local" --stack "$stack"
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
