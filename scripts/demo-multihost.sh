#!/usr/bin/env bash
# The multi-host part of `make demo` (scripts/demo.sh runs it when bin/consul
# exists; it also runs on its own). Two hosts, each a network namespace with
# a Docker engine of its own (scripts/engine2.sh) and felt:latest installed
# in it, pointed at Consul; an underlay namespace joins them with a bridge and
# runs Consul. The felt network is created once, on the first host: felt
# declares it in Consul and creates it in the other host's engine (cluster
# networks). A container runs on each, and they ping each other across the
# vxlan overlay. Then it
# shows what felt built: each host's lease, its VTEP with FDB, neighbour and
# route entries, and felt's keys in Consul; and ends with `felt status` of
# each host (the felt binary of the plugin's rootfs, run in the host's
# namespace against its engine's plugin socket).
#
# Everything is removed at the end unless KEEP=1; `scripts/demo-multihost.sh
# clean` removes what a KEEP=1 run left. Nothing is made in the root network
# namespace or in the host's own Docker engine.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

ul=felt-demo-ul                   # underlay: bridge br0 + Consul
hosts=(felt-demo-h1 felt-demo-h2) # at most 14 characters (engine2.sh)
gw=192.168.89.1
consul_addr=$gw:8500
consul_dir=/tmp/felt-demo-consul
pool=10.42.0.0/16
net=blue
plugin=felt:latest # each engine is a host of its own: the real name

ip_of() { echo "192.168.89.$((11 + $1))"; } # host index -> underlay address
ctr() { echo "ctr-$(($1 + 1))"; }            # host index -> container name
# d I ARGS: docker on host I's engine, the command echoed as on that host.
d() {
  local i=$1
  shift
  echo "[${hosts[$i]}] docker $*" >&2
  docker -H "unix:///tmp/felt-engine-${hosts[$i]}/docker.sock" "$@"
}
dq() { local i=$1; shift; docker -H "unix:///tmp/felt-engine-${hosts[$i]}/docker.sock" "$@"; } # quiet
consul() { ip netns exec "$ul" env -u CONSUL_HTTP_TOKEN -u CONSUL_HTTP_SSL CONSUL_HTTP_ADDR="$consul_addr" bin/consul "$@"; }

teardown() {
  local i h pid
  for i in "${!hosts[@]}"; do
    h=${hosts[$i]}
    if [ -S "/tmp/felt-engine-$h/docker.sock" ] && dq "$i" version >/dev/null 2>&1; then
      dq "$i" rm -f "$(ctr "$i")" >/dev/null 2>&1 || true
      dq "$i" network rm "$net" >/dev/null 2>&1 || true
      dq "$i" plugin disable -f "$plugin" >/dev/null 2>&1 || true
      dq "$i" plugin rm -f "$plugin" >/dev/null 2>&1 || true
    fi
    scripts/engine2.sh stop "$h" || true
    [ -e "/run/netns/$h" ] && ip netns del "$h"
  done
  if [ -f "$consul_dir/pid" ]; then
    pid=$(cat "$consul_dir/pid")
    if kill -0 "$pid" 2>/dev/null && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = consul ]; then
      kill -TERM "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -rf "$consul_dir"
  [ -e "/run/netns/$ul" ] && ip netns del "$ul"
  return 0
}

if [ "${1:-}" = clean ]; then
  teardown
  exit 0
fi

