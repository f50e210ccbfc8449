#!/usr/bin/env bash
# Assembles the managed plugin's directory (config.json + rootfs/) without
# pulling any image: the static felt binary plus the host's iptables binaries,
# their extensions and the shared libraries they load. (Dockerfile does the
# same from debian:bookworm-slim for machines that can pull images.)
# usage: scripts/plugin-rootfs.sh OUTDIR
set -euo pipefail
out=${1:?usage: $0 OUTDIR}
top=$(cd "$(dirname "$0")/.." && pwd)
rm -rf "$out"
root=$out/rootfs
mkdir -p "$root"/{run/docker/plugins,var/lib/felt,tmp,etc,dev,proc,sys,usr/sbin}

# The version felt reports (FELT_VERSION, else git describe; scripts/version.sh).
version=$("$top/scripts/version.sh")
CGO_ENABLED=0 go build -C "$top" -trimpath -ldflags "-X main.version=$version" -o "$root/felt" ./cmd/felt

# iptables, both flavours: felt picks the one Docker uses at start-up.
for b in xtables-nft-multi xtables-legacy-multi; do
  p=$(command -v "$b") || { echo "missing $b: apt-get install iptables" >&2; exit 1; }
  cp -L "$p" "$root/usr/sbin/$b"
done
for n in iptables ip6tables; do
  for s in "" -save -restore; do
    ln -sf xtables-nft-multi "$root/usr/sbin/$n-nft$s"
    ln -sf xtables-legacy-multi "$root/usr/sbin/$n-legacy$s"
    ln -sf xtables-nft-multi "$root/usr/sbin/$n$s"
  done
done
# Shared libraries and xtables extensions, copied to their canonical paths;
# on merged-/usr hosts /lib and /lib64 are symlinks into /usr, so recreate
# those links and the ELF interpreter and library paths resolve the same.
for d in lib lib64 bin sbin; do
  [ -L "/$d" ] && ln -sfn "$(readlink "/$d")" "$root/$d"
done
xt=$(dpkg -L libxtables12 2>/dev/null | grep -m1 '/xtables$' || echo /usr/lib/x86_64-linux-gnu/xtables)
xt=$(realpath "$xt")
mkdir -p "$root$xt"
cp -a "$xt"/. "$root$xt"/
libs=()
for f in "$root"/usr/sbin/xtables-*-multi "$xt"/*.so; do
  while read -r lib; do libs+=("$lib"); done < <(ldd "$f" 2>/dev/null | grep -oE '/[^ ]+' || true)
done
for lib in $(printf '%s\n' "${libs[@]}" | sort -u); do
  real=$(realpath "$lib")
  mkdir -p "$root$(dirname "$real")"
  cp -L "$lib" "$root$real"
  # keep the name the binaries ask for, when it differs from the target's
  base=$(realpath "$(dirname "$lib")")/$(basename "$lib")
  if [ "$base" != "$real" ]; then mkdir -p "$root$(dirname "$base")"; ln -sf "$real" "$root$base"; fi
done
# iptables reads these for protocol and service names.
for f in /etc/protocols /etc/services /etc/ethertypes; do [ -f "$f" ] && cp "$f" "$root/etc/" || true; done
cp "$top/config.json" "$out/config.json"
echo "plugin directory ready: $out (felt $version)" >&2
