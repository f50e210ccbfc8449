package names

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/felt-net/felt/cluster"
	"github.com/felt-net/felt/kv/boltkv"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/state"
)

// fakeDocker is cluster.Containers over a map; emit sends an event to
// the current watcher.
type fakeDocker struct {
	mu   sync.Mutex
	cs   map[string]cluster.Container
	sink func(cluster.ContainerEvent)
}

func (f *fakeDocker) ContainerInspect(_ context.Context, id string) (cluster.Container, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.cs[id]
	if !ok {
		return c, fmt.Errorf("inspecting %s: %w", id, cluster.ErrNotFound)
	}
	return c, nil
}

func (f *fakeDocker) FeltContainers(_ context.Context, nets []string) ([]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []string
	for id, c := range f.cs {
		for n := range c.Networks {
			if slices.Contains(nets, n) && c.Running {
				ids = append(ids, id)
				break
			}
		}
	}
	return ids, nil
}

func (f *fakeDocker) WatchContainers(ctx context.Context, sink func(cluster.ContainerEvent)) error {
	f.mu.Lock()
	f.sink = sink
	f.mu.Unlock()
	<-ctx.Done()
	return ctx.Err()
}

func (f *fakeDocker) set(c cluster.Container, action string) {
	f.mu.Lock()
	if c.Running {
		f.cs[c.ID] = c
	} else {
		delete(f.cs, c.ID)
	}
	sink := f.sink
	f.mu.Unlock()
	if sink != nil {
		sink(cluster.ContainerEvent{Container: c.ID, Action: action})
	}
}

type recorder struct {
	mu  sync.Mutex
	got map[netip.Prefix][]lease.NameEntry
	n   int
}

func (r *recorder) PutNames(_ context.Context, pool netip.Prefix, _ string, es []lease.NameEntry) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got[pool] = es
	r.n++
	return nil
}

func (r *recorder) show(pool netip.Prefix) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var parts []string
	for _, e := range r.got[pool] {
		parts = append(parts, e.IP.String()+"="+strings.Join(e.Names, ","))
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}

func waitFor(t *testing.T, what string, f func() string, want string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := f()
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %q, want %q", what, got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestPublisher(t *testing.T) {
	db, err := boltkv.Open(filepath.Join(t.TempDir(), "felt.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	st := state.New(db)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, n := range []state.Network{
		{ID: "netblue", Pool: blue, Subnet: netip.MustParsePrefix("10.42.1.0/24")},
		{ID: "netred", Pool: red, Subnet: netip.MustParsePrefix("10.43.1.0/24")},
	} {
		if err := st.PutNetwork(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	web := cluster.Container{ID: "aaaaaaaaaaaa1111", Name: "web", Running: true, SandboxKey: "sbweb", Networks: map[string]cluster.ContainerNet{
		"netblue":   {IP: ip4("10.42.1.2"), DNSNames: []string{"web", "api", "aaaaaaaaaaaa"}},
		"netred":    {IP: ip4("10.43.1.2"), DNSNames: []string{"web", "aaaaaaaaaaaa"}},
		"netbridge": {IP: ip4("172.17.0.2"), DNSNames: []string{"web"}}, // not felt's
		"netother":  {IP: ip4("10.42.9.2"), DNSNames: []string{"nope"}}, // not a felt network here
	}}
	fd := &fakeDocker{cs: map[string]cluster.Container{web.ID: web}}
	rec := &recorder{got: map[netip.Prefix][]lease.NameEntry{}}
	p := NewPublisher(PublisherConfig{Docker: fd, State: st, Store: rec, HostID: "h1", Resync: time.Hour})
	go p.Run(ctx)
	waitFor(t, "blue at start", func() string { return rec.show(blue) }, "10.42.1.2=aaaaaaaaaaaa,api,web")
	waitFor(t, "red at start", func() string { return rec.show(red) }, "10.43.1.2=aaaaaaaaaaaa,web")
	waitFor(t, "watching", func() string {
		fd.mu.Lock()
		defer fd.mu.Unlock()
		return fmt.Sprint(fd.sink != nil)
	}, "true")
	// A second container starts (API 1.41 shape: aliases, no DNSNames).
	db2 := cluster.Container{ID: "bbbbbbbbbbbb2222", Name: "db", Running: true, SandboxKey: "sbdb", Networks: map[string]cluster.ContainerNet{
		"netblue": {IP: ip4("10.42.1.3"), Aliases: []string{"bbbbbbbbbbbb", "store"}}}}
	fd.set(db2, "start")
	waitFor(t, "blue after db starts", func() string { return rec.show(blue) }, "10.42.1.2=aaaaaaaaaaaa,api,web 10.42.1.3=bbbbbbbbbbbb,db,store")
	if other, known := p.NonFelt("sbweb"); !other || !known {
		t.Errorf("NonFelt(web) = %v, %v; want true, true (it is on a bridge too)", other, known)
	}
	if other, known := p.NonFelt("sbdb"); other || !known {
		t.Errorf("NonFelt(db) = %v, %v; want false, true", other, known)
	}
	// web dies: gone from both networks; red's record is emptied.
	web.Running = false
	fd.set(web, "die")
	waitFor(t, "blue after web dies", func() string { return rec.show(blue) }, "10.42.1.3=bbbbbbbbbbbb,db,store")
	waitFor(t, "red after web dies", func() string { return rec.show(red) }, "")
	// Nothing changed: no write.
	rec.mu.Lock()
	n := rec.n
	rec.mu.Unlock()
	fd.set(db2, "rename")
	time.Sleep(100 * time.Millisecond) // a negative: nothing to poll for
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.n != n {
		t.Fatalf("an unchanged set was written again (%d writes, want %d)", rec.n, n)
	}
}
