#!/usr/bin/env bash
# A local cluster of N Docker "hosts" on this one machine, for tests and demos.
#
# Each node is a network namespace with its own address on a bridge and its own
# containerd + dockerd, so containers, published ports and volumes really live on
# different engines that reach each other over an IP network, as on separate hosts.
#
#   scripts/cluster.sh up [N]        # N nodes (default 3, max 5); idempotent; grows a running cluster
#   scripts/cluster.sh down          # stop and remove everything it made (KEEP_DATA=1 keeps engines' data)
#   scripts/cluster.sh stop-node I   # stop node I's engine only (simulates an engine failure)
#   scripts/cluster.sh start-node I  # start it again and wait until it answers
#   scripts/cluster.sh status        # nodes and whether each engine answers (exit 3 if any does not)
#
# The engines listen on TCP port 2376 with TLS and insist on a client certificate
# (dockerd --tlsverify), as real hosts must: a container on any node can reach every
# node's address, and a root dockerd that answered it would be the machine's. The first
# `up` of a cluster makes its CA, under its state directory (tls/), a server certificate
# per node for the node's address, and one client certificate (tls/client: Docker's
# ca.pem, cert.pem, key.pem, the key readable by the user who ran `sudo` only); `down`
# removes them. The node file names that directory as each node's "tls".
#
# Writes the node file .cluster/nodes.json in the repository root (or $FLOCKER_NODES_FILE).
#
# FLOCKER_CLUSTER=K (1..9) makes a separate cluster K beside the default one (0): its own
# bridge, subnet 172.16.(255-K).0/24, namespaces, daemons and directories, so several
# clones can run their integration tests on one machine at once without meeting.
#
# FLOCKER_NODE<I>_DISK_MB=M (at the `up` that makes node I) puts that node's Docker volumes
# on a filesystem of M MB of their own, so that a test can fill the disk a copy writes to
# (images stay on the shared disk: they would not fit). The node file says so
# ("volumes_mb"); it stays that way for the node's life, until `down`.
#
# Otherwise each node's Docker volumes live on a btrfs of their own (a sparse loop image;
# the node file says "volumes_fs": "btrfs"): there a move's copy rounds reread only the
# extents a database rewrote (provider/flocker_provider/on_node/btrfs_extents.py).
# FLOCKER_VOLUMES_FS=host (at `up`) leaves them on this machine's disk, as before.
set -euo pipefail

CLUSTER="${FLOCKER_CLUSTER:-0}"
[[ "$CLUSTER" =~ ^[0-9]$ ]] || { echo "cluster: FLOCKER_CLUSTER must be 0..9, got '$CLUSTER'" >&2; exit 2; }
if [ "$CLUSTER" = 0 ]; then TAG=""; SUFFIX=""; else TAG="$CLUSTER"; SUFFIX="-$CLUSTER"; fi
BRIDGE="flkbr$CLUSTER"
PREFIX="172.16.$((255 - CLUSTER))"
GATEWAY="$PREFIX.1"
MAX_NODES=5
VOLUMES_FS="${FLOCKER_VOLUMES_FS:-btrfs}"
case "$VOLUMES_FS" in
  btrfs|host) ;;
  *) echo "cluster: FLOCKER_VOLUMES_FS must be btrfs or host, got '$VOLUMES_FS'" >&2; exit 2 ;;
esac
LIB="/var/lib/flocker-cluster$SUFFIX"
RUN="/run/flocker-cluster$SUFFIX"
LOGDIR="/var/log/flocker-cluster$SUFFIX"
ENGINE_DEADLINE=${FLOCKER_ENGINE_DEADLINE:-60}   # seconds to wait for an engine to answer
STOP_DEADLINE=${FLOCKER_STOP_DEADLINE:-40}       # seconds before a stopping daemon gets SIGKILL
RULE_TAG="flocker-cluster$SUFFIX"                # iptables comment marking the rules we own

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
NODES_FILE="${FLOCKER_NODES_FILE:-$repo/.cluster/nodes.json}"

die() { echo "cluster: $*" >&2; exit 1; }
log() { echo "cluster: $*" >&2; }

TLS="$LIB/tls"
CLIENT_TLS="$TLS/client"
ENGINE_PORT=2376

