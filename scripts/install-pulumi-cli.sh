#!/usr/bin/env bash
# Puts a Pulumi CLI for the pinned SDK into the venv's bin/ (.venv/bin/pulumi), first of:
#  1. the CLI of exactly the SDK's version cached by an earlier build (copied; seconds);
#  2. a `pulumi` on PATH new enough for the SDK (symlinked: nothing to build);
#  3. a build from Go modules (~8-10 minutes on 2 cores), cached outside the clone, keyed by
#     version. No registry ships the CLI binary. When the machine's Go is missing or older
#     than the CLI's go.mod asks for, a Go toolchain of exactly that version comes from the
#     Go module proxy, as Go's own toolchain switching fetches it (golang.org/toolchain).
# .venv/bin/pulumi is only ever replaced by a rename: never a half-written file.
set -euo pipefail
version="$1"          # e.g. 3.260.0
bindir="$2"           # e.g. .venv/bin
cache_root="${FLOCKER_CACHE:-$HOME/.cache/flocker-pulumi}"
cache="$cache_root/pulumi-cli-v$version"

die() { echo "install: $*" >&2; exit 1; }
# version_ge A B: A >= B, for dotted release numbers.
version_ge() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1)" = "$2" ]; }

mkdir -p "$bindir"
bindir="$(cd "$bindir" && pwd -P)"
partial="$bindir/.pulumi.partial"
rm -f "$partial"
trap 'rm -f "$partial"' EXIT

# "New enough" = the same major version as the SDK and a version >= the SDK's: within a
# major, Pulumi keeps the engine's protocol backward compatible, so a newer CLI runs an
# older SDK's programs (the SDK's own Automation API accepts any 3.x CLI >= 3.1.0 and
# refuses another major); an older CLI may lack engine features the SDK asks for. A
# pre-release of the SDK's own version (3.260.0-alpha) is older than it, so not taken.
new_enough() {
  local v=${1#v} base
  base=${v%%[-+]*}
  [[ $base =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || return 1
  [ "${base%%.*}" = "${version%%.*}" ] || return 1
  [ "$base" = "$version" ] && [[ $v == *-* ]] && return 1
  version_ge "$base" "$version"
}

# A pulumi on PATH other than the one this script put into bindir (nor a link to it).
installed_cli() {
  local dir p
  local -a dirs
  IFS=: read -r -a dirs <<<"$PATH"
  for dir in "${dirs[@]}"; do
    if [ -z "$dir" ] || [ ! -d "$dir" ]; then continue; fi
    [ "$(cd "$dir" && pwd -P)" = "$bindir" ] && continue
    p="$dir/pulumi"
    if [ -f "$p" ] && [ -x "$p" ] && [ "$(dirname "$(readlink -f "$p")")" != "$bindir" ]; then
      echo "$p"; return 0
    fi
  done
  return 1
}

if [ -x "$cache/pulumi" ]; then
  # cmp follows a symlink: one to another CLI differs, so it is replaced by the copy.
  if ! cmp -s "$cache/pulumi" "$bindir/pulumi"; then
    cp "$cache/pulumi" "$partial"; chmod 0755 "$partial"
    mv -fT "$partial" "$bindir/pulumi"
  fi
  exit 0
fi

if found=$(installed_cli); then
  found_version=$(PULUMI_SKIP_UPDATE_CHECK=true timeout 60 "$found" version 2>/dev/null | head -n1 || true)
  if new_enough "$found_version"; then
    target=$(readlink -f "$found")
    if [ "$(readlink "$bindir/pulumi" 2>/dev/null || true)" != "$target" ]; then
      echo "install: using the installed Pulumi CLI $found_version ($found) for SDK v$version"
      ln -sfn "$target" "$partial"
      mv -fT "$partial" "$bindir/pulumi"
    fi
    exit 0
  fi
  echo "install: $found is Pulumi CLI ${found_version:-of unknown version}, not usable with SDK v$version (it needs v${version%%.*}.x >= v$version); building v$version"
fi

# --- build from Go modules ------------------------------------------------------------
case "$(uname -m)" in
  x86_64|amd64) goarch=amd64 ;;
  aarch64|arm64) goarch=arm64 ;;
  *) die "no Go toolchain for $(uname -m) is known to this script, and none of the Pulumi CLI v$version is cached or on PATH" ;;
