#!/usr/bin/env bash
# Builds the image tests and the demo run, FROM scratch with Debian's
# busybox-static (nothing can be pulled here). usage: busybox-image.sh [TAG]
set -euo pipefail
tag=${1:-busybox:latest}
version=2 # bump when the image's content changes
if [ "$(docker image inspect -f '{{index .Config.Labels "felt.busybox"}}' "$tag" 2>/dev/null)" = "$version" ]; then exit 0; fi
bb=/bin/busybox # Debian's busybox-static: one static binary, no libraries
[ -x "$bb" ] || { echo "busybox-static is not installed (apt-get install busybox-static)" >&2; exit 1; }
ctx=$(mktemp -d); trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/bin" "$ctx/tmp" "$ctx/etc" "$ctx/root" "$ctx/var/www"
chmod 1777 "$ctx/tmp"
echo 'root:x:0:0:root:/root:/bin/sh' > "$ctx/etc/passwd"
cp -L "$bb" "$ctx/bin/busybox"
for a in $("$ctx/bin/busybox" --list); do [ "$a" = busybox ] || ln -s busybox "$ctx/bin/$a"; done
cat > "$ctx/Dockerfile" <<'DF'
FROM scratch
COPY . /
ENV PATH=/bin
LABEL felt.busybox=VERSION
CMD ["sh"]
DF
sed -i "s/VERSION/$version/" "$ctx/Dockerfile"
printf 'Dockerfile\n' > "$ctx/.dockerignore"
docker build -q -t "$tag" "$ctx" >/dev/null
echo "built image $tag" >&2