ns_name() { echo "flk$TAG-node$1"; }
veth_name() { echo "flk${TAG}veth$1"; }
node_addr() { echo "$PREFIX.$((249 + $1))"; }
node_run() { echo "$RUN/node$1"; }
node_lib() { echo "$LIB/node$1"; }
node_tls() { echo "$TLS/node$1"; }
engine_url() { echo "tcp://$(node_addr "$1"):$ENGINE_PORT"; }

# CI may start on a fresh machine where none of this is installed yet.
ensure_packages() {
  local missing=() pair
  for pair in unshare:util-linux dockerd:docker.io containerd:containerd runc:runc docker-proxy:docker.io \
              ip:iproute2 iptables:iptables nsenter:util-linux setsid:util-linux flock:util-linux \
              openssl:openssl mkfs.btrfs:btrfs-progs; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "needs root to install: ${missing[*]}"
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# pid from a pidfile, printed only if that process is alive and really is the daemon we
# started for this node (a stale pidfile from a crashed run may name a reused pid).
live_pid() {   # pidfile marker
  local pidfile="$1" marker="$2" pid
  [ -s "$pidfile" ] || return 1
  pid="$(tr -dc 0-9 <"$pidfile")"
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  [[ "$(tr '\0' ' ' <"/proc/$pid/cmdline")" == *"$marker"* ]] || return 1
  echo "$pid"
}

# A daemon just launched: alive as long as its pid is (and not a zombie). Its command line is
# no test yet: it changes, and reads empty for an instant, while env, setsid and nsenter exec
# one another, and a check that landed in that instant took a starting daemon for dead.
launched_alive() {   # pidfile
  local pid
  pid="$(tr -dc 0-9 <"$1" 2>/dev/null)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]
}

# dockerd's own pidfile appears only once it has started; before that, the pid we launched.
dockerd_pid() {   # run-dir
  live_pid "$1/docker.pid" "$1/docker.sock" || live_pid "$1/dockerd.launched" "$1/docker.sock"
}

engine_answers() {   # i: over TLS with the client certificate, as every client of the cluster
  timeout 5 docker --tlsverify --tlscacert "$CLIENT_TLS/ca.pem" --tlscert "$CLIENT_TLS/cert.pem" \
    --tlskey "$CLIENT_TLS/key.pem" -H "$(engine_url "$1")" info --format '{{.ID}}' >/dev/null 2>&1
}

# Processes whose network namespace is node i's: its dockerd, containerd, docker-proxy,
# container shims and host-network containers. Used to clean up after a crash or kill -9.
pids_in_ns() {   # i
  local nsfile="/var/run/netns/$(ns_name "$1")" want p
  [ -e "$nsfile" ] || return 0
  want="net:[$(stat -L -c %i "$nsfile")]"
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/ns/net" 2>/dev/null)" = "$want" ] && echo "${p#/proc/}"
  done
  return 0
}

wait_gone() {   # deadline pid...
  local deadline=$(( SECONDS + $1 )) p alive; shift
  while :; do
    alive=0
    for p in "$@"; do [ -d "/proc/$p" ] && ! grep -q '^State:.*Z' "/proc/$p/status" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && return 0
    [ $SECONDS -ge $deadline ] && return 1
    sleep 0.2
  done
}

stop_pid() {   # name pid: SIGTERM, wait, then SIGKILL (a hung daemon must not block tests forever)
  local name="$1" pid="$2"
  kill -TERM "$pid" 2>/dev/null || return 0
  if ! wait_gone "$STOP_DEADLINE" "$pid"; then
    log "$name (pid $pid) did not stop within ${STOP_DEADLINE}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone 10 "$pid" || true
  fi
}

# Unmount whatever dockerd left under a directory (overlay, shm, netns bind mounts):
# after a SIGKILL they stay mounted and rm -rf would fail or descend into them.
umount_under() {   # dir...
  local d m
  for d in "$@"; do
    # mountinfo's field 5 is the mount point, with spaces etc. octal-escaped; deepest first.
    awk -v d="$d" '{ p = $5; gsub(/\\040/, " ", p); if (p == d || index(p, d "/") == 1) print length(p) "\t" p }' \
        /proc/self/mountinfo | sort -rn | cut -f2- | while IFS= read -r m; do
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
    done
  done
}

# ---------------------------------------------------------------------------- network

has_addr() {   # "ip addr" output, address
  [[ "$1" == *" $2/24 "* ]]
}

