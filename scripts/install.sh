#!/usr/bin/env bash
# `make install`: everything the project needs, idempotent, quick when already done.
# Slow builds (the Pulumi CLI, images) are cached outside the clone, keyed by version.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
venv=$root/.venv

# --- system packages (Debian) -------------------------------------------------------
need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v ip >/dev/null || need+=(iproute2)
command -v socat >/dev/null || need+=(socat)
command -v openssl >/dev/null || need+=(openssl)   # scripts/cluster.sh makes the cluster's CA and certificates
command -v curl >/dev/null || need+=(curl)         # a Go toolchain, when one must be fetched
command -v iptables >/dev/null || need+=(iptables)
command -v mkfs.btrfs >/dev/null || need+=(btrfs-progs)   # the cluster's volumes; the delta copy's tests
command -v nsenter >/dev/null || need+=(util-linux)
command -v ssh >/dev/null || need+=(openssh-client)   # ssh:// nodes
[ -x /usr/sbin/sshd ] || need+=(openssh-server)       # the SSH test's servers
command -v docker-registry >/dev/null || need+=(docker-registry)   # the registry test
if [ ${#need[@]} -gt 0 ]; then
  echo "install: apt packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Packages must not start their services (openssh-server would listen on port 22 of
  # this machine): the tests run their own servers, on ports of their own.
  policy=/usr/sbin/policy-rc.d
  [ -e $policy ] || { printf '#!/bin/sh\nexit 101\n' >$policy; chmod 755 $policy; trap 'rm -f $policy' EXIT; }
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi

# --- Python packages, pinned --------------------------------------------------------
stamp=$venv/.installed-$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  echo "install: Python packages into .venv"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  # pip only adds: a package the lock dropped would stay in a venv made before (pulumi-docker,
  # whose plugin manifest has Pulumi's own language host ask the engine for its plugin).
  extra=$("$venv/bin/pip" freeze -q --disable-pip-version-check --exclude-editable | grep -vixF -f requirements.lock || true)
  # shellcheck disable=SC2086  # one argument a package
  [ -z "$extra" ] || "$venv/bin/pip" uninstall -q -y --disable-pip-version-check $extra
  "$venv/bin/pip" install -q --disable-pip-version-check -r requirements.lock
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps -e .
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi

# --- Pulumi CLI and the programs the engine launches ----------------------------------
version=$(sed -n 's/^pulumi==//p' requirements.lock)
bash scripts/install-pulumi-cli.sh "$version" "$venv/bin"
bash scripts/install-engine-scripts.sh "$version" "$venv/bin"
echo "install: ready (pulumi $("$venv/bin/pulumi" version), $("$venv/bin/python" --version))"
