#!/usr/bin/env bash
# Build a pinned CNCF distribution registry (the reference implementation of
# the OCI distribution API, what Docker Hub's `registry` image runs) from the
# Go module proxy into bin/registry. The end-to-end tests push felt's plugin
# to it and install it from there, as a user installs from a registry.
#
# Unlike Consul (tools/consul/build.sh) the module has no local replace
# directives, so `go install module/cmd/registry@version` builds it as
# published, verified against the checksum database; -X sets the version the
# project's own Makefile sets, so the binary says which release it is.
#
# Idempotent: if bin/registry already reports the pinned version, nothing
# happens. FELT_REGISTRY_BIN overrides the output path. A cold build takes ~6
# minutes on 2 cores (most of it downloading); the Go build cache makes
# rebuilds take seconds.
set -euo pipefail

readonly VERSION=v3.1.2
readonly MODULE=github.com/distribution/distribution/v3

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=${FELT_REGISTRY_BIN:-$root/bin/registry}
want="$MODULE $VERSION"

log() { printf 'registry-build: %s\n' "$*" >&2; }

# Never let the go command fetch another toolchain: a dependency asking for a
# newer Go should fail loudly here, not download one.
export GOTOOLCHAIN=local

# `registry --version` prints "<binary path> <module> <version>"; a binary
# that does not run reports "" (and the callers say so), not a silent exit.
version_of() { { "$1" --version 2>/dev/null || true; } | sed -n 1p | cut -d' ' -f2-; }

if [[ -x $out ]] && [[ "$(version_of "$out")" == "$want" ]]; then
	log "$out is already $want, nothing to do"
	exit 0
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/registry-build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

mkdir -p "$(dirname "$out")"
log "building $MODULE/cmd/registry@$VERSION with $(go version) (a few minutes the first time)"
# Run outside any module so the caller's go.mod/go.sum are never touched.
(cd "$tmp" && CGO_ENABLED=0 GOBIN="$tmp/bin" GOFLAGS=-buildvcs=false \
	go install -trimpath -ldflags "-X $MODULE/version.version=$VERSION -X $MODULE/version.mainpkg=$MODULE" \
	"$MODULE/cmd/registry@$VERSION")

got=$(version_of "$tmp/bin/registry")
if [[ $got != "$want" ]]; then
	log "built binary reports '$got', expected '$want'"
	exit 1
fi
mv -f "$tmp/bin/registry" "$out"
log "built $out ($got)"
