package lease_test

import (
	"testing"
)

// host A releases the pool's last lease; deleteNetwork
// has deleted the record and is about to delete the VNI claim it read
// (DeleteCAS at the claim's index) when host B's Acquire finds the record
// gone and makes it again. B's claimVNI finds the claim its own and
// "rewrites" it with the same bytes, which on Consul is a no-op (the
// ModifyIndex stays), so A's DeleteCAS of the claim succeeds: B's pool
// holds a lease and a record with VNI n but no claim, and the next network
// gets VNI n too (two overlays on one VNI).
func TestRemadeRecordKeepsItsVNIClaim(t *testing.T) {
	for name, store := range fenceStores {
		t.Run(name, func(t *testing.T) {
			reg, rec := releaseRacingAcquire(t, store(t), "felt/vnis/", acquireB)
			checkRecordKept(t, reg, rec.VNI)
		})
	}
}
