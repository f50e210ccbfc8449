# Pinned Consul agent (see tools/consul/build.sh), used by the Consul-backed
# tests and for local multi-host runs. Include from the top Makefile:
#
#	include tools/consul/consul.mk
#
# build.sh is idempotent and cheap when bin/consul is already the pinned
# version; the touch keeps make from re-running it after the script changes.

CONSUL_MK_DIR := $(dir $(lastword $(MAKEFILE_LIST)))

bin/consul: $(CONSUL_MK_DIR)build.sh
	$(CONSUL_MK_DIR)build.sh
	touch $@

.PHONY: consul
consul:
	$(CONSUL_MK_DIR)build.sh
