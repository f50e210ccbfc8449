package lease_test

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/felt-net/felt/lease"
)

// The bytes a felt from before backend data wrote for a vxlan lease, and
// for one without a VTEP MAC and without expiry (a reservation).
const (
	oldVXLANRecord = `{"pool":"10.42.0.0/16","subnet":"10.42.7.0/24","hostID":"3f1c","publicIP":"192.0.2.10","vtepMAC":"02:11:22:33:44:55","expiry":"2026-01-01T01:00:00Z"}`
	oldBareRecord  = `{"pool":"10.42.0.0/16","subnet":"10.42.8.0/24","hostID":"9a0b","publicIP":"192.0.2.11"}`
)

// Hosts upgrade one at a time: a record written by an old felt must read
// with its VTEP MAC as backend data, and writing it again must give the
// very same bytes, which old felts read as before.
func TestLeaseRecordIsWireCompatible(t *testing.T) {
	for _, old := range []string{oldVXLANRecord, oldBareRecord} {
		var l lease.Lease
		if err := json.Unmarshal([]byte(old), &l); err != nil {
			t.Fatalf("%s: %v", old, err)
		}
		again, err := json.Marshal(l)
		if err != nil {
			t.Fatal(err)
		}
		if string(again) != old {
			t.Errorf("round trip:\n got %s\nwant %s", again, old)
		}
	}
	var l lease.Lease
	if err := json.Unmarshal([]byte(oldVXLANRecord), &l); err != nil {
		t.Fatal(err)
	}
	want := lease.Lease{Pool: netip.MustParsePrefix("10.42.0.0/16"), Subnet: netip.MustParsePrefix("10.42.7.0/24"),
		HostID: "3f1c", PublicIP: netip.MustParseAddr("192.0.2.10"), BackendData: json.RawMessage(`{"vtepMAC":"02:11:22:33:44:55"}`),
		Expiry: time.Date(2026, 1, 1, 1, 0, 0, 0, time.UTC)}
	if l.Pool != want.Pool || l.Subnet != want.Subnet || l.HostID != want.HostID || l.PublicIP != want.PublicIP ||
		!l.Expiry.Equal(want.Expiry) || string(l.BackendData) != string(want.BackendData) {
		t.Fatalf("decoded %+v (data %s), want %+v (data %s)", l, l.BackendData, want, want.BackendData)
	}
	// A new felt writes the vxlan backend's data where the old one did.
	got, err := json.Marshal(want)
	if err != nil || string(got) != oldVXLANRecord {
		t.Fatalf("encoded %s (%v), want %s", got, err, oldVXLANRecord)
	}
	var bare lease.Lease
	if err := json.Unmarshal([]byte(oldBareRecord), &bare); err != nil || bare.BackendData != nil {
		t.Fatalf("record without backend data: data %s, err %v; want none", bare.BackendData, err)
	}
}

// Keys lease does not know are a backend's, whichever backend (one a newer
// felt added, say): kept, and written back.
func TestLeaseRecordKeepsUnknownKeys(t *testing.T) {
	rec := `{"pool":"10.42.0.0/16","subnet":"10.42.7.0/24","hostID":"h","publicIP":"192.0.2.10","vtepMAC":"02:11:22:33:44:55","wgKey":{"pub":"abc=","port":51820}}`
	var l lease.Lease
	if err := json.Unmarshal([]byte(rec), &l); err != nil {
		t.Fatal(err)
	}
	if want := `{"vtepMAC":"02:11:22:33:44:55","wgKey":{"pub":"abc=","port":51820}}`; !sameJSON(t, l.BackendData, want) {
		t.Fatalf("backend data %s, want %s", l.BackendData, want)
	}
	again, err := json.Marshal(l)
	if err != nil || !sameJSON(t, again, rec) {
		t.Fatalf("written back as %s (%v), want %s", again, err, rec)
	}
}

