#!/usr/bin/env bash
# Builds the stand-in images without any container registry and loads them onto every
# node of the local cluster (the node file written by scripts/cluster.sh up).
#
#   flocker/base:local           Debian bookworm minbase + python3, python3-xxhash, rsync, socat (debootstrap)
#   flocker/elasticsearch:local  images/elasticsearch  (document store, port 9200)
#   flocker/logstash:local       images/logstash       (lines on TCP 5000 -> store "es")
#   flocker/kibana:local         images/kibana         (page on port 8080 listing the store)
#   flocker/postgres-root:local  Debian bookworm minbase + postgresql-15 (debootstrap, its own root)
#   flocker/postgres:local       images/postgres       (PostgreSQL 15, port 5432, data in /var/lib/postgresql/data)
#
# Three caches outside the clone (${FLOCKER_CACHE:-~/.cache/flocker-pulumi}/images) make a
# second run take seconds: the two root file system tarballs (base and postgres), each keyed
# by its package list and suite, and a `docker save` of all the images, keyed by both root
# keys and the contents of images/. Images carry their key as a label, so a node that already
# has the right ones is left alone. Environment: FLOCKER_NODES_FILE (node file), FLOCKER_CACHE, FLOCKER_DEBIAN_MIRROR
# (default: the mirror apt is configured with).
set -euo pipefail

SUITE=bookworm
VARIANT=minbase
INCLUDE=python3,python3-xxhash,rsync,socat,ca-certificates,iptables
# PostgreSQL gets a root of its own rather than a layer on the base: the base image has no
# apt sources or network at build time (builds run with --network none), and debootstrap
# resolves the server's dependencies (ICU, LLVM for JIT, locales) in the same step.
# postgresql-15 depends on postgresql-client-15, which brings pgbench and pg_amcheck; the
# amcheck extension is in postgresql-15 itself.
PG_INCLUDE=postgresql-15
IMAGES=(elasticsearch logstash kibana postgres)
REFS=("${IMAGES[@]/%/:local}"); REFS=("${REFS[@]/#/flocker/}")   # flocker/NAME:local

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
NODES_FILE="${FLOCKER_NODES_FILE:-$repo/.cluster/nodes.json}"
CACHE="${FLOCKER_CACHE:-$HOME/.cache/flocker-pulumi}/images"

die() { echo "build-images: $*" >&2; exit 1; }
log() { echo "build-images: $*" >&2; }

# CI may start on a fresh machine where none of this is installed yet.
ensure_packages() {
  local missing=() pair
  for pair in debootstrap:debootstrap docker:docker.io sha256sum:coreutils flock:util-linux; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  # debootstrap verifies the Release file with this keyring; without it the check is skipped.
  [ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || missing+=(debian-archive-keyring)
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# The Debian mirror apt already uses: the only way to the Debian archive on machines whose
# network reaches nothing but the package registries.
debian_mirror() {
  if [ -n "${FLOCKER_DEBIAN_MIRROR:-}" ]; then echo "$FLOCKER_DEBIAN_MIRROR"; return; fi
  local url=""
  # deb822 .sources: the first stanza of Types deb whose Suites include the suite itself.
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    url="$(awk -v suite="$SUITE" '
      function flush() { if (isdeb && hassuite && uri != "" && found == "") found = uri; isdeb = 0; hassuite = 0; uri = "" }
      /^[[:space:]]*$/ { flush(); next }
      /^[[:space:]]*#/ { next }
      /^Types:/ { for (i = 2; i <= NF; i++) if ($i == "deb") isdeb = 1 }
      /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) hassuite = 1 }
      /^URIs:/ { uri = $2 }
      END { flush(); print found }' "$f")"
    [ -n "$url" ] && break
  done
  # One-line format: deb [options] URI suite components...
  if [ -z "$url" ]; then
    url="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk -v suite="$SUITE" '
      $1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } if ($(i + 1) == suite) { print $i; exit } }')"
  fi
  [ -n "$url" ] || die "no Debian mirror for $SUITE in apt's sources; set FLOCKER_DEBIAN_MIRROR"
  echo "$url"
}

node_hosts() {
  [ -f "$NODES_FILE" ] || die "no node file $NODES_FILE: run scripts/cluster.sh up first"
  grep -o '"docker_host"[[:space:]]*:[[:space:]]*"[^"]*"' "$NODES_FILE" | sed 's/.*"\([^"]*\)"$/\1/'
}

