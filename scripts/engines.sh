#!/usr/bin/env bash
# Docker engines of other versions than this machine's, for the e2e version
# matrix (e2e/matrix_test.go): each a directory of binaries that
# `ENGINE2_BIN=<dir> scripts/engine2.sh start NS` runs in a network namespace.
# Nothing is installed: the system's engine is never touched.
#
#   engines.sh build [26|29]...  fetch/build the engines missing from the cache (all without arguments)
#   engines.sh dir 26|29         print an engine's bin directory; exit 1 if it is not in the cache
#   engines.sh versions 26|29    print what the cache's docker-N/versions must say (its pins)
#
#   26: Debian trixie's docker.io 26.1 (dockerd, docker-proxy), containerd 1.7
#       and its shims, docker CLI and tini (docker-init), downloaded with apt
#       from Debian's trixie suite through a private apt configuration and
#       unpacked with dpkg-deb -x. trixie's runc needs glibc 2.38, which this
#       bookworm machine lacks, so runc is built from the Go module at trixie's
#       upstream version (v1.1.15) instead.
#   29: built from Go module sources at the versions Docker 29.8.0 ships:
#       github.com/moby/moby/v2 v2.0.0-beta.24 (releases/versions.yaml of
#       that tag: last 29.8.0; the newest v2 tag on the module proxy when this
#       was written: `go list -m -versions github.com/moby/moby/v2`) for
#       dockerd and docker-proxy, containerd v2.3.5 and runc v1.5.1 (moby's
#       Dockerfile's CONTAINERD_VERSION and RUNC_VERSION). None of the three
#       modules has replace directives, so `go install module/cmd@version`
#       builds each with exactly its own go.sum.
#
# The cache (FELT_ENGINES_CACHE, default /var/cache/felt/engines) is outside
# the clone, so later runs and other clones reuse it: <cache>/docker-<N>/bin,
# with a file `versions` naming what is in it. An engine whose `versions`
# differs from what this script pins is rebuilt. Each is built in a temporary
# directory next to it and renamed into place, so a directory there is always
# complete; a lock serialises concurrent runs. A cold build of 29 takes about
# 5 minutes on 2 idle cores (the Go build cache makes a rebuild take seconds);
# 26 is a 70 MB download and a 1-minute runc build.
set -euo pipefail

