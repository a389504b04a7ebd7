#!/usr/bin/env bash
# Puts a Pulumi CLI of exactly the pinned SDK's version, and the scripts the engine
# launches for Python, into the venv's bin/. No registry ships the CLI binary, so it is
# built from Go modules once and cached outside the clone, keyed by version.
set -euo pipefail
version="$1"          # e.g. 3.260.0
bindir="$2"           # e.g. .venv/bin
cache="${FLOCKER_CACHE:-$HOME/.cache/flocker-pulumi}/pulumi-cli-v$version"

have_matching() { command -v pulumi >/dev/null 2>&1 && [ "$(pulumi version 2>/dev/null)" = "v$version" ]; }

if [ ! -x "$cache/pulumi" ]; then
  if have_matching; then
    mkdir -p "$cache"; cp "$(command -v pulumi)" "$cache/pulumi"
  else
    command -v go >/dev/null || { echo "install-pulumi-cli: Go is needed to build the Pulumi CLI v$version (no registry ships it)" >&2; exit 1; }
    work="$cache.build"; rm -rf "$work"; mkdir -p "$work"
    cd "$work"
    cat > go.mod <<MOD
module flockerpulumi/pulumicli

go 1.26

require (
	github.com/pulumi/pulumi/pkg/v3 v$version
	github.com/pulumi/pulumi/sdk/v3 v$version
)
MOD
    # pkg/v3's own go.mod carries this non-local replace; without it the build fails.
    grep -E '^replace .*=> [^.]' "$(go env GOMODCACHE)/cache/download/github.com/pulumi/pulumi/pkg/v3/@v/v$version.mod" >> go.mod 2>/dev/null || {
      GOFLAGS=-mod=mod go mod download github.com/pulumi/pulumi/pkg/v3@v$version
      grep -E '^replace .*=> [^.]' "$(go env GOMODCACHE)/cache/download/github.com/pulumi/pulumi/pkg/v3/@v/v$version.mod" >> go.mod
    }
    echo 'package main' > tools.go
    GOFLAGS=-mod=mod go get github.com/pulumi/pulumi/pkg/v3/cmd/pulumi@v$version
    CGO_ENABLED=0 GOFLAGS=-mod=mod go build -tags osusergo,grpcnotrace -trimpath \
      -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$version" \
      -o "$work/pulumi" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
    mkdir -p "$cache"; mv "$work/pulumi" "$cache/pulumi"; rm -rf "$work"
  fi
fi
mkdir -p "$bindir"
install -m 0755 "$cache/pulumi" "$bindir/pulumi"