root_key() {   # include trim-version: a root file system's identity
  printf 'suite=%s variant=%s include=%s arch=%s trim=%s\n' "$SUITE" "$VARIANT" "$1" "$(dpkg --print-architecture)" "$2" |
    sha256sum | cut -c1-16
}
BASE_KEY="$(root_key "$INCLUDE" 1)"
BASE_TAR="$CACHE/base-$BASE_KEY.tar"
PG_KEY="$(root_key "$PG_INCLUDE" pg2)"   # pg2: the trim of trim_postgres_root
PG_TAR="$CACHE/postgres-$PG_KEY.tar"
images_key() {   # both root keys plus every file under images/ (path and content)
  {
    echo "$BASE_KEY $PG_KEY"
    (cd "$repo" && find images -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | LC_ALL=C sort -z |
      xargs -0 sha256sum)
  } | sha256sum | cut -c1-16
}

# A debootstrap root as a tarball in the cache. Run in a subshell of its own (the two roots
# are made at once: each is mostly waiting on downloads and dpkg), so its trap is its own.
build_root_tar() {   # include tarball trim-extra
  local include="$1" tarball="$2" extra="$3" mirror root t0=$SECONDS
  mirror="$(debian_mirror)"
  mkdir -p "$CACHE"
  root="$(mktemp -d "$CACHE/rootfs.XXXXXX")"
  trap 'rm -rf "$root"' EXIT
  log "debootstrap $SUITE ($VARIANT, +$include) from $mirror"
  debootstrap --variant="$VARIANT" --include="$include" "$SUITE" "$root" "$mirror" >"$root.log" 2>&1 ||
    { tail -n 30 "$root.log" >&2; die "debootstrap failed; log: $root.log"; }
  rm -f "$root.log"
  # What a container never needs: package caches and lists, docs. Docker mounts its own
  # /proc, /sys and /dev, so their contents are left out of the layer.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
         "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
  [ -z "$extra" ] || "$extra" "$root"
  tar -C "$root" --numeric-owner --exclude='./proc/*' --exclude='./sys/*' --exclude='./dev/*' \
      -cf "$tarball.tmp" .
  mv -f "$tarball.tmp" "$tarball"
  rm -rf "$root"; trap - EXIT
  log "rootfs cached: $tarball ($(du -h "$tarball" | cut -f1), $((SECONDS - t0))s)"
}

