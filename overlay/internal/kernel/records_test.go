package kernel

import "testing"

// A record taken for a SyncPeers is gone until remembered again, so a
// SyncPeers that failed (and did not put it back) leaves none; Forget
// drops it; the zero value works.
func TestRecords(t *testing.T) {
	var rs Records[int]
	if r := rs.Take("a"); r != nil {
		t.Fatalf("zero value: Take = %v, want nil", *r)
	}
	one, two := 1, 2
	rs.Remember("a", &one)
	rs.Remember("b", &two)
	if r := rs.Take("a"); r == nil || *r != 1 {
		t.Fatalf("Take(a) = %v, want 1", r)
	}
	if r := rs.Take("a"); r != nil {
		t.Fatalf("Take(a) again = %v, want nil: a taken record is gone until remembered", *r)
	}
	rs.Forget("b")
	if r := rs.Take("b"); r != nil {
		t.Fatalf("Take(b) after Forget = %v, want nil", *r)
	}
}
