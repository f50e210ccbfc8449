#!/usr/bin/env bash
# Installs what building, testing and the demo need on a fresh Debian
# machine: only what is missing, so a second run costs nothing.
set -euo pipefail
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v xtables-nft-multi >/dev/null || need+=(iptables)
[ -x /bin/busybox ] || need+=(busybox-static)
command -v iperf3 >/dev/null || need+=(iperf3)
# scripts/engines.sh: runc with seccomp (cgo), trixie's packages unpacked.
command -v gcc >/dev/null || need+=(gcc libc6-dev)
pkg-config --exists libseccomp 2>/dev/null || need+=(libseccomp-dev pkg-config)
command -v docker-compose >/dev/null || need+=(docker-compose) # e2e/matrix_test.go
# scripts/engines.sh checks trixie's packages against Debian's archive key.
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || need+=(debian-archive-keyring)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
