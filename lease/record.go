package lease

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// A lease's record in the store is one flat JSON object:
//
//	{"pool":…,"subnet":…,"hostID":…,"publicIP":…,"vtepMAC":…,"expiry":…}
//
// "vtepMAC" is the vxlan backend's, written by felt before lease knew
// nothing of backends. Hosts upgrade one at a time, so old and new felts
// read each other's records: the backend data stays flat, its keys written
// between publicIP and expiry (the old byte order), and every key lease
// does not know is read back into BackendData.
//
// The rule for a backend key that is also one of lease's own (leaseKeys),
// in any case (encoding/json matches keys case-insensitively, so "hostid"
// would be read as hostID): lease's wins. Encoding refuses such data (the
// Owner is wrong, so Acquire fails and says so); decoding reads lease's
// fields from their exact keys only and drops the others.

// leaseKeys are the record's own keys, never backend data.
var leaseKeys = []string{"pool", "subnet", "hostID", "publicIP", "expiry"}

// IsLeaseKey reports whether key is one of the lease record's own keys, in
// any case, which backend data must not use.
func IsLeaseKey(key string) bool {
	return slices.ContainsFunc(leaseKeys, func(k string) bool { return strings.EqualFold(k, key) })
}

// leaseHead is the part of the record written before the backend data.
type leaseHead struct {
	Pool     netip.Prefix `json:"pool"`
	Subnet   netip.Prefix `json:"subnet"`
	HostID   string       `json:"hostID"`
	PublicIP netip.Addr   `json:"publicIP"`
}

// leaseTail is the part written after it.
type leaseTail struct {
	Expiry time.Time `json:"expiry,omitzero"`
}

// MarshalJSON writes the flat record: lease's keys with the backend data's
// keys (sorted) between publicIP and expiry.
func (l Lease) MarshalJSON() ([]byte, error) {
	data, err := backendFields(l.BackendData)
	if err != nil {
		return nil, err
	}
	head, err := json.Marshal(leaseHead{Pool: l.Pool, Subnet: l.Subnet, HostID: l.HostID, PublicIP: l.PublicIP})
	if err != nil {
		return nil, err
	}
	tail, err := json.Marshal(leaseTail{Expiry: l.Expiry})
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.Write(head[:len(head)-1]) // without its closing brace
	for _, k := range slices.Sorted(maps.Keys(data)) {
		key, _ := json.Marshal(k)
		b.WriteByte(',')
		b.Write(key)
		b.WriteByte(':')
		if err := json.Compact(&b, data[k]); err != nil {
			return nil, fmt.Errorf("backend data key %q: %w", k, err)
		}
	}
	if len(tail) > 2 { // not {}
		b.WriteByte(',')
		b.Write(tail[1:])
	} else {
		b.WriteByte('}')
	}
	return b.Bytes(), nil
}

// UnmarshalJSON reads the flat record; the keys lease does not know become
// BackendData (nil when there are none).
func (l *Lease) UnmarshalJSON(b []byte) error {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(b, &fields); err != nil {
		return err
	}
	// Lease's fields from their exact keys alone: decoding the whole
	// record would let a case variant ("hostid") override them.
	own := map[string]json.RawMessage{}
	for k, v := range fields {
		if IsLeaseKey(k) {
			if slices.Contains(leaseKeys, k) {
				own[k] = v
			}
			delete(fields, k)
		}
	}
	ownJSON, err := json.Marshal(own)
	if err != nil {
		return err
	}
	var head leaseHead
	var tail leaseTail
	if err := json.Unmarshal(ownJSON, &head); err != nil {
		return err
	}
	if err := json.Unmarshal(ownJSON, &tail); err != nil {
		return err
	}
	var data json.RawMessage
	if len(fields) > 0 {
		if data, err = json.Marshal(fields); err != nil {
			return err
		}
	}
	*l = Lease{Pool: head.Pool, Subnet: head.Subnet, HostID: head.HostID, PublicIP: head.PublicIP,
		BackendData: data, Expiry: tail.Expiry, index: l.index}
	return nil
}

// backendFields splits backend data into its keys, refusing what cannot be
// flattened into a record: anything but a JSON object, and lease's own keys.
func backendFields(data json.RawMessage) (map[string]json.RawMessage, error) {
	if emptyData(data) {
		return nil, nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil || fields == nil {
		return nil, fmt.Errorf("backend data %.80s is not a JSON object", data)
	}
	for k := range fields {
		if IsLeaseKey(k) {
			return nil, fmt.Errorf("backend data key %q is one of the lease record's own keys", k)
		}
	}
	return fields, nil
}

// emptyData reports backend data with nothing in it.
func emptyData(data json.RawMessage) bool {
	t := bytes.TrimSpace(data)
	return len(t) == 0 || string(t) == "null" || string(t) == "{}"
}