[ -x bin/consul ] || { echo "bin/consul is missing: run make consul" >&2; exit 1; }
cleanup() {
  local status=$? h
  if [ $status != 0 ]; then
    for h in "${hosts[@]}"; do
      [ -f "/tmp/felt-engine-$h/dockerd.log" ] || continue
      echo "--- $h's dockerd log: felt's output, warnings and errors (last 30):" >&2
      { scripts/engine2.sh log "$h" 2000 | grep -E 'plugin=|level=(error|warning)|failed' | tail -n 30 >&2; } || true
    done
  fi
  if [ "${KEEP:-0}" = 1 ]; then
    [ $status = 0 ] || echo "the multi-host demo failed (exit $status)"
    echo "KEEP=1: left namespaces $ul ${hosts[*]}, their engines and Consul. Try:"
    echo "  docker -H unix:///tmp/felt-engine-${hosts[0]}/docker.sock ps"
    echo "  ip netns exec $ul env CONSUL_HTTP_ADDR=$consul_addr bin/consul kv get -recurse felt/"
    echo "remove with: scripts/demo-multihost.sh clean"
    return
  fi
  teardown
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
teardown # a KEEP=1 run's, or an interrupted one's

# What a host needs: the busybox image and the plugin directory (make demo
# made both; build them when run on its own).
scripts/busybox-image.sh busybox:latest
plugindir=bin/plugin
if [ ! -f "$plugindir/config.json" ]; then
  plugindir=$(mktemp -d)
  trap 'cleanup; rm -rf "$plugindir"' EXIT
  scripts/plugin-rootfs.sh "$plugindir"
fi

say "underlay: namespace $ul, bridge br0 $gw/24, Consul on $consul_addr"
ip netns add "$ul"
ip -n "$ul" link set lo up
# A fixed MAC: a bridge otherwise takes its lowest port's, so when a host's
# veth leaves, the gateway's MAC changes under the other hosts' ARP caches
# and their traffic to Consul stalls for half a minute.
ip -n "$ul" link add br0 address 02:fe:17:00:00:01 type bridge
ip -n "$ul" addr add "$gw/24" dev br0
ip -n "$ul" link set br0 up
mkdir -p "$consul_dir"
setsid ip netns exec "$ul" bin/consul agent -dev -bind "$gw" -client "$gw" -node felt-demo \
  -dns-port -1 -grpc-port -1 -grpc-tls-port -1 -hcl 'disable_update_check = true' \
  </dev/null >"$consul_dir/consul.log" 2>&1 &
echo $! >"$consul_dir/pid"
leader() { [[ $(consul info 2>/dev/null) == *"leader = true"* ]]; } # no grep -q: pipefail + SIGPIPE
for _ in $(seq 150); do
  leader && break
  kill -0 "$(cat "$consul_dir/pid")" 2>/dev/null || { tail -20 "$consul_dir/consul.log" >&2; exit 1; }
  sleep 0.2
done
leader || { echo "Consul has no leader after 30s" >&2; tail -20 "$consul_dir/consul.log" >&2; exit 1; }

for i in "${!hosts[@]}"; do
  h=${hosts[$i]}
  say "host $h: namespace, eth0 $(ip_of "$i")/24 on br0, a Docker engine of its own, felt"
  ip netns add "$h"
  ip -n "$h" link set lo up
  ip -n "$ul" link add "h$((i + 1))" type veth peer name eth0 netns "$h"
  ip -n "$ul" link set "h$((i + 1))" master br0 up
  ip -n "$h" addr add "$(ip_of "$i")/24" dev eth0
  ip -n "$h" link set eth0 up
  ip -n "$h" route add default via "$gw"
  echo "engine: $(scripts/engine2.sh start "$h")"
  docker save busybox:latest | dq "$i" load -q >/dev/null
  mkdir -p "/tmp/felt-engine-$h/felt-state" # the state mount's source (removed with the engine)
  d "$i" plugin create "$plugin" "$plugindir" >/dev/null
  # docker.source: the directory holding this host's Docker socket, for
  # cluster networks (/var/run on a real host, the default).
  d "$i" plugin set "$plugin" CONSUL_HTTP_ADDR="$consul_addr" state.source="/tmp/felt-engine-$h/felt-state" \
    docker.source="/tmp/felt-engine-$h" ${FELT_LOG_LEVEL:+FELT_LOG_LEVEL=$FELT_LOG_LEVEL}
  d "$i" plugin enable "$plugin" >/dev/null
done

say "one docker network create, on ${hosts[0]} only: felt creates it on ${hosts[1]} too"
d 0 network create -d "$plugin" --ipam-driver "$plugin" --subnet "$pool" "$net" >/dev/null
for _ in $(seq 120); do dq 1 network inspect "$net" >/dev/null 2>&1 && break; sleep 0.25; done
d 1 network ls --filter driver="$plugin"
ips=()
for i in "${!hosts[@]}"; do
  d "$i" run -d --name "$(ctr "$i")" --network "$net" busybox sleep 1d >/dev/null
  ips+=("$(dq "$i" inspect -f "{{(index .NetworkSettings.Networks \"$net\").IPAddress}}" "$(ctr "$i")")")
  echo "  $(ctr "$i") on ${hosts[$i]}: ${ips[$i]}"
done

for i in "${!hosts[@]}"; do
  j=$((1 - i))
  say "$(ctr "$i") on ${hosts[$i]} pings $(ctr "$j") on ${hosts[$j]} (${ips[$j]})"
  # The peer's lease reaches this host through a Consul watch: allow a moment.
  for _ in $(seq 40); do dq "$i" exec "$(ctr "$i")" ping -c 1 -W 1 "${ips[$j]}" >/dev/null 2>&1 && break; sleep 0.25; done
  d "$i" exec "$(ctr "$i")" ping -c 3 "${ips[$j]}"
done

say "what felt built"
for i in "${!hosts[@]}"; do
  h=${hosts[$i]}
  vtep=$(ip -n "$h" -o link show type vxlan | awk -F': ' 'NR == 1 { split($2, a, "@"); print a[1] }')
  echo "--- $h ($(ip_of "$i"))"
  ip -n "$h" -4 -o route show proto kernel | awk '$3 ~ /^felt-/ {print "leased subnet " $1 ", gateway " $NF " on bridge " $3}'
  echo "vxlan device $vtep:"
  echo "  $(ip -n "$h" -d link show "$vtep" | grep -o 'vxlan id.*nolearning'), $(ip -n "$h" -o link show "$vtep" | grep -o 'mtu [0-9]*')"
  echo "  FDB (peer VTEP MAC -> peer host):"; bridge -n "$h" fdb show dev "$vtep" | sed 's/^/    /'
  echo "  neighbours (peer subnet's .0 -> peer VTEP MAC):"; ip -n "$h" neigh show dev "$vtep" | sed 's/^/    /'
  echo "  routes to the other host's subnet:"; ip -n "$h" route show dev "$vtep" | sed 's/^/    /'
done

say "felt's keys in Consul (bin/consul kv get -recurse felt/)"
consul kv get -recurse felt/

# felt status of each host: the binary inside the plugin's rootfs, run in
# the host's network namespace and its engine's mount namespace (the handle
# scripts/engine2.sh keeps), against that engine's plugin socket. Docker on
# Linux keeps plugin sockets in /run/docker/plugins/<plugin ID>/ whatever
# its --exec-root (moby's getPluginExecRoot: a socket path has at most 108
# bytes), so both engines' felts are there, and --socket picks this one. On
# a host with one Docker, `felt status` alone finds it.
felt=$(realpath "$plugindir/rootfs/felt") # absolute: nsenter --mount starts in /
for i in "${!hosts[@]}"; do
  h=${hosts[$i]}
  id=$(dq "$i" plugin inspect -f '{{.Id}}' "$plugin")
  sock=/run/docker/plugins/$id/felt.sock
  status() { nsenter --mount="/run/felt-engines/$h.mnt" --net="/run/netns/$h" -- "$felt" status --socket "$sock" "$@"; }
  say "felt status on $h (felt status --socket $sock)"
  # Each peer is probed through the overlay every 5 s: wait for the first.
  for _ in $(seq 40); do
    [[ $(status --json 2>/dev/null) == *'"probed": true'* ]] && break
    sleep 0.5
  done
  status
done
