package storeformat

// The migration registry: felt's formats and the steps between their
// versions. To change a layout, raise Version and append the step that
// rewrites the previous version's records (see Step for its duties); never
// edit or remove a released step, a store may still be that old.

// Local is the format of this host's own records, under "local/" in the
// embedded store (package state).
func Local() Format { return Format{Version: 1} }

// Shared is the format of the records hosts share under FELT_KV_PREFIX:
// networks, VNIs, leases (package lease).
func Shared() Format { return Format{Version: 1} }