trim_postgres_root() {   # root
  # postgresql-common's postinst made a cluster "main" (/etc and /var/lib/postgresql/15/main):
  # the image makes its own in the volume on first start, so this one is only weight.
  rm -rf "$1"/var/lib/postgresql/15 "$1"/etc/postgresql/15
  # Translations of server and client messages: the logs are read in English. Locale
  # sources are for locale-gen only; the image uses C.UTF-8, which is built into glibc.
  rm -rf "$1"/usr/share/locale/* "$1"/usr/share/i18n
  # JIT: LLVM and the z3 it links are 130 MB of the 360 MB root for a feature the image turns
  # off (jit = off; see images/postgres). Should someone turn it on, the server finds no
  # llvmjit provider and runs the query without JIT, which it is designed to do.
  rm -rf "$1"/usr/lib/postgresql/15/lib/llvmjit* "$1"/usr/lib/postgresql/15/lib/bitcode \
         "$1"/usr/lib/*-linux-gnu/libLLVM-* "$1"/usr/lib/*-linux-gnu/libz3.so*
}

# The roots the node lacks and the cache does not hold, made side by side.
build_root_tars() {   # docker-host
  local pids=() p failed=0
  root_current "$1" flocker/base:local "$BASE_KEY" || [ -f "$BASE_TAR" ] ||
    { (build_root_tar "$INCLUDE" "$BASE_TAR" "") & pids+=($!); }
  root_current "$1" flocker/postgres-root:local "$PG_KEY" || [ -f "$PG_TAR" ] ||
    { (build_root_tar "$PG_INCLUDE" "$PG_TAR" trim_postgres_root) & pids+=($!); }
  for p in "${pids[@]}"; do wait "$p" || failed=1; done
  [ $failed = 0 ] || die "could not make the root file systems"
}

# Each imported root carries its key in one label (flocker.base-key, whichever root it is),
# so that a node with the right one is not imported again.
root_current() {   # docker-host image key
  [ "$(docker -H "$1" image inspect --format '{{index .Config.Labels "flocker.base-key"}}' "$2" 2>/dev/null)" = "$3" ]
}

import_root() {   # docker-host tarball image key
  log "importing $3 on $1"
  docker -H "$1" import \
    --change "LABEL flocker.base-key=$4" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    "$2" "$3" >/dev/null
}

# True if the node has all images of this exact key (labels written at build/import time).
node_current() {   # docker-host
  local labels
  labels="$(docker -H "$1" image inspect --format '{{index .Config.Labels "flocker.images-key"}}' \
      "${REFS[@]}" 2>/dev/null)" || return 1
  [ "$(printf '%s\n' "$labels" | sort -u)" = "$IMAGES_KEY" ] || return 1
  root_current "$1" flocker/base:local "$BASE_KEY" && root_current "$1" flocker/postgres-root:local "$PG_KEY"
}

build_on() {   # docker-host
  local h="$1" name t0=$SECONDS
  mkdir -p "$CACHE"
  build_root_tars "$h"
  root_current "$h" flocker/base:local "$BASE_KEY" || import_root "$h" "$BASE_TAR" flocker/base:local "$BASE_KEY"
  root_current "$h" flocker/postgres-root:local "$PG_KEY" || import_root "$h" "$PG_TAR" flocker/postgres-root:local "$PG_KEY"
  for name in "${IMAGES[@]}"; do
    log "building flocker/$name:local on $h"
    # The classic builder (DOCKER_BUILDKIT=0) works with any client, needs no buildx plugin,
    # and uses the local base image as is; --network none: builds must not reach out.
    # Its output (and the client's deprecation notice for it) is shown only on failure.
    DOCKER_BUILDKIT=0 docker -H "$h" build --network none --pull=false \
      --label "flocker.images-key=$IMAGES_KEY" -t "flocker/$name:local" "$repo/images/$name" >"$CACHE/build.log" 2>&1 ||
      { cat "$CACHE/build.log" >&2; die "docker build of $name failed"; }
    rm -f "$CACHE/build.log"
  done
  log "built on $h in $((SECONDS - t0))s"
}

main() {
  ensure_packages
  # One build at a time (parallel test runs); the lock is on this script, so no file is left.
  exec 9<"${BASH_SOURCE[0]}"
  flock 9
  IMAGES_KEY="$(images_key)"
  local images_tar="$CACHE/images-$IMAGES_KEY.tar" hosts=() need=() have="" h t0=$SECONDS pids=() failed=0 i
  mapfile -t hosts < <(node_hosts)
  [ ${#hosts[@]} -gt 0 ] || die "no nodes in $NODES_FILE"
  for h in "${hosts[@]}"; do
    if node_current "$h"; then have="${have:-$h}"; else need+=("$h"); fi
  done
  if [ ${#need[@]} -eq 0 ]; then
    log "all ${#hosts[@]} node(s) have images $IMAGES_KEY"
    return 0
  fi
  if [ ! -f "$images_tar" ]; then
    if [ -z "$have" ]; then
      have="${need[0]}"
      build_on "$have"
      need=("${need[@]:1}")
    fi
    mkdir -p "$CACHE"
    log "saving images to $images_tar"
    docker -H "$have" save -o "$images_tar.tmp" flocker/base:local flocker/postgres-root:local "${REFS[@]}"
    mv -f "$images_tar.tmp" "$images_tar"
    # Keep the cache bounded: older image sets can be rebuilt from the base tarball.
    find "$CACHE" -maxdepth 1 -name 'images-*.tar' ! -name "images-$IMAGES_KEY.tar" -delete
  fi
  # Loads run in parallel: each engine unpacks on its own, the tarball is read from page cache.
  for h in "${need[@]}"; do
    log "loading images onto $h"
    docker -H "$h" load -q -i "$images_tar" >/dev/null &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || { log "loading onto ${need[$i]} failed"; failed=1; }
  done
  [ $failed = 0 ] || die "could not load images onto every node"
  for h in "${need[@]}"; do node_current "$h" || die "images on $h do not carry key $IMAGES_KEY after loading"; done
  log "images $IMAGES_KEY on all ${#hosts[@]} node(s) in $((SECONDS - t0))s"
}

main "$@"