ensure_rule() {   # iptables args without -A/-I: insert once, at the top so it precedes any DROP
  iptables -C FORWARD "$@" -m comment --comment "$RULE_TAG" 2>/dev/null ||
    iptables -I FORWARD "$@" -m comment --comment "$RULE_TAG"
}

ensure_bridge() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge
  fi
  # Not `ip … | grep -q`: grep -q exits at the first match, ip may then die of SIGPIPE, and
  # with pipefail the pipeline "fails", so a present address would be added again (error).
  has_addr "$(ip addr show dev "$BRIDGE")" "$GATEWAY" || ip addr add "$GATEWAY/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # No ip_forward in the root namespace: nodes share one L2 segment and the root namespace
  # reaches them directly, so nothing needs routing. Leaving it off (when nothing else has
  # turned it on) means node traffic can never be forwarded off this machine.
  # A dockerd in the root namespace sets FORWARD's policy to DROP and br_netfilter makes
  # bridged frames traverse FORWARD, so node-to-node traffic needs explicit ACCEPTs; and if
  # something has turned ip_forward on, new connections from the nodes to anywhere but the
  # bridge (e.g. the host's DNS server copied into containers) are rejected at once.
  # Each rule is inserted at the top, so they are listed here in reverse order of evaluation.
  ensure_rule -i "$BRIDGE" ! -o "$BRIDGE" -j REJECT
  ensure_rule -i "$BRIDGE" ! -o "$BRIDGE" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
  ensure_rule -o "$BRIDGE" -j ACCEPT
  ensure_rule -i "$BRIDGE" -o "$BRIDGE" -j ACCEPT
}

remove_rules() {
  local spec
  # Delete exactly the rules carrying our comment, whatever their order or count.
  while spec="$(iptables -S FORWARD 2>/dev/null | grep -E -- "--comment $RULE_TAG( |\$)")" && [ -n "$spec" ]; do
    spec="${spec%%$'\n'*}"   # the first one (no `| head`: its SIGPIPE would end the loop under pipefail)
    # shellcheck disable=SC2086  # the rule spec must be word-split back into arguments
    eval "iptables -D ${spec#-A }" || { log "could not delete rule: $spec"; break; }
  done
}

ensure_netns() {   # i
  local i="$1" ns host peer addr
  ns="$(ns_name "$i")"; host="$(veth_name "$i")"; peer="$(veth_name "$i")p"; addr="$(node_addr "$i")"
  # A namespace file that is not a live nsfs mount (e.g. left after a crash) is unusable.
  if [ -e "/var/run/netns/$ns" ] && ! ip -n "$ns" link show lo >/dev/null 2>&1; then
    ip netns del "$ns" 2>/dev/null || rm -f "/var/run/netns/$ns"
  fi
  [ -e "/var/run/netns/$ns" ] || ip netns add "$ns"
  if ! ip -n "$ns" link show eth0 >/dev/null 2>&1; then
    ip link del "$host" 2>/dev/null || true     # half of a pair left by an interrupted run
    ip link add "$host" type veth peer name "$peer"
    ip link set "$peer" netns "$ns"
    ip -n "$ns" link set "$peer" name eth0
  fi
  ip link set "$host" master "$BRIDGE" up
  ip -n "$ns" link set lo up
  has_addr "$(ip -n "$ns" addr show dev eth0)" "$addr" || ip -n "$ns" addr add "$addr/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" route replace default via "$GATEWAY"
}

# ---------------------------------------------------------------------------- certificates

# Elliptic-curve keys: made in milliseconds, and Docker, Go and Python's ssl all take them.
new_key() {   # file
  (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null) ||
    die "openssl could not make a key $1"
}

signed() {   # key cert subject extensions...: a certificate for key, signed by the cluster's CA
  local key="$1" cert="$2" subject="$3" ext; shift 3
  ext="$(printf '%s\n' "basicConstraints=critical,CA:FALSE" "$@")"
  openssl req -new -key "$key" -subj "$subject" 2>/dev/null |
    openssl x509 -req -CA "$TLS/ca.pem" -CAkey "$TLS/ca-key.pem" -CAcreateserial -days 825 -out "$cert.tmp" \
      -extfile <(echo "$ext") 2>/dev/null || die "openssl could not sign $cert"
  mv -f "$cert.tmp" "$cert"
}

