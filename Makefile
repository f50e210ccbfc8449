# felt — see README.md. Every target installs what it needs (scripts/deps.sh).
GO        ?= go
PLUGIN    ?= felt:latest
PLUGINDIR ?= $(CURDIR)/bin/plugin
# -p 1: the suites share one kernel, one Docker engine and two cores; run
# them one after another so load from one does not starve another.
GOTEST    ?= $(GO) test -race -count=1 -p 1 -timeout 60m
# felt's version (felt --version, the plugin's tag): VERSION=x.y.z, else
# git describe (scripts/version.sh).
VERSION   ?= $(shell scripts/version.sh)

.PHONY: all build deps engines plugin plugin-docker plugin-rm release image demo test test-unit test-integration test-e2e bench clean

all: build

-include tools/consul/consul.mk
-include tools/registry/registry.mk

build: bin/felt

bin/felt: $(shell find . -name '*.go' -not -path './bin/*') go.mod go.sum
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o bin/felt ./cmd/felt

deps:
	@scripts/deps.sh

# Docker 26 and 29 for the e2e version matrix, fetched and built into a cache
# outside the clone (scripts/engines.sh); cheap when they are there.
engines: deps
	scripts/engines.sh build

# The managed plugin, assembled without pulling any image, created and enabled.
plugin: deps
	mkdir -p /var/lib/felt # the state mount's source: Docker does not create it
	FELT_VERSION=$(VERSION) scripts/plugin-rootfs.sh $(PLUGINDIR)
	-docker plugin disable -f $(PLUGIN) >/dev/null 2>&1
	-docker plugin rm -f $(PLUGIN) >/dev/null 2>&1
	docker plugin create $(PLUGIN) $(PLUGINDIR)
	docker plugin enable $(PLUGIN)

# The same, with the rootfs built by the Dockerfile (needs to pull images).
plugin-docker:
	docker build --build-arg VERSION=$(VERSION) -t felt-rootfs .
	rm -rf $(PLUGINDIR) && mkdir -p $(PLUGINDIR)/rootfs
	id=$$(docker create felt-rootfs) && docker export $$id | tar -x -C $(PLUGINDIR)/rootfs && docker rm $$id >/dev/null
	cp config.json $(PLUGINDIR)/
	-docker plugin rm -f $(PLUGIN) >/dev/null 2>&1
	docker plugin create $(PLUGIN) $(PLUGINDIR) && docker plugin enable $(PLUGIN)

# The plugin, built as for make plugin, pushed to a registry as
# REGISTRY/felt:VERSION: make release REGISTRY=host:port [VERSION=x.y.z]
release: deps
	FELT_VERSION=$(VERSION) scripts/release.sh $(REGISTRY)

plugin-rm:
	-docker plugin disable -f $(PLUGIN)
	-docker plugin rm -f $(PLUGIN)

# busybox:latest FROM scratch, for the demo and the tests.
image: deps
	scripts/busybox-image.sh busybox:latest

demo: deps bin/consul
	scripts/demo.sh

# Every layer: unit, integration (netns hosts + Consul), end to end (Docker).
test: deps bin/consul bin/registry image engines
	$(GOTEST) ./...

test-unit:
	$(GOTEST) -short ./...

test-integration: deps bin/consul
	$(GOTEST) ./integration/...

test-e2e: deps bin/consul bin/registry image engines
	$(GOTEST) ./e2e/...

# One run, one table: data plane per backend against the bare underlay,
# control plane at 1,000 leases, docker run on felt vs bridge. Writes
# bench/results.json, bench/results.png and README.md's Performance table.
bench: deps bin/consul image
	$(GO) test -run '^$$' -bench . -benchtime 1x -count 1 -timeout 60m ./bench/

clean:
	rm -rf bin
