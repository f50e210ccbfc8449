package lease

import "net/netip"

// Update is what a lease watch (Watch, watcher.go) answers: the current
// leases of the pools it follows and which of them changed.
//
// CONTRACT (stop 20): the type is fixed here so the overlay manager and the
// watch can be written side by side; Watch itself (NewWatch, SetPools,
// Next, Close) lands with its implementation.
type Update struct {
	// Leases are the current leases (expired ones included) of every
	// followed pool that has answered at least once.
	Leases []Lease
	// Changed are the followed pools whose leases (any record: added,
	// removed, rewritten) changed since the previous Update, and pools
	// whose first answer this is.
	Changed []netip.Prefix
	// Complete: every followed pool has answered at least once, so a
	// lease missing from Leases is really gone.
	Complete bool
}