# The CA once per cluster (a CA made again would leave every certificate it signed untrusted),
# then what is missing of the client's and the nodes' certificates.
ensure_certificates() {   # node numbers...
  local i dir
  mkdir -p "$TLS"; chmod 755 "$TLS"
  if [ ! -s "$TLS/ca.pem" ]; then
    log "making the cluster's CA in $TLS"
    new_key "$TLS/ca-key.pem"
    openssl req -x509 -new -key "$TLS/ca-key.pem" -subj "/CN=flocker-cluster$SUFFIX CA" -days 825 -out "$TLS/ca.pem.tmp" \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null ||
      die "openssl could not make the CA"
    mv -f "$TLS/ca.pem.tmp" "$TLS/ca.pem"
    rm -rf "$CLIENT_TLS" "$TLS"/node*   # signed by a CA that is gone
  fi
  if [ ! -s "$CLIENT_TLS/cert.pem" ]; then
    mkdir -p "$CLIENT_TLS"
    new_key "$CLIENT_TLS/key.pem"
    signed "$CLIENT_TLS/key.pem" "$CLIENT_TLS/cert.pem" "/CN=flocker-cluster$SUFFIX client" "extendedKeyUsage=clientAuth"
    cp "$TLS/ca.pem" "$CLIENT_TLS/ca.pem"
    # The key is the keys to every node: the user who ran `sudo` (tests, pulumi) and root only.
    chown "${SUDO_UID:-0}:${SUDO_GID:-0}" "$CLIENT_TLS/key.pem"
  fi
  for i in "$@"; do
    dir="$(node_tls "$i")"
    [ -s "$dir/cert.pem" ] && continue
    mkdir -p "$dir"; chmod 700 "$dir"
    new_key "$dir/key.pem"
    signed "$dir/key.pem" "$dir/cert.pem" "/CN=node$i" "subjectAltName=IP:$(node_addr "$i")" "extendedKeyUsage=serverAuth"
  done
}

# ---------------------------------------------------------------------------- engines

volumes_image() { echo "$(node_lib "$1")/volumes.img"; }
btrfs_image() { echo "$(node_lib "$1")/volumes.btrfs"; }
# Sparse: it takes only what the volumes use of this machine's disk.
BTRFS_IMAGE_SIZE=64G

# A loop-mounted image, not a tmpfs: the volumes outlive `stop-node`, as on a real disk. An ext4
# of FLOCKER_NODE<I>_DISK_MB, or else a btrfs (FLOCKER_VOLUMES_FS, checked at the top).
mount_volumes_disk() {   # i; before its dockerd starts
  local i="$1" var="FLOCKER_NODE${1}_DISK_MB" mb image dir
  image="$(volumes_image "$i")"; dir="$(node_lib "$i")/docker/volumes"; mb="${!var:-}"
  if [ ! -e "$image" ]; then
    if [ -z "$mb" ]; then mount_btrfs_volumes "$i"; return 0; fi
    [[ "$mb" =~ ^[0-9]+$ ]] && [ "$mb" -ge 16 ] || die "$var must be a size in MB, 16 or more, got '$mb'"
    # Over volumes already there it would hide them, as a disk swapped under a running node would.
    [ -z "$(ls -A "$dir" 2>/dev/null)" ] || die "node$i has volumes already: $var applies to a node that does not exist yet"
    truncate -s "${mb}M" "$image"
    mkfs.ext4 -q -F -m 0 "$image"
  fi
  mount_at_volumes "$i" "$image" ext4
  # Docker takes every directory there for a volume.
  rmdir "$dir/lost+found" 2>/dev/null || true
}

mount_btrfs_volumes() {   # i; before its dockerd starts
  local i="$1" image dir
  image="$(btrfs_image "$i")"; dir="$(node_lib "$i")/docker/volumes"
  if [ ! -e "$image" ]; then
    [ "$VOLUMES_FS" = btrfs ] || return 0
    [ -z "$(ls -A "$dir" 2>/dev/null)" ] || return 0   # a node made before: its volumes stay where they are
    truncate -s "$BTRFS_IMAGE_SIZE" "$image"
    mkfs.btrfs -q -f "$image" >/dev/null
  fi
  mount_at_volumes "$i" "$image" btrfs
}

