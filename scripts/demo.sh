#!/usr/bin/env bash
# make demo: felt as a managed Docker plugin on this host, two containers
# talking on a felt network; then (with bin/consul, scripts/demo-multihost.sh)
# two hosts, as network namespaces each running a Docker engine of its own,
# whose containers talk across a vxlan overlay through Consul.
# Everything it makes is removed at the end unless KEEP=1.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "building the plugin (no image pulled: static felt + the host's iptables)"
make -s plugin >/dev/null
scripts/busybox-image.sh busybox:latest

net=felt-demo
cleanup() {
  [ "${KEEP:-0}" = 1 ] && { echo "KEEP=1: left $net, demo-a and demo-b running"; return; }
  docker rm -f demo-a demo-b >/dev/null 2>&1 || true
  docker network rm $net >/dev/null 2>&1 || true
}
trap cleanup EXIT
cleanup

say "docker network create -d felt:latest --ipam-driver felt:latest --subnet 10.42.0.0/16 $net"
docker network create -d felt:latest --ipam-driver felt:latest --subnet 10.42.0.0/16 $net
docker run -d --name demo-a --network $net busybox sleep 1d >/dev/null
docker run -d --name demo-b --network $net busybox sleep 1d >/dev/null
ipa=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$net\").IPAddress}}" demo-a)
ipb=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$net\").IPAddress}}" demo-b)
# docker network inspect shows the pool; the host's lease shows in a
# container's prefix length and on the bridge.
plen=$(docker inspect -f "{{(index .NetworkSettings.Networks \"$net\").IPPrefixLen}}" demo-a)
nid=$(docker network inspect -f '{{.Id}}' $net)

say "demo-a ($ipa) pings demo-b ($ipb)"
docker exec demo-a ping -c 3 "$ipb"

say "what felt built on this host"
echo "pool 10.42.0.0/16; this host leased a /$plen of it, gateway on the bridge:"
echo "bridge felt-${nid:0:10}:"; ip -br addr show "felt-${nid:0:10}"
echo "veths on it:"; ip -br link show master "felt-${nid:0:10}"
echo "iptables chain FELT:"; iptables -S FELT
echo "routes inside demo-a:"; docker exec demo-a ip route

if [ -x bin/consul ] && [ -f scripts/demo-multihost.sh ]; then
  say "multi-host: two hosts (network namespaces, each with a Docker engine of its own), Consul, vxlan"
  scripts/demo-multihost.sh
fi
say "done"
