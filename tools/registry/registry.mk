# Pinned CNCF distribution registry (see tools/registry/build.sh), used by the
# end-to-end tests of `make release` and of installing and upgrading felt
# from a registry. Include from the top Makefile:
#
#	include tools/registry/registry.mk
#
# build.sh is idempotent and cheap when bin/registry is already the pinned
# version; the touch keeps make from re-running it after the script changes.

REGISTRY_MK_DIR := $(dir $(lastword $(MAKEFILE_LIST)))

# FELT_REGISTRY_BIN names the target: the binary is built where make
# expects it, whatever the environment says.
bin/registry: $(REGISTRY_MK_DIR)build.sh
	FELT_REGISTRY_BIN=$(abspath $@) $(REGISTRY_MK_DIR)build.sh
	touch $@

.PHONY: registry
registry:
	FELT_REGISTRY_BIN=$(abspath bin/registry) $(REGISTRY_MK_DIR)build.sh