mount_at_volumes() {   # i image fs: the image at the node's Docker volumes directory
  local i="$1" image="$2" fs="$3" dir
  dir="$(node_lib "$i")/docker/volumes"
  mkdir -p "$dir"
  mountpoint -q "$dir" && return 0
  # dockerd binds a data root that is no mount point onto itself (to make it shared), and
  # that bind would hide the disk beneath: a bind of its own first, dockerd keeps it.
  mountpoint -q "$(node_lib "$i")/docker" || mount --bind "$(node_lib "$i")/docker" "$(node_lib "$i")/docker"
  if ! mount -o loop "$image" "$dir"; then
    [ "$fs" = btrfs ] && die "node$i: cannot mount a btrfs for its volumes (is btrfs in this kernel?); FLOCKER_VOLUMES_FS=host at the first up keeps them on this machine's disk"
    die "node$i: cannot mount its $fs volumes image $image"
  fi
}

start_engine() {   # i
  local i="$1" ns run lib logf deadline
  ns="$(ns_name "$i")"; run="$(node_run "$i")"; lib="$(node_lib "$i")"
  logf="$LOGDIR/node$i.log"
  mkdir -p "$run" "$lib/docker" "$lib/containerd" "$LOGDIR"

  # A containerd per node, rather than dockerd's "managed" one: dockerd reuses any system
  # containerd at /run/containerd/containerd.sock if one runs, and then all nodes would share
  # one containerd namespace ("moby") and clean up each other's containers on restart.
  if ! live_pid "$run/containerd.pid" "$run/containerd.toml" >/dev/null; then
    cat >"$run/containerd.toml" <<EOF
version = 2
root = "$lib/containerd"
state = "$run/containerd"
# CRI is for Kubernetes only; the opt path would otherwise be a shared /opt/containerd.
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$run/containerd.sock"
[ttrpc]
  address = "$run/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$lib/containerd/opt"
EOF
    rm -f "$run/containerd.sock" "$run/containerd.sock.ttrpc"
    echo "=== $(date -Is) starting containerd for node$i" >>"$logf"
    # setsid: the daemons must outlive this script and not get the caller's Ctrl-C or
    # hang-up. In a non-interactive shell the background job is not a group leader, so
    # setsid execs without forking and $! is the daemon's own pid (nsenter execs too).
    env -u NOTIFY_SOCKET setsid nsenter --net="/var/run/netns/$ns" \
      containerd --config "$run/containerd.toml" >>"$logf" 2>&1 </dev/null 9<&- &
    echo $! >"$run/containerd.pid"
    deadline=$(( SECONDS + 30 ))
    until [ -S "$run/containerd.sock" ]; do
      launched_alive "$run/containerd.pid" ||
        { tail -n 30 "$logf" >&2; die "containerd of node$i exited; log: $logf"; }
      [ $SECONDS -lt $deadline ] || { tail -n 30 "$logf" >&2; die "containerd of node$i did not start in 30s; log: $logf"; }
      sleep 0.2
    done
  fi

  if ! dockerd_pid "$run" >/dev/null; then
    mount_volumes_disk "$i"
    rm -f "$run/docker.pid"   # dockerd refuses to start while a (stale) pidfile names a live pid
    # Our own daemon config, so a host /etc/docker/daemon.json cannot change the nodes.
    # deprecated-key-path exists in 20.10's config file only (not as a flag).
    printf '{"deprecated-key-path": "%s"}\n' "$lib/docker/key.json" >"$run/daemon.json"
    echo "=== $(date -Is) starting dockerd for node$i" >>"$logf"
    # nsenter --net and not `ip netns exec`: the latter remounts /sys and dockerd then dies
    # with "Devices cgroup isn't mounted".
    # --dns 127.0.0.1: containers would otherwise get the host's resolver, an address off
    # this machine; a name that is not in /etc/hosts (links) must fail fast, locally.
    # Own UTS namespace and key file (see daemon.json): otherwise every node reports the same Name (the
    # machine's host name) and ID (from /etc/docker/key.json) in `docker info`, and a
    # client could not tell the engines apart. The key lives with the data so the ID
    # survives restarts (and KEEP_DATA).
    env -u NOTIFY_SOCKET setsid nsenter --net="/var/run/netns/$ns" \
      unshare --uts sh -c 'hostname "$0" && exec "$@"' "node$i" \
      dockerd \
        --config-file "$run/daemon.json" \
        --data-root "$lib/docker" \
        --exec-root "$run/exec" \
        --pidfile "$run/docker.pid" \
        --containerd "$run/containerd.sock" \
        -H "unix://$run/docker.sock" \
        -H "$(engine_url "$i")" \
        --tlsverify --tlscacert "$TLS/ca.pem" --tlscert "$(node_tls "$i")/cert.pem" --tlskey "$(node_tls "$i")/key.pem" \
        --dns 127.0.0.1 \
        >>"$logf" 2>&1 </dev/null 9<&- &
    # Not into docker.pid: dockerd refuses to start when that names a live pid, even its own.
    echo $! >"$run/dockerd.launched"
  fi
}

