package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/felt-net/felt/kv"
	"github.com/felt-net/felt/kv/boltkv"
	"github.com/felt-net/felt/kv/consulkv"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/lease/leasetest"
	"github.com/felt-net/felt/testkit/consul"
)

const (
	hostA = "aaaa1111bbbb2222cccc3333dddd4444"
	hostB = "eeee5555ffff6666aaaa7777bbbb8888"
)

// seedCluster writes what two hosts sharing one network leave in the
// store: its record, declared as cluster network "blue", and a lease each.
func seedCluster(t *testing.T, store kv.Store, prefix string) {
	t.Helper()
	ctx := context.Background()
	r := lease.NewRegistry(store, prefix, nil)
	pool := netip.MustParsePrefix("10.42.0.0/16")
	n, err := r.SettleNetwork(ctx, lease.Spec{Backends: leasetest.Backends, Pool: pool})
	if err != nil {
		t.Fatal(err)
	}
	for i, h := range []string{hostA, hostB} {
		_, err := r.Acquire(ctx, lease.AcquireRequest{Network: n, TTL: time.Hour,
			Prefer: netip.MustParsePrefix([]string{"10.42.7.0/24", "10.42.9.0/24"}[i]),
			Owner: lease.Owner{HostID: h, PublicIP: netip.MustParseAddr([]string{"192.0.2.1", "192.0.2.2"}[i]),
				BackendData: json.RawMessage(`{"vtepMAC":"02:00:00:00:00:0` + []string{"1", "2"}[i] + `"}`)}})
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.Declare(ctx, pool, lease.Declaration{UID: "0123abcd", Name: "blue", By: hostA, Internal: true}); err != nil {
		t.Fatal(err)
	}
}

// leases runs `felt leases args` with env as its environment.
func leases(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = runLeases(context.Background(), args, &out, &errOut, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	return code, out.String(), errOut.String()
}

// checkText checks the tables of the seeded cluster.
func checkText(t *testing.T, out, store string) {
	t.Helper()
	for _, re := range []string{
		`(?m)^store: ` + regexp.QuoteMeta(store) + `, prefix \S+/$`,
		`(?m)^NETWORK POOL +BACKEND +VNI +PORT +MTU +SUBNET LEN +CLUSTER NETWORK$`,
		`(?m)^10\.42\.0\.0/16 +vxlan +1 +- +auto +24 +blue \(internal, declared by aaaa1111\)$`,
		`(?m)^POOL +SUBNET +HOST +PUBLIC IP +EXPIRES$`,
		`(?m)^10\.42\.0\.0/16 +10\.42\.7\.0/24 +` + hostA + ` +192\.0\.2\.1 +\S+Z \(in (59m\d+s|1h0m0s)\)$`,
		`(?m)^10\.42\.0\.0/16 +10\.42\.9\.0/24 +` + hostB + ` +192\.0\.2\.2 +\S+Z \(in (59m\d+s|1h0m0s)\)$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("output does not match %s:\n%s", re, out)
		}
	}
}

// checkJSON parses --json and checks the seeded cluster in it.
func checkJSON(t *testing.T, out string) {
	t.Helper()
	var got leasesOutput
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("--json: %v\n%s", err, out)
	}
	if len(got.Networks) != 1 || got.Networks[0].Pool.String() != "10.42.0.0/16" || got.Networks[0].Backend != "vxlan" ||
		got.Networks[0].Cluster == nil || got.Networks[0].Cluster.Name != "blue" || !got.Networks[0].Cluster.Internal || got.Networks[0].Cluster.By != hostA {
		t.Errorf("networks: %+v\n%s", got.Networks, out)
	}
	if len(got.Leases) != 2 {
		t.Fatalf("%d leases, want 2:\n%s", len(got.Leases), out)
	}
	for i, want := range []struct{ subnet, host, ip, mac string }{
		{"10.42.7.0/24", hostA, "192.0.2.1", "02:00:00:00:00:01"},
		{"10.42.9.0/24", hostB, "192.0.2.2", "02:00:00:00:00:02"},
	} {
		l := got.Leases[i]
		if l.Subnet.String() != want.subnet || l.HostID != want.host || l.PublicIP.String() != want.ip ||
			!strings.Contains(string(l.BackendData), want.mac) || l.Expiry.Sub(got.Now) <= 59*time.Minute {
			t.Errorf("lease %d: %+v (data %s), want %+v\n%s", i, l, l.BackendData, want, out)
		}
	}
	if time.Since(got.Now) > time.Minute {
		t.Errorf("now %v", got.Now)
	}
}

// felt leases on the embedded store (no CONSUL_HTTP_ADDR): the tables and
// --json; and while a felt holds the store's lock, the same from a copy.
func TestLeasesEmbedded(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "felt.db")
	st, err := boltkv.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	seedCluster(t, st, "felt/")
	st.Close()
	env := map[string]string{"FELT_STATE_DIR": dir}

	code, out, errOut := leases(t, env)
	if code != 0 || errOut != "" {
		t.Fatalf("felt leases: %d %s", code, errOut)
	}
	checkText(t, out, "embedded store "+db)
	code, out, errOut = leases(t, env, "--json")
	if code != 0 || errOut != "" {
		t.Fatalf("felt leases --json: %d %s", code, errOut)
	}
	checkJSON(t, out)

	// A running felt holds the file's lock.
	held, err := boltkv.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	code, out, errOut = leases(t, env)
	if code != 0 || errOut != "" {
		t.Fatalf("felt leases while felt runs: %d %s", code, errOut)
	}
	checkText(t, out, "embedded store "+db+" (a copy: felt is running)")
	if tmp, _ := filepath.Glob(filepath.Join(os.TempDir(), "felt-leases-*")); len(tmp) > 0 {
		t.Errorf("copies left behind: %v", tmp)
	}

	// Usage and setting errors: status 2, naming what is wrong.
	if code, _, errOut := leases(t, env, "--bogus"); code != 2 || !strings.Contains(errOut, "usage: felt leases") {
		t.Errorf("--bogus: %d %q", code, errOut)
	}
	if code, _, errOut := leases(t, map[string]string{"FELT_KV_PREFIX": "local/x"}); code != 2 || !strings.Contains(errOut, "FELT_KV_PREFIX=local/x/") {
		t.Errorf("FELT_KV_PREFIX=local/x: %d %q", code, errOut)
	}
	if code, _, errOut := leases(t, map[string]string{"FELT_STATE_DIR": t.TempDir()}); code != 1 || !strings.Contains(errOut, "FELT_STATE_DIR=") {
		t.Errorf("no store: %d %q", code, errOut)
	}
}

// felt leases on a real Consul, under another FELT_KV_PREFIX; then with
// Consul down it fails with status 1, naming Consul's address.
func TestLeasesConsul(t *testing.T) {
	agent := consul.Start(t, consul.Options{})
	st, err := consulkv.New(agent.APIConfig())
	if err != nil {
		t.Fatal(err)
	}
	seedCluster(t, st, "team-a/")
	t.Setenv("CONSUL_HTTP_ADDR", agent.Addr) // Consul's client reads it, as in the plugin
	env := map[string]string{"CONSUL_HTTP_ADDR": agent.Addr, "FELT_KV_PREFIX": "team-a"}

	code, out, errOut := leases(t, env)
	if code != 0 || errOut != "" {
		t.Fatalf("felt leases: %d %s", code, errOut)
	}
	checkText(t, out, "consul "+agent.Addr)
	if !strings.Contains(out, "prefix team-a/\n") {
		t.Errorf("the prefix is not named:\n%s", out)
	}
	code, out, errOut = leases(t, env, "--json")
	if code != 0 || errOut != "" {
		t.Fatalf("felt leases --json: %d %s", code, errOut)
	}
	checkJSON(t, out)
	// Another prefix holds nothing.
	code, out, _ = leases(t, map[string]string{"CONSUL_HTTP_ADDR": agent.Addr})
	if code != 0 || strings.Count(out, "(none)") != 2 {
		t.Errorf("felt leases under felt/: %d\n%s", code, out)
	}

	agent.Stop()
	code, _, errOut = leases(t, env)
	if code != 1 || !strings.Contains(errOut, "consul "+agent.Addr) {
		t.Errorf("with Consul down: %d %q; want status 1 naming Consul", code, errOut)
	}
}
