# Builds the managed plugin's rootfs on a machine that can pull images:
#   docker build -t felt-rootfs . && id=$(docker create felt-rootfs)
#   mkdir -p plugin/rootfs && docker export "$id" | tar -x -C plugin/rootfs
#   cp config.json plugin/ && docker plugin create felt:latest plugin
# (`make plugin-docker` does exactly this; `make plugin` assembles the same
# rootfs from the host's own binaries without pulling anything.)
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The version felt reports (`felt --version`, its log's first line):
# docker build --build-arg VERSION=$(scripts/version.sh) (make plugin-docker does).
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-X main.version=${VERSION}" -o /felt ./cmd/felt

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends iptables \
    && rm -rf /var/lib/apt/lists/* && mkdir -p /run/docker/plugins /var/lib/felt
COPY --from=build /felt /felt
ENTRYPOINT ["/felt"]