wait_engine() {   # i
  local i="$1" run deadline
  run="$(node_run "$i")"; deadline=$(( SECONDS + ENGINE_DEADLINE ))
  until engine_answers "$i"; do
    if ! dockerd_pid "$run" >/dev/null && ! launched_alive "$run/dockerd.launched"; then
      tail -n 30 "$LOGDIR/node$i.log" >&2
      die "dockerd of node$i exited; log: $LOGDIR/node$i.log"
    fi
    if [ $SECONDS -ge $deadline ]; then
      tail -n 30 "$LOGDIR/node$i.log" >&2
      die "engine of node$i did not answer on $(engine_url "$i") within ${ENGINE_DEADLINE}s; log: $LOGDIR/node$i.log"
    fi
    sleep 0.5
  done
}

stop_engine() {   # i
  local i="$1" run pid p shim_children=() rest=()
  run="$(node_run "$i")"
  # dockerd first: on SIGTERM it stops its containers, which needs its containerd alive.
  if pid="$(dockerd_pid "$run")"; then stop_pid "dockerd of node$i" "$pid"; fi
  if pid="$(live_pid "$run/containerd.pid" "$run/containerd.toml")"; then stop_pid "containerd of node$i" "$pid"; fi
  rm -f "$run/docker.pid" "$run/dockerd.launched" "$run/containerd.pid"
  # Whatever is still in the namespace was orphaned by a SIGKILL or a crash: docker-proxy,
  # shims (which outlive containerd by design) and their containers. Kill the containers'
  # init processes before their shims, or they would be reparented and keep running.
  for p in $(pids_in_ns "$i"); do
    case "$(cat "/proc/$p/comm" 2>/dev/null)" in
      containerd-shim*) shim_children+=($(awk -v s="$p" '$4 == s { print $1 }' /proc/[0-9]*/stat 2>/dev/null)); rest+=("$p") ;;
      *) rest+=("$p") ;;
    esac
  done
  if [ ${#shim_children[@]} -gt 0 ] || [ ${#rest[@]} -gt 0 ]; then
    log "node$i: killing leftover processes ${shim_children[*]} ${rest[*]}"
    kill -KILL "${shim_children[@]}" "${rest[@]}" 2>/dev/null || true
    wait_gone 10 "${shim_children[@]}" "${rest[@]}" || log "node$i: some leftover processes did not die"
  fi
  # A SIGKILLed dockerd leaves overlay/shm/netns mounts that would break its next start.
  umount_under "$run/exec" "$(node_lib "$i")/docker"
}

# ---------------------------------------------------------------------------- node file

existing_nodes() {   # node numbers whose namespace exists, ascending
  local i
  for i in $(seq 1 $MAX_NODES); do [ -e "/var/run/netns/$(ns_name "$i")" ] && echo "$i"; done
  return 0
}

write_nodes_file() {
  local tmp i first=1
  mkdir -p "$(dirname "$NODES_FILE")"
  tmp="$(mktemp "$NODES_FILE.XXXXXX")"
  {
    printf '{"nodes": ['
    for i in $(existing_nodes); do
      [ $first = 1 ] || printf ', '
      first=0
      # engine_socket, netns, volumes_mb and volumes_fs are not read by the provider: the SSH
      # test and the proxies of tests and benchmarks reach the engine through the first, the
      # registry test runs a registry in the second, the full-disk test looks for the third,
      # the PostgreSQL move test for the fourth.
      printf '{"name": "node%s", "address": "%s", "docker_host": "%s", "tls": "%s", "engine_socket": "%s/docker.sock", "netns": "%s"' \
        "$i" "$(node_addr "$i")" "$(engine_url "$i")" "$CLIENT_TLS" "$(node_run "$i")" "$(ns_name "$i")"
      [ -e "$(volumes_image "$i")" ] && printf ', "volumes_mb": %s' "$(( $(stat -c %s "$(volumes_image "$i")") >> 20 ))"
      [ -e "$(btrfs_image "$i")" ] && printf ', "volumes_fs": "btrfs"'
      printf '}'
    done
    printf ']}\n'
  } >"$tmp"
  chmod 644 "$tmp"
  mv -f "$tmp" "$NODES_FILE"   # rename is atomic: readers never see a half-written file
}

# ---------------------------------------------------------------------------- commands

check_index() {
  [[ "${1:-}" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le $MAX_NODES ] || die "node number must be 1..$MAX_NODES, got '${1:-}'"
}

cmd_up() {
  local n="${1:-3}" i nodes
  check_index "$n"
  ensure_packages
  ensure_bridge
  # Nodes 1..N plus any node already in the cluster: up never shrinks a cluster.
  nodes="$( { seq 1 "$n"; existing_nodes; } | sort -nu)"
  for i in $nodes; do ensure_netns "$i"; done
  # shellcheck disable=SC2086  # one node number a word
  ensure_certificates $nodes
  for i in $nodes; do start_engine "$i"; done   # start all, then wait: engines boot in parallel
  for i in $nodes; do wait_engine "$i"; done
  write_nodes_file
  log "up: $(echo $nodes | wc -w) node(s); node file $NODES_FILE"
}

cmd_down() {
  local i ns
  for i in $(seq 1 $MAX_NODES); do
    if [ -e "/var/run/netns/$(ns_name "$i")" ] || [ -d "$(node_run "$i")" ]; then stop_engine "$i"; fi
  done
  for i in $(seq 1 $MAX_NODES); do
    ns="$(ns_name "$i")"
    if [ -e "/var/run/netns/$ns" ]; then ip netns del "$ns" 2>/dev/null || { umount "/var/run/netns/$ns" 2>/dev/null; rm -f "/var/run/netns/$ns"; }; fi
    ip link del "$(veth_name "$i")" 2>/dev/null || true
  done
  ip link del "$BRIDGE" 2>/dev/null || true
  remove_rules
  umount_under "$RUN"
  rm -rf "$RUN"
  for i in $(seq 1 $MAX_NODES); do
    [ -d "$(node_lib "$i")" ] || continue
    umount_under "$(node_lib "$i")"
    rm -rf "$(node_lib "$i")/containerd"
    [ "${KEEP_DATA:-0}" = 1 ] || rm -rf "$(node_lib "$i")/docker" "$(volumes_image "$i")" "$(btrfs_image "$i")"
    rmdir "$(node_lib "$i")" 2>/dev/null || true
  done
  rm -rf "$TLS"
  rmdir "$LIB" 2>/dev/null || true
  rm -f "$NODES_FILE"
  rmdir "$(dirname "$NODES_FILE")" 2>/dev/null || true
  log "down"
}

cmd_stop_node() {
  check_index "${1:-}"
  [ -e "/var/run/netns/$(ns_name "$1")" ] || die "node$1 is not in the cluster"
  stop_engine "$1"
  log "node$1 engine stopped"
}

cmd_start_node() {
  check_index "${1:-}"
  [ -e "/var/run/netns/$(ns_name "$1")" ] || die "node$1 is not in the cluster (use: up $1)"
  ensure_bridge
  ensure_netns "$1"
  start_engine "$1"
  wait_engine "$1"
  log "node$1 engine answers"
}

cmd_status() {
  local i all_up=0 any=0 state
  for i in $(existing_nodes); do
    any=1
    if engine_answers "$i"; then state=up; else state=down; all_up=3; fi
    printf '%-6s %-15s %s  %s\n' "node$i" "$(node_addr "$i")" "$(engine_url "$i")" "$state"
  done
  [ $any = 1 ] || { echo "no cluster"; return 3; }
  return $all_up
}

main() {
  local cmd="${1:-}"; shift || true
  [ "$(id -u)" = 0 ] || die "must run as root (namespaces, bridge, dockerd)"
  # One cluster operation at a time: the lock is on this script itself, so no file is left.
  # The daemons are started with fd 9 closed, or they would hold the lock forever.
  exec 9<"${BASH_SOURCE[0]}"
  flock 9
  case "$cmd" in
    up) cmd_up "$@" ;;
    down) cmd_down ;;
    stop-node) cmd_stop_node "$@" ;;
    start-node) cmd_start_node "$@" ;;
    status) cmd_status ;;
    *) echo "usage: $0 up [N] | down | stop-node I | start-node I | status" >&2; exit 2 ;;
  esac
}

main "$@"
