#!/usr/bin/env bash
# Builds the image tests and the demo run, FROM scratch with Debian's
# busybox-static (nothing can be pulled here). usage: busybox-image.sh [TAG]
set -euo pipefail
tag=${1:-busybox:latest}
if docker image inspect "$tag" >/dev/null 2>&1; then exit 0; fi
bb=/bin/busybox # Debian's busybox-static: one static binary, no libraries
[ -x "$bb" ] || { echo "busybox-static is not installed (apt-get install busybox-static)" >&2; exit 1; }
ctx=$(mktemp -d); trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/bin"
cp -L "$bb" "$ctx/bin/busybox"
for a in $("$ctx/bin/busybox" --list); do [ "$a" = busybox ] || ln -s busybox "$ctx/bin/$a"; done
cat > "$ctx/Dockerfile" <<'DF'
FROM scratch
COPY bin /bin
ENV PATH=/bin
CMD ["sh"]
DF
docker build -q -t "$tag" "$ctx" >/dev/null
echo "built image $tag" >&2
