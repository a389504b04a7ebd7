#!/usr/bin/env bash
# Builds the workload images without any container registry and loads them onto every
# node of the local cluster (the node file written by scripts/cluster.sh up).
#
#   flocker/base:local             root: Debian bookworm minbase + python3, python3-xxhash, socat, iptables
#   flocker/postgres-root:local    root: minbase + postgresql-15
#   flocker/opensearch-root:local  root: minbase + openjdk-17-jre-headless, and the user opensearch (uid 1000)
#   flocker/rsyslog-root:local     root: minbase + rsyslog, rsyslog-elasticsearch
#   flocker/opensearch:local       images/opensearch  (OpenSearch 2.19.6 from Maven Central, port 9200,
#                                                      data in /var/lib/elasticsearch: the ELK example's store)
#   flocker/rsyslog:local          images/rsyslog     (lines on TCP 5000 -> index logstash of the store "es")
#   flocker/logpage:local          images/logpage     (page on port 8080 listing the store's documents)
#   flocker/postgres:local         images/postgres    (PostgreSQL 15, port 5432, data in /var/lib/postgresql/data)
#   flocker/elasticsearch:local    images/elasticsearch (a store written here, for tests and benchmarks
#                                                      that need a process starting in milliseconds)
#
# Caches outside the clone (${FLOCKER_CACHE:-~/.cache/flocker-pulumi}/images) make a second
# run take seconds: one root file system tarball per root, keyed by its package list, suite
# and trim; OpenSearch's distribution in a Maven repository of its own there (by version);
# and a `docker save` of all the images, keyed by the root keys, the OpenSearch version and
# the contents of images/. Images carry their key as a label, so a node that already has the
# right ones is left alone. Builds run with --network none: what an image needs from outside
# comes from the caches. Environment: FLOCKER_NODES_FILE (node file), FLOCKER_CACHE,
# FLOCKER_DEBIAN_MIRROR (default: the mirror apt is configured with).
#
#   scripts/build-images.sh              # build what is missing, load onto every node that lacks the images
#   scripts/build-images.sh --load-only  # only load, onto nodes that lack them, images built before (the cached
#                                        # `docker save` or a node that has them); builds nothing (`make cluster`)
set -euo pipefail

SUITE=bookworm
VARIANT=minbase
# The roots, each a debootstrap of its own rather than a layer on the base: the base image has
# no apt sources or network at build time (builds run with --network none), and debootstrap
# resolves each server's dependencies in the same step. A root's trim version names what its
# trim_NAME_root function (if there is one) does to it; changing the function means a new
# version, hence a new key. The base and postgres keys are those of the two-root script before.
ROOTS=(base postgres opensearch rsyslog)
declare -A ROOT_INCLUDE=(
  [base]=python3,python3-xxhash,socat,ca-certificates,iptables
  # postgresql-15 depends on postgresql-client-15, which brings pgbench and pg_amcheck; the
  # amcheck extension is in postgresql-15 itself.
  [postgres]=postgresql-15
  # 2.19 is the last OpenSearch line that runs on Java 17 (3.x needs 21, which bookworm lacks).
  [opensearch]=openjdk-17-jre-headless
  [rsyslog]=rsyslog,rsyslog-elasticsearch
)
declare -A ROOT_TRIM=([base]=1 [postgres]=pg2 [opensearch]=os2 [rsyslog]=rs1)
IMAGES=(elasticsearch opensearch rsyslog logpage postgres)
REFS=("${IMAGES[@]/%/:local}"); REFS=("${REFS[@]/#/flocker/}")   # flocker/NAME:local

# OpenSearch's integ-test distribution: the server and its transport module, no bundled JDK
# and no plugins (so no security plugin to turn off). Fetched by Maven's own client.
OPENSEARCH_VERSION=2.19.6
OPENSEARCH_ARTIFACT="org.opensearch.distribution.integ-test-zip:opensearch:$OPENSEARCH_VERSION:zip"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
NODES_FILE="${FLOCKER_NODES_FILE:-$repo/.cluster/nodes.json}"
CACHE="${FLOCKER_CACHE:-$HOME/.cache/flocker-pulumi}/images"
# Maven's repository for this script only: the user's ~/.m2 is left alone, and the zip's
# place in it (group/artifact/version) is its cache key.
MAVEN_REPO="$CACHE/maven"
OPENSEARCH_ZIP="$MAVEN_REPO/org/opensearch/distribution/integ-test-zip/opensearch/$OPENSEARCH_VERSION/opensearch-$OPENSEARCH_VERSION.zip"
CONTEXT=""   # a build context made for one image, removed on exit