esac
local_go=$(command -v go 2>/dev/null || true)
goproxy=${GOPROXY:-}
if [ -z "$goproxy" ] && [ -n "$local_go" ]; then goproxy=$(GOTOOLCHAIN=local "$local_go" env GOPROXY 2>/dev/null || true); fi
# The first proxy of the list. Without Go, GOPROXY must say it (Go's default is compiled in).
proxy=""
IFS=',|' read -r -a proxies <<<"$goproxy"
for p in "${proxies[@]}"; do
  case "$p" in direct|off|"") ;; *) proxy=${p%/}; break ;; esac
done

fetch() {  # fetch PATH-ON-THE-PROXY FILE
  [ -n "$proxy" ] || die "GOPROXY=${goproxy:-(unset)} names no Go module proxy, and $1 is not on this machine: set GOPROXY to the proxy's URL (as in \`go env GOPROXY\` elsewhere)"
  curl -fsSL --retry 2 -o "$2" "$proxy/$1" || die "could not download $proxy/$1 from the Go module proxy"
}

mkdir -p "$cache_root"
work="$cache.build"; rm -rf "$work"; mkdir -p "$work"

# The Go version the CLI's go.mod asks for (pkg/v3's `go` line; sdk/v3 asks no more).
gomodcache=${GOMODCACHE:-}
if [ -z "$gomodcache" ] && [ -n "$local_go" ]; then gomodcache=$(GOTOOLCHAIN=local "$local_go" env GOMODCACHE 2>/dev/null || true); fi
pkgmod="${gomodcache:-$HOME/go/pkg/mod}/cache/download/github.com/pulumi/pulumi/pkg/v3/@v/v$version.mod"
if [ ! -s "$pkgmod" ]; then
  pkgmod="$work/pkg.mod"
  fetch "github.com/pulumi/pulumi/pkg/v3/@v/v$version.mod" "$pkgmod"
fi
need_go=$(sed -n 's/^go \([0-9][0-9.]*\).*/\1/p' "$pkgmod" | head -n1)
[ -n "$need_go" ] || die "no go line in github.com/pulumi/pulumi/pkg/v3@v$version's go.mod"
# Since Go 1.21 a `go 1.N` line means the release 1.N.0, the toolchain go1.N.0.
if [[ $need_go =~ ^1\.([0-9]+)$ ]] && [ "${BASH_REMATCH[1]}" -ge 21 ]; then need_go=$need_go.0; fi

have_go=""
if [ -n "$local_go" ]; then
  have_go=$(GOTOOLCHAIN=local "$local_go" version 2>/dev/null | sed -n 's/^go version go\([0-9][0-9.]*\).*/\1/p')
fi