cache=${FELT_ENGINES_CACHE:-/var/cache/felt/engines}
# Absolute: `dir` prints paths used from elsewhere, and go install's GOBIN,
# set from it after a cd, must be absolute.
[[ $cache == /* ]] || cache=$PWD/$cache

readonly TRIXIE_PKGS="docker.io docker-cli containerd tini"
readonly RUNC26=v1.1.15
readonly MOBY29=v2.0.0-beta.24 DOCKER29=29.8.0 CONTAINERD29=v2.3.5 RUNC29=v1.5.1

log() { printf 'engines: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# Never let the go command fetch another toolchain: fail loudly instead.
export GOTOOLCHAIN=local
export PATH=$PATH:/usr/local/go/bin

# want N: the contents of docker-N/versions this script builds.
want() {
  case $1 in
  26) printf 'debian-trixie: %s\nrunc: %s\n' "$TRIXIE_PKGS" "$RUNC26" ;;
  29) printf 'docker: %s\nmoby: %s\ncontainerd: %s\nrunc: %s\n' "$DOCKER29" "$MOBY29" "$CONTAINERD29" "$RUNC29" ;;
  *) die "unknown engine '$1' (26 or 29)" ;;
  esac
}

# fresh N: the cache holds engine N as this script would build it now.
fresh() {
  [ -x "$cache/docker-$1/bin/dockerd" ] && [ -f "$cache/docker-$1/versions" ] &&
    [ "$(sed -n '/^#/!p' "$cache/docker-$1/versions")" = "$(want "$1")" ]
}

# goinstall OUT MODULE/CMD@VERSION [GO-BUILD-FLAG...]: go install into OUT,
# outside any module, so no go.mod of ours is read or written.
goinstall() {
  local out=$1 pkg=$2
  shift 2
  log "building $pkg"
  (cd "$tmp" && GOBIN=$out GOFLAGS=-buildvcs=false go install -trimpath "$@" "$pkg")
}

build_runc() { # OUT VERSION: runc with seccomp (cgo, libseccomp-dev)
  command -v pkg-config >/dev/null && pkg-config --exists libseccomp ||
    die "runc needs libseccomp-dev and pkg-config (scripts/deps.sh installs them)"
  CGO_ENABLED=1 goinstall "$1" "github.com/opencontainers/runc@$2" -tags "seccomp urfave_cli_no_docs" \
    -ldflags "-X main.gitCommit=$2 -X main.version=${2#v}"
}

build29() {
  local out=$1 moby=github.com/moby/moby/v2 ldf
  ldf="-X $moby/dockerversion.Version=$DOCKER29 -X $moby/dockerversion.GitCommit=$MOBY29"
  # The tags moby's hack/make.sh gives a static build (journald needs libsystemd-dev: left out).
  CGO_ENABLED=0 goinstall "$out" "$moby/cmd/dockerd@$MOBY29" -tags "netgo osusergo static_build nri_no_wasm" -ldflags "$ldf"
  CGO_ENABLED=0 goinstall "$out" "$moby/cmd/docker-proxy@$MOBY29" -ldflags "$ldf"
  local cd=github.com/containerd/containerd/v2
  ldf="-X $cd/version.Version=$CONTAINERD29 -X $cd/version.Revision=$CONTAINERD29"
  CGO_ENABLED=0 goinstall "$out" "$cd/cmd/containerd@$CONTAINERD29" -tags "no_btrfs" -ldflags "$ldf"
  CGO_ENABLED=0 goinstall "$out" "$cd/cmd/containerd-shim-runc-v2@$CONTAINERD29" -ldflags "$ldf"
  build_runc "$out" "$RUNC29"
}

# trixie_apt ARGS...: apt-get with a private configuration whose only source
# is Debian trixie: the machine's sources, state and dpkg status are not
# read, and nothing is installed.
trixie_apt() {
  local a=$tmp/apt
  if [ ! -d "$a" ]; then
    mkdir -p "$a/etc/apt.conf.d" "$a/etc/preferences.d" "$a/etc/sources.list.d" "$a/state/lists/partial" "$a/cache/archives/partial"
    : >"$a/state/status"
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" >"$a/etc/sources.list"
  fi
  # The machine's apt proxies (Acquire::http(s)::Proxy and per-host ones),
  # which its own configuration files hold and the private one never reads:
  # without them a machine that reaches Debian only through a proxy fails
  # here (http_proxy in the environment works either way).
  local proxy=() f v
  while read -r f v; do
    [ -n "$v" ] && proxy+=(-o "$f=$v")
  done < <(apt-config dump --format '%f %v%n' Acquire::http::Proxy Acquire::https::Proxy 2>/dev/null | grep -E '^Acquire::https?::Proxy(::[^ ]+)? ' || true)
  apt-get -q -o Dir::Etc="$a/etc" -o Dir::Etc::main=/dev/null -o Dir::Etc::parts="$a/etc/apt.conf.d" \
    -o Dir::State="$a/state" -o Dir::State::status="$a/state/status" -o Dir::Cache="$a/cache" \
    -o APT::Architecture=amd64 -o Debug::NoLocking=1 -o APT::Sandbox::User=root \
    -o Acquire::Languages=none "${proxy[@]}" "$@"
}

build26() {
  local out=$1 d x f
  log "downloading $TRIXIE_PKGS from Debian trixie"
  trixie_apt update >/dev/null
  d=$tmp/debs x=$tmp/root
  mkdir -p "$d" "$x"
  # shellcheck disable=SC2086
  (cd "$d" && trixie_apt download $TRIXIE_PKGS >/dev/null)
  for f in "$d"/*.deb; do dpkg-deb -x "$f" "$x"; done
  for f in dockerd docker-proxy; do install -m755 "$x/usr/sbin/$f" "$out/$f"; done
  for f in containerd containerd-shim-runc-v2 docker; do install -m755 "$x/usr/bin/$f" "$out/$f"; done
  # Debian's docker-init is tini; the static one needs no newer glibc.
  install -m755 "$x/usr/bin/tini-static" "$out/docker-init"
  (cd "$d" && ls *.deb) | sed 's/^/# /' >"$out/../debs"
  build_runc "$out" "$RUNC26"
}

build() { # N
  local n=$1 dst=$cache/docker-$1
  want "$n" >/dev/null
  if fresh "$n"; then
    log "$dst is up to date"
    return 0
  fi
  tmp=$(mktemp -d "$cache/.build-$n.XXXXXX")
  # Module cache copies are read-only: make them removable first.
  trap 'chmod -R u+w "$tmp" 2>/dev/null || true; rm -rf "$tmp"' EXIT
  local start=$SECONDS
  mkdir -p "$tmp/engine/bin"
  "build$n" "$tmp/engine/bin"
  # Each binary runs here (a missing library or a too-new glibc shows now, not in a test).
  local b
  for b in dockerd containerd containerd-shim-runc-v2 runc docker-proxy; do
    [ -x "$tmp/engine/bin/$b" ] || die "docker-$n: no $b built"
  done
  "$tmp/engine/bin/dockerd" --version >&2 || die "docker-$n: dockerd does not run"
  "$tmp/engine/bin/containerd" --version >&2 || die "docker-$n: containerd does not run"
  "$tmp/engine/bin/runc" --version >&2 || die "docker-$n: runc does not run"
  { want "$n"; [ -f "$tmp/engine/debs" ] && cat "$tmp/engine/debs"; rm -f "$tmp/engine/debs"; } >"$tmp/engine/versions"
  # Swap in by renames: the old copy away, then the new one in. A reader (`dir`,
  # which takes no lock) sees the old copy, none, or the new one, never half of one.
  [ -e "$dst" ] && mv -T "$dst" "$tmp/old"
  mv -T "$tmp/engine" "$dst"
  chmod -R u+w "$tmp" 2>/dev/null || true
  rm -rf "$tmp"
  trap - EXIT
  log "built $dst in $((SECONDS - start)) s"
}

[ $# -ge 1 ] || { sed -n '2,9s/^# \{0,1\}//p' "$0" >&2; exit 2; }
cmd=$1
shift
case $cmd in
build)
  [ $# -gt 0 ] || set -- 26 29
  mkdir -p "$cache"
  exec 9>"$cache/.lock"
  flock 9
  # Leftovers of a build killed before its EXIT trap could run (SIGKILL, a
  # lost machine), hundreds of MB each: with the lock held none is running.
  for d in "$cache"/.build-*; do
    [ -e "$d" ] || continue
    log "removing $d, left by an interrupted build"
    chmod -R u+w "$d" 2>/dev/null || true
    rm -rf "$d"
  done
  for n in "$@"; do build "$n"; done
  ;;
dir)
  [ $# -eq 1 ] || die "usage: $0 dir 26|29"
  want "$1" >/dev/null
  fresh "$1" || { log "docker-$1 is not in $cache (scripts/engines.sh build $1)"; exit 1; }
  echo "$cache/docker-$1/bin"
  ;;
versions)
  [ $# -eq 1 ] || die "usage: $0 versions 26|29"
  want "$1"
  ;;
*) die "usage: $0 build [26|29]... | dir 26|29 | versions 26|29" ;;
esac