die() { echo "build-images: $*" >&2; exit 1; }
log() { echo "build-images: $*" >&2; }

# Installs the Debian packages of what is missing here: COMMAND:PACKAGE or /PATH:PACKAGE ...
install_missing() {
  local missing=() pair have
  for pair in "$@"; do
    have="${pair%%:*}"
    if [ "${have:0:1}" = / ]; then [ -e "$have" ]; else command -v "$have" >/dev/null 2>&1; fi || missing+=("${pair#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# CI may start on a fresh machine where none of this is installed yet. Maven (and the JRE
# it brings) is installed only when the OpenSearch distribution has to be fetched.
ensure_packages() {
  # debootstrap verifies the Release file with the keyring; without it the check is skipped.
  install_missing debootstrap:debootstrap docker:docker.io sha256sum:coreutils flock:util-linux unzip:unzip \
    /usr/share/keyrings/debian-archive-keyring.gpg:debian-archive-keyring
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

# Each node's engine and its "tls" directory (empty if it has none), a tab between: the node
# file scripts/cluster.sh writes, an entry without braces inside it.
node_engines() {
  local entry
  [ -f "$NODES_FILE" ] || die "no node file $NODES_FILE: run scripts/cluster.sh up first"
  grep -o '{[^{}]*}' "$NODES_FILE" | while IFS= read -r entry; do
    printf '%s\t%s\n' "$(field "$entry" docker_host)" "$(field "$entry" tls)"
  done
}

field() {   # entry key: a string value of the entry
  grep -o "\"$2\"[[:space:]]*:[[:space:]]*\"[^\"]*\"" <<<"$1" | sed 's/.*"\([^"]*\)"$/\1/' || true
}

declare -A TLS_OF   # docker-host -> its client certificates' directory (Docker's file names)
docker_at() {   # docker-host docker-arguments...
  local h="$1" tls; shift
  tls="${TLS_OF[$h]:-}"
  if [ -n "$tls" ]; then
    docker --tlsverify --tlscacert "$tls/ca.pem" --tlscert "$tls/cert.pem" --tlskey "$tls/key.pem" -H "$h" "$@"
  else
    docker -H "$h" "$@"
  fi
}

root_key() {   # include trim-version: a root file system's identity
  printf 'suite=%s variant=%s include=%s arch=%s trim=%s\n' "$SUITE" "$VARIANT" "$1" "$(dpkg --print-architecture)" "$2" |
    sha256sum | cut -c1-16
}
declare -A ROOT_KEY ROOT_TAR
for r in "${ROOTS[@]}"; do
  ROOT_KEY[$r]="$(root_key "${ROOT_INCLUDE[$r]}" "${ROOT_TRIM[$r]}")"
  ROOT_TAR[$r]="$CACHE/$r-${ROOT_KEY[$r]}.tar"
done
unset r
root_image() {   # root: the image a root is imported as
  if [ "$1" = base ]; then echo flocker/base:local; else echo "flocker/$1-root:local"; fi
}
ROOT_REFS=(); for r in "${ROOTS[@]}"; do ROOT_REFS+=("$(root_image "$r")"); done; unset r

images_key() {   # the root keys, the OpenSearch version, every file under images/ (path and content)
  {
    for r in "${ROOTS[@]}"; do echo "$r ${ROOT_KEY[$r]}"; done
    echo "opensearch $OPENSEARCH_VERSION"
    (cd "$repo" && find images -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | LC_ALL=C sort -z |
      xargs -0 sha256sum)
  } | sha256sum | cut -c1-16
}

# A debootstrap root as a tarball in the cache. Run in a subshell of its own (the roots are
# made at once: each is mostly waiting on downloads and dpkg), so its trap is its own.
build_root_tar() {   # root
  local name="$1" include="${ROOT_INCLUDE[$1]}" tarball="${ROOT_TAR[$1]}" mirror root t0=$SECONDS
  mirror="$(debian_mirror)"
  mkdir -p "$CACHE"
  root="$(mktemp -d "$CACHE/rootfs.XXXXXX")"
  trap 'rm -rf "$root"' EXIT
  log "debootstrap $SUITE ($VARIANT, +$include) from $mirror"
  debootstrap --variant="$VARIANT" --include="$include" "$SUITE" "$root" "$mirror" >"$root.log" 2>&1 ||
    { tail -n 30 "$root.log" >&2; die "debootstrap of the $name root failed; log: $root.log"; }
  rm -f "$root.log"
  # What a container never needs: package caches and lists, docs. Docker mounts its own
  # /proc, /sys and /dev, so their contents are left out of the layer.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
         "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
  if declare -F "trim_${name}_root" >/dev/null; then "trim_${name}_root" "$root"; fi
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

trim_opensearch_root() {   # root
  # OpenSearch refuses to run as root. uid and gid 1000, as in OpenSearch's own images, so a
  # data directory keeps its owner between this image and theirs; made here because the image
  # build runs no commands (no RUN steps).
  chroot "$1" groupadd --gid 1000 opensearch
  chroot "$1" useradd --uid 1000 --gid 1000 --no-create-home --home-dir /usr/share/opensearch \
    --shell /usr/sbin/nologin opensearch
  # The data directory (path.data; the article's mountpoint, since OpenSearch is the example's
  # Elasticsearch) in the image, owned by the user: Docker fills an empty named volume mounted
  # there from it, owner included.
  install -d -o 1000 -g 1000 -m 0750 "$1"/var/lib/elasticsearch
  rm -rf "$1"/usr/share/locale/*
}

# OpenSearch's distribution into the cache, fetched by Maven (which checks it against the
# repository's checksum: -C).
fetch_opensearch() {
  [ -f "$OPENSEARCH_ZIP" ] && return 0
  install_missing mvn:maven
  local t0=$SECONDS
  mkdir -p "$CACHE"
  log "fetching OpenSearch $OPENSEARCH_VERSION with Maven ($OPENSEARCH_ARTIFACT)"
  mvn -B -q -C -Dmaven.repo.local="$MAVEN_REPO" dependency:get -Dartifact="$OPENSEARCH_ARTIFACT" -Dtransitive=false \
      >"$CACHE/maven.log" 2>&1 || { tail -n 30 "$CACHE/maven.log" >&2; die "mvn dependency:get failed; log: $CACHE/maven.log"; }
  [ -f "$OPENSEARCH_ZIP" ] || die "Maven said nothing wrong, yet there is no $OPENSEARCH_ZIP"
  rm -f "$CACHE/maven.log"
  log "OpenSearch cached: $OPENSEARCH_ZIP ($(du -h "$OPENSEARCH_ZIP" | cut -f1), $((SECONDS - t0))s)"
}

# The build context of images/opensearch plus the unpacked distribution (dist/): the
# distribution stays out of the clone, and the build needs no network to get it.
context_opensearch() {   # directory
  unzip -q "$OPENSEARCH_ZIP" -d "$1"
  mv "$1/opensearch-$OPENSEARCH_VERSION" "$1/dist"
  # The server makes its (empty) keystore in config/ on its first start; the image gives the
  # directory to group opensearch (see images/opensearch), and COPY keeps this mode.
  chmod 0770 "$1/dist/config"
}

# What the node lacks and the caches do not hold, fetched side by side: the roots, and
# OpenSearch's distribution.
build_root_tars() {   # docker-host
  local pids=() p r failed=0
  for r in "${ROOTS[@]}"; do
    root_current "$1" "$(root_image "$r")" "${ROOT_KEY[$r]}" || [ -f "${ROOT_TAR[$r]}" ] ||
      { (build_root_tar "$r") & pids+=($!); }
  done
  [ -f "$OPENSEARCH_ZIP" ] || { (fetch_opensearch) & pids+=($!); }
  for p in "${pids[@]}"; do wait "$p" || failed=1; done
  [ $failed = 0 ] || die "could not make the root file systems or fetch OpenSearch"
}

# Each imported root carries its key in one label (flocker.base-key, whichever root it is),
# so that a node with the right one is not imported again.
root_current() {   # docker-host image key
  [ "$(docker_at "$1" image inspect --format '{{index .Config.Labels "flocker.base-key"}}' "$2" 2>/dev/null)" = "$3" ]
}

import_root() {   # docker-host tarball image key
  log "importing $3 on $1"
  docker_at "$1" import \
    --change "LABEL flocker.base-key=$4" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    "$2" "$3" >/dev/null
}

# True if the node has all images of this exact key (labels written at build/import time).
node_current() {   # docker-host
  local labels r
  labels="$(docker_at "$1" image inspect --format '{{index .Config.Labels "flocker.images-key"}}' \
      "${REFS[@]}" 2>/dev/null)" || return 1
  [ "$(printf '%s\n' "$labels" | sort -u)" = "$IMAGES_KEY" ] || return 1
  for r in "${ROOTS[@]}"; do root_current "$1" "$(root_image "$r")" "${ROOT_KEY[$r]}" || return 1; done
}

build_on() {   # docker-host
  local h="$1" name r context t0=$SECONDS
  mkdir -p "$CACHE"
  build_root_tars "$h"
  for r in "${ROOTS[@]}"; do
    root_current "$h" "$(root_image "$r")" "${ROOT_KEY[$r]}" || import_root "$h" "${ROOT_TAR[$r]}" "$(root_image "$r")" "${ROOT_KEY[$r]}"
  done
  for name in "${IMAGES[@]}"; do
    log "building flocker/$name:local on $h"
    context="$repo/images/$name"
    if declare -F "context_$name" >/dev/null; then
      CONTEXT="$(mktemp -d "$CACHE/context.XXXXXX")"
      cp -a "$context/." "$CONTEXT/"
      "context_$name" "$CONTEXT"
      context="$CONTEXT"
    fi
    # The classic builder (DOCKER_BUILDKIT=0) works with any client, needs no buildx plugin,
    # and uses the local base image as is; --network none: builds must not reach out.
    # Its output (and the client's deprecation notice for it) is shown only on failure.
    DOCKER_BUILDKIT=0 docker_at "$h" build --network none --pull=false \
      --label "flocker.images-key=$IMAGES_KEY" -t "flocker/$name:local" "$context" >"$CACHE/build.log" 2>&1 ||
      { cat "$CACHE/build.log" >&2; die "docker build of $name failed"; }
    rm -f "$CACHE/build.log"
    if [ -n "$CONTEXT" ]; then rm -rf "$CONTEXT"; CONTEXT=""; fi
  done
  log "built on $h in $((SECONDS - t0))s"
}

main() {
  local load_only=""
  case "${1:-}" in
    "") ;;
    --load-only) load_only=1 ;;
    *) die "unknown argument '$1' (expected nothing or --load-only)" ;;
  esac
  ensure_packages
  trap 'if [ -n "$CONTEXT" ]; then rm -rf "$CONTEXT"; fi' EXIT
  # One build at a time (parallel test runs); the lock is on this script, so no file is left.
  exec 9<"${BASH_SOURCE[0]}"
  flock 9
  IMAGES_KEY="$(images_key)"
  local images_tar="$CACHE/images-$IMAGES_KEY.tar" hosts=() need=() have="" h t0=$SECONDS pids=() failed=0 i
  local engine tls
  while IFS=$'\t' read -r engine tls; do
    hosts+=("$engine")
    TLS_OF[$engine]="$tls"
  done < <(node_engines)
  [ ${#hosts[@]} -gt 0 ] || die "no nodes in $NODES_FILE"
  for h in "${hosts[@]}"; do
    if node_current "$h"; then have="${have:-$h}"; else need+=("$h"); fi
  done
  if [ ${#need[@]} -eq 0 ]; then
    log "all ${#hosts[@]} node(s) have images $IMAGES_KEY"
    return 0
  fi
  if [ -n "$load_only" ] && [ ! -f "$images_tar" ] && [ -z "$have" ]; then
    log "images $IMAGES_KEY are not built yet: \`make images\` builds them and loads them onto every node"
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
    docker_at "$have" save -o "$images_tar.tmp" "${ROOT_REFS[@]}" "${REFS[@]}"
    mv -f "$images_tar.tmp" "$images_tar"
    # Keep the cache bounded: older image sets can be rebuilt from the root tarballs.
    find "$CACHE" -maxdepth 1 -name 'images-*.tar' ! -name "images-$IMAGES_KEY.tar" -delete
  fi
  # Loads run in parallel: each engine unpacks on its own, the tarball is read from page cache.
  for h in "${need[@]}"; do
    log "loading images onto $h"
    docker_at "$h" load -q -i "$images_tar" >/dev/null &
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