# Downloads golang.org/toolchain@v0.0.1-goX.Y.Z.linux-<arch> from the proxy, checks its
# h1: hash against the checksum database's line for it, asked through the proxy as the go
# command asks it (the database's signed tree is not checked here), and unpacks it as a
# GOROOT into the cache.
fetch_toolchain() {
  local want=$1 mod zip dest tmp sum line
  mod="golang.org/toolchain@v0.0.1-go$want.linux-$goarch"
  dest="$cache_root/go$want.linux-$goarch"
  if [ -x "$dest/bin/go" ]; then echo "$dest/bin/go"; return 0; fi
  echo "install: Go $want from the Go module proxy ($mod, ~75 MB)" >&2
  zip="$work/toolchain.zip"
  fetch "golang.org/toolchain/@v/v0.0.1-go$want.linux-$goarch.zip" "$zip"
  line=$(curl -fsSL "$proxy/sumdb/sum.golang.org/lookup/$mod" 2>/dev/null || true)
  sum=$(awk -v m="${mod%@*}" -v v="${mod#*@}" '$1 == m && $2 == v { print $3; exit }' <<<"$line")
  [ -n "$sum" ] || die "could not look up the checksum of $mod in the checksum database (through $proxy), so Go $want is not installed"
  tmp="$dest.partial"; rm -rf "$tmp" "$dest"
  python3 - "$zip" "$sum" "$tmp" "$mod/" <<'PY' || die "the download of Go $want does not match its checksum ($sum); nothing installed"
import base64, hashlib, os, stat, sys, zipfile
path, want, dest, prefix = sys.argv[1:]
z = zipfile.ZipFile(path)
names = sorted(n for n in z.namelist() if not n.endswith("/"))
# Go's dirhash "h1:": sha256 over the lines "<sha256 hex>  <name>\n" of the sorted files.
lines = "".join(f"{hashlib.sha256(z.read(n)).hexdigest()}  {n}\n" for n in names)
if "h1:" + base64.b64encode(hashlib.sha256(lines.encode()).digest()).decode() != want:
    sys.exit(1)
for n in names:
    if not n.startswith(prefix) or ".." in n.split("/"):
        sys.exit(1)
    rel = n[len(prefix):]
    out = os.path.join(dest, rel)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "wb") as f:
        f.write(z.read(n))
    # Module zips keep no file modes: like the go command, make bin/ and pkg/tool/ executable.
    if rel.startswith("bin/") or rel.startswith("pkg/tool/"):
        os.chmod(out, os.stat(out).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
PY
  rm -f "$zip"
  mv -T "$tmp" "$dest"
  echo "$dest/bin/go"
}

gobin=$local_go
if [ -z "$have_go" ] || ! version_ge "$have_go" "$need_go"; then
  if [ -n "$have_go" ] && version_ge "$have_go" 1.21; then
    # Go >= 1.21 switches toolchains itself: it fetches golang.org/toolchain from the proxy
    # into its module cache and checks it against the checksum database.
    echo "install: Go $have_go is older than the Go $need_go the Pulumi CLI v$version needs; GOTOOLCHAIN=go$need_go"
    goroot=$(GOTOOLCHAIN=go$need_go "$local_go" env GOROOT) \
      || die "Go $have_go could not get Go $need_go from the Go module proxy (GOTOOLCHAIN=go$need_go); the Pulumi CLI v$version needs it"
    gobin=$goroot/bin/go
  else
    if [ -n "$local_go" ]; then
      echo "install: Go ${have_go:-of unknown version} ($local_go) is older than the Go $need_go the Pulumi CLI v$version needs"
    else
      echo "install: no Go on PATH; the Pulumi CLI v$version is built with Go $need_go"
    fi
    gobin=$(fetch_toolchain "$need_go")
  fi
fi
# From here on exactly this go, never a switch to another.
export GOTOOLCHAIN=local
"$gobin" version >/dev/null 2>&1 || die "$gobin does not run; the Pulumi CLI v$version cannot be built"

echo "install: building the Pulumi CLI v$version from Go modules with $("$gobin" version | cut -d' ' -f3) (~8-10 minutes; cached in $cache)"
cd "$work"
cat > go.mod <<MOD
module flockerpulumi/pulumicli

go $need_go

require (
	github.com/pulumi/pulumi/pkg/v3 v$version
	github.com/pulumi/pulumi/sdk/v3 v$version
)
MOD
# pkg/v3's own go.mod carries this non-local replace; without it the build fails.
grep -E '^replace .*=> [^.]' "$pkgmod" >> go.mod || true
echo 'package main' > tools.go
GOFLAGS=-mod=mod "$gobin" get github.com/pulumi/pulumi/pkg/v3/cmd/pulumi@v"$version"
CGO_ENABLED=0 GOFLAGS=-mod=mod "$gobin" build -tags osusergo,grpcnotrace -trimpath \
  -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$version" \
  -o "$work/pulumi" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
[ "$(PULUMI_SKIP_UPDATE_CHECK=true "$work/pulumi" version 2>/dev/null)" = "v$version" ] || die "the Pulumi CLI built in $work does not report v$version"
mkdir -p "$cache"; mv -f "$work/pulumi" "$cache/pulumi"
cd /; rm -rf "$work"
cp "$cache/pulumi" "$partial"; chmod 0755 "$partial"
mv -fT "$partial" "$bindir/pulumi"