// A backend key that is also one of lease's own: lease's wins. Writing
// such data is refused (the owner is misconfigured); reading keeps the key
// as lease's.
func TestLeaseRecordBackendKeyCollision(t *testing.T) {
	l := lease.Lease{Pool: netip.MustParsePrefix("10.42.0.0/16"), Subnet: netip.MustParsePrefix("10.42.7.0/24"),
		HostID: "h", PublicIP: netip.MustParseAddr("192.0.2.10"), BackendData: json.RawMessage(`{"subnet":"10.99.0.0/24"}`)}
	if _, err := json.Marshal(l); err == nil || !strings.Contains(err.Error(), `"subnet" is one of the lease record's own keys`) {
		t.Fatalf("colliding key: error %v", err)
	}
	if !lease.IsLeaseKey("hostID") || lease.IsLeaseKey("vtepMAC") {
		t.Fatal("IsLeaseKey: hostID is lease's, vtepMAC is not")
	}
	for _, bad := range []string{`[1,2]`, `"mac"`, `{`} {
		l.BackendData = json.RawMessage(bad)
		if _, err := json.Marshal(l); err == nil || !strings.Contains(err.Error(), "not a JSON object") {
			t.Errorf("backend data %s: error %v, want not a JSON object", bad, err)
		}
	}
	for _, empty := range []string{``, `null`, `{}`} {
		l.BackendData = json.RawMessage(empty)
		got, err := json.Marshal(l)
		if err != nil || strings.Contains(string(got), "10.99") || !strings.HasSuffix(string(got), `"publicIP":"192.0.2.10"}`) {
			t.Errorf("empty backend data %q: %s %v", empty, got, err)
		}
	}
}

// encoding/json matches keys case-insensitively, so a backend key that
// differs from one of lease's own only in case ("hostid") would be read as
// that field. Writing such data is refused like an exact collision; reading
// a record that holds one (hand-written, or from a broken peer) takes
// lease's fields from their exact keys and drops the variant.
func TestLeaseRecordBackendKeyCaseVariant(t *testing.T) {
	l := lease.Lease{Pool: netip.MustParsePrefix("10.42.0.0/16"), Subnet: netip.MustParsePrefix("10.42.7.0/24"),
		HostID: "h", PublicIP: netip.MustParseAddr("192.0.2.10"), BackendData: json.RawMessage(`{"hostid":"other"}`)}
	if _, err := json.Marshal(l); err == nil || !strings.Contains(err.Error(), `"hostid" is one of the lease record's own keys`) {
		t.Fatalf("case variant of a lease key: error %v", err)
	}
	if !lease.IsLeaseKey("HostId") || !lease.IsLeaseKey("EXPIRY") {
		t.Fatal("IsLeaseKey: case variants of lease's keys are lease's")
	}
	record := `{"pool":"10.42.0.0/16","subnet":"10.42.7.0/24","hostID":"3f1c","publicIP":"192.0.2.10","hostid":"other","PublicIP":"198.51.100.1","Subnet":"10.42.9.0/24","vtepMAC":"02:11:22:33:44:55","expiry":"2026-01-01T01:00:00Z","Expiry":"2030-01-01T00:00:00Z"}`
	var got lease.Lease
	if err := json.Unmarshal([]byte(record), &got); err != nil {
		t.Fatal(err)
	}
	want := lease.Lease{Pool: netip.MustParsePrefix("10.42.0.0/16"), Subnet: netip.MustParsePrefix("10.42.7.0/24"),
		HostID: "3f1c", PublicIP: netip.MustParseAddr("192.0.2.10"), Expiry: time.Date(2026, 1, 1, 1, 0, 0, 0, time.UTC)}
	if got.Pool != want.Pool || got.Subnet != want.Subnet || got.HostID != want.HostID || got.PublicIP != want.PublicIP || !got.Expiry.Equal(want.Expiry) {
		t.Errorf("read %+v, want %+v", got, want)
	}
	if string(got.BackendData) != `{"vtepMAC":"02:11:22:33:44:55"}` {
		t.Errorf("backend data %s, want only vtepMAC", got.BackendData)
	}
}

func sameJSON(t *testing.T, a []byte, b string) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("%s: %v", a, err)
	}
	if err := json.Unmarshal([]byte(b), &y); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return string(xa) == string(ya)
}
