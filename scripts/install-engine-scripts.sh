#!/usr/bin/env bash
# The programs the Pulumi engine launches for a Python project, next to the CLI:
#  - pulumi-language-python: Pulumi's binary when a matching one is on PATH, else our
#    stand-in (flocker_pulumi.language_host): the Go module of Pulumi's binary is not
#    published at any version a registry here serves.
#  - pulumi-resource-pulumi-python: starts dynamic providers; ours runs them through
#    flocker_provider.provider_host so errors meant for people arrive without traceback.
set -euo pipefail
version="$1"
bindir="$(cd "$2" && pwd)"

real=$(command -v pulumi-language-python 2>/dev/null || true)
if [ -n "$real" ] && [ "$real" != "$bindir/pulumi-language-python" ] \
   && "$real" -version 2>/dev/null | grep -qx "v\?$version"; then
  install -m 0755 "$real" "$bindir/pulumi-language-python"
  # Pulumi's host runs this script, which ships only inside the SDK's Go module.
  sdk=$(cd /tmp && GOFLAGS=-mod=mod go mod download -json "github.com/pulumi/pulumi/sdk/v3@v$version" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  install -m 0755 "$sdk/python/cmd/pulumi-language-python-exec" "$bindir/pulumi-language-python-exec"
else
  cat > "$bindir/pulumi-language-python" <<SH
#!/bin/sh
exec "$bindir/python" -u -m flocker_pulumi.language_host "\$@"
SH
fi
cat > "$bindir/pulumi-resource-pulumi-python" <<SH
#!/bin/sh
exec "$bindir/python" -u -m flocker_provider.provider_host "\$@"
SH
chmod 0755 "$bindir/pulumi-language-python" "$bindir/pulumi-resource-pulumi-python"
