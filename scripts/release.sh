#!/usr/bin/env bash
# Publishes felt as a managed plugin: builds the plugin directory
# (scripts/plugin-rootfs.sh, no image pulled), creates it in the Docker
# engine the CLI talks to (DOCKER_HOST) as REGISTRY/felt:VERSION, pushes it
# with `docker plugin push`, and removes that local copy again: it was only
# the vehicle of the push. Users then install it with
#   docker plugin install --grant-all-permissions REGISTRY/felt:VERSION CONSUL_HTTP_ADDR=...
#
# usage: scripts/release.sh REGISTRY      (make release REGISTRY=host:port [VERSION=x.y.z])
# REGISTRY is host[:port][/path]; VERSION comes from FELT_VERSION, else git
# describe (scripts/version.sh). A registry over plain HTTP must be listed in
# the engine's insecure-registries (127.0.0.0/8 is by default). Log in first
# (docker login) where the registry wants it. Prints the pushed reference.
set -euo pipefail
registry=${1:-}
if [ -z "$registry" ]; then
  echo "usage: make release REGISTRY=host:port [VERSION=x.y.z]" >&2
  exit 2
fi
registry=${registry%/}
# Docker's reference grammar, checked now rather than by `docker plugin
# create` after the build: a host (a dot, a port or "localhost" makes the
# first part one; else it is a Docker Hub account) and lower-case path parts.
label='[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?'
part='[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*'
first=${registry%%/*}
if [[ $first == *[.:]* || $first == localhost ]]; then
  re="^$label(\.$label)*(:[0-9]+)?(/$part)*\$"
else
  re="^$part(/$part)*\$"
fi
if ! [[ $registry =~ $re ]]; then
  echo "release: REGISTRY='$registry' is not host[:port][/path] (path parts in lower case: letters, digits, '.', '_', '-' inside)" >&2
  exit 2
fi
top=$(cd "$(dirname "$0")/.." && pwd)
version=$("$top/scripts/version.sh")
ref=$registry/felt:$version
case $version in
  *-dirty) echo "release: warning: $version is built from uncommitted changes" >&2 ;;
  dev) echo "release: warning: no git version found; publishing as 'dev' (give VERSION=x.y.z)" >&2 ;;
esac

if docker plugin inspect "$ref" >/dev/null 2>&1; then
  echo "release: $ref is already installed in this engine; remove it first (docker plugin disable -f $ref; docker plugin rm $ref)" >&2
  exit 1
fi
dir=$(mktemp -d "${TMPDIR:-/tmp}/felt-release.XXXXXX")
created=""
cleanup() {
  [ -n "$created" ] && docker plugin rm -f "$ref" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

FELT_VERSION=$version "$top/scripts/plugin-rootfs.sh" "$dir/plugin"
docker plugin create "$ref" "$dir/plugin" >/dev/null
created=1
echo "release: pushing $ref" >&2
docker plugin push "$ref" >&2
echo "$ref"
