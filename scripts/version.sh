#!/usr/bin/env bash
# Prints felt's version: $FELT_VERSION if set (make release VERSION=x.y.z sets it), else
# `git describe --tags --match 'v[0-9]*' --always --dirty` of the checkout (a release tag
# v1.2.0 gives 1.2.0, a commit after it 1.2.0-3-g1a2b3c4, a changed tree
# ...-dirty), else "dev". The result is a valid Docker tag: it becomes the
# plugin's tag (scripts/release.sh) and what `felt --version` prints.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
v=${FELT_VERSION:-}
if [ -z "$v" ]; then
  # Release tags only (v1.2.0): any other tag (a backup, a test marker)
  # would otherwise become the version of every build after it.
  v=$(git -C "$top" describe --tags --match 'v[0-9]*' --always --dirty 2>/dev/null || echo dev)
  [[ $v =~ ^v[0-9] ]] && v=${v#v}
fi
# A Docker tag: [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}.
if ! [[ $v =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]]; then
  echo "version.sh: '$v' is not a valid version: letters, digits, '_', '.', '-' (not first), at most 128" >&2
  exit 1
fi
echo "$v"
