package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/felt-net/felt/internal/ipnet"
	"github.com/felt-net/felt/kv"
	"github.com/felt-net/felt/kv/boltkv"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/state"
	"github.com/felt-net/felt/testkit"
)

// host is one felt host of a test cluster: its own local state and Docker
// engine, the cluster's shared store.
type host struct {
	id     string
	sync   *Sync
	engine *fakeEngine
	state  *state.Store
	log    *testkit.LogBuffer
}

// cluster is hosts sharing one store.
type testCluster struct {
	t      *testing.T
	shared kv.Store
	reg    *lease.Registry

	mu    sync.Mutex
	clock time.Time // the hosts' clock; tick moves it
}

func (c *testCluster) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.clock
}

func (c *testCluster) tick(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clock = c.clock.Add(d)
}

func newTestCluster(t *testing.T) *testCluster {
	shared, err := boltkv.Open(filepath.Join(t.TempDir(), "shared.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shared.Close() })
	return &testCluster{t: t, shared: shared, reg: lease.NewRegistry(shared, "felt/", nil), clock: time.Now()}
}

func (c *testCluster) host(id string) *host {
	local, err := boltkv.Open(filepath.Join(c.t.TempDir(), id+".db"))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { local.Close() })
	st := state.New(local)
	eng := newFakeEngine(c.t, id, c.reg, st)
	logs := &testkit.LogBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s := New(Config{Engine: eng, Records: c.reg, State: st, HostID: id, Log: log, Now: c.now})
	eng.hook = s.Deleted
	return &host{id: id, sync: s, engine: eng, state: st, log: logs}
}

func (h *host) pass(t *testing.T) {
	t.Helper()
	if err := h.sync.Pass(context.Background()); err != nil {
		t.Fatalf("%s: pass: %v", h.id, err)
	}
}

func (h *host) create(t *testing.T, req CreateRequest) string {
	t.Helper()
	id, err := h.engine.add(context.Background(), req)
	if err != nil {
		t.Fatalf("%s: create %s: %v", h.id, req.Name, err)
	}
	return id
}

func (h *host) rm(t *testing.T, id string) {
	t.Helper()
	if err := h.engine.Remove(context.Background(), id); err != nil {
		t.Fatalf("%s: rm: %v", h.id, err)
	}
}

var (
	poolA = netip.MustParsePrefix("10.42.0.0/16")
	poolB = netip.MustParsePrefix("10.43.0.0/16")
)

func blue(pool netip.Prefix) CreateRequest {
	return CreateRequest{Name: "blue", Pool: pool, IPRange: netip.MustParsePrefix(pool.Addr().String() + "/20"),
		DriverOpts: map[string]string{"vni": "77"}, IPAMOpts: map[string]string{"x": "y"},
		Labels: map[string]string{"team": "a"}, Internal: true, Attachable: true}
}

func passAll(t *testing.T, hosts ...*host) {
	t.Helper()
	for range 2 {
		for _, h := range hosts {
			h.pass(t)
		}
	}
}

func TestDeclaredOnOneHostCreatedOnAll(t *testing.T) {
	c := newTestCluster(t)
	a, b, d := c.host("a"), c.host("b"), c.host("d")
	a.create(t, blue(poolA))
	passAll(t, a, b, d)

	for _, h := range []*host{b, d} {
		if len(h.engine.created) != 1 {
			t.Fatalf("%s created %d networks, want 1", h.id, len(h.engine.created))
		}
		got := h.engine.created[0]
		want := blue(poolA)
		if got.Name != want.Name || got.Pool != want.Pool || got.IPRange != want.IPRange || !got.Internal || !got.Attachable ||
			got.DriverOpts["vni"] != "77" || got.Labels["team"] != "a" || got.IPAMOpts["x"] != "y" {
			t.Errorf("%s created %+v, want %+v", h.id, got, want)
		}
	}
	if len(a.engine.created) != 0 {
		t.Errorf("the declaring host created %v", a.engine.created)
	}
	rec, err := c.reg.GetNetwork(context.Background(), poolA)
	if err != nil || !rec.Cluster.Live() || rec.Cluster.Name != "blue" || rec.Cluster.By != "a" {
		t.Fatalf("record %+v %v", rec.Cluster, err)
	}
	// More passes change nothing: no duplicates.
	passAll(t, a, b, d)
	for _, h := range []*host{a, b, d} {
		if n := h.engine.count("blue"); n != 1 {
			t.Errorf("%s has %d networks named blue", h.id, n)
		}
	}
	if !strings.Contains(a.log.String(), "cluster network declared") || !strings.Contains(b.log.String(), "cluster network created here") {
		t.Errorf("logs:\n%s\n%s", a.log, b.log)
	}
}

func TestRemovedEverywhereKeptWhileUsed(t *testing.T) {
	c := newTestCluster(t)
	a, b, d := c.host("a"), c.host("b"), c.host("d")
	a.create(t, blue(poolA))
	passAll(t, a, b, d)
	nb, _ := b.engine.byName("blue")
	nd, _ := d.engine.byName("blue")
	d.engine.setContainers(nd.ID, 1)

	b.rm(t, nb.ID) // the user, on b
	passAll(t, b, a, d)
	if n := a.engine.count("blue"); n != 0 {
		t.Errorf("a still has blue")
	}
	// The pass that removed it must not take it for a network still to
	// be declared (a new declaration, withdrawn again a pass later,
	// would make other hosts create and remove it).
	if n := strings.Count(a.log.String(), "cluster network declared"); n != 1 {
		t.Errorf("a declared blue %d times, want once:\n%s", n, a.log)
	}
	if n := d.engine.count("blue"); n != 1 {
		t.Fatalf("d removed blue while a container uses it")
	}
	if !strings.Contains(d.log.String(), "kept here") {
		t.Errorf("d's log does not say it kept blue:\n%s", d.log)
	}
	passAll(t, a, b, d)
	if strings.Count(d.log.String(), `level=INFO msg="cluster network kept here`) != 1 {
		t.Errorf("the kept network is logged more than once at info:\n%s", d.log)
	}
	// Nothing came back on b, the host that removed it.
	if n := b.engine.count("blue"); n != 0 {
		t.Errorf("b made blue again after its user removed it")
	}

	d.engine.setContainers(nd.ID, 0)
	d.pass(t)
	if n := d.engine.count("blue"); n != 0 {
		t.Errorf("d kept blue after its last container went")
	}
	if !strings.Contains(d.log.String(), "cluster network removed here") {
		t.Errorf("d's log:\n%s", d.log)
	}
	if _, err := c.reg.GetNetwork(context.Background(), poolA); !errors.Is(err, kv.ErrNotFound) {
		t.Errorf("the withdrawn record of a pool without leases is still there: %v", err)
	}
}

func TestConflictsLeftAlone(t *testing.T) {
	c := newTestCluster(t)
	a, b := c.host("a"), c.host("b")
	own := b.create(t, CreateRequest{Name: "blue", Pool: poolB}) // b's own blue, another pool
	own2 := b.create(t, CreateRequest{Name: "green", Pool: netip.MustParsePrefix("10.44.0.0/16"), DriverOpts: map[string]string{"scope": "local"}})
	b.pass(t) // b declares its blue first
	a.create(t, blue(poolA))
	passAll(t, a, b)

	if n := b.engine.count("blue"); n != 1 {
		t.Fatalf("b has %d blue", n)
	}
	if n, _ := b.engine.byName("blue"); n.ID != own {
		t.Fatalf("b's blue was replaced")
	}
	if !strings.Contains(a.log.String(), "conflict") || !strings.Contains(a.log.String(), "blue") {
		t.Errorf("a's log does not report the name conflict:\n%s", a.log)
	}
	if a.engine.count("blue") != 1 || len(a.engine.created) != 0 {
		t.Errorf("a: %d blue, created %v", a.engine.count("blue"), a.engine.created)
	}
	warned := strings.Count(a.log.String(), "level=WARN")
	passAll(t, a, b)
	if n := strings.Count(a.log.String(), "level=WARN"); n != warned {
		t.Errorf("lasting conflicts are warned about again (%d warnings, then %d):\n%s", warned, n, a.log)
	}
	// scope=local is never declared.
	if rec, err := c.reg.GetNetwork(context.Background(), netip.MustParsePrefix("10.44.0.0/16")); err != nil || rec.Cluster != nil {
		t.Errorf("scope=local network declared: %+v %v", rec.Cluster, err)
	}
	if a.engine.count("green") != 0 {
		t.Errorf("a made b's scope=local network")
	}
	_ = own2
}

func TestSameNameAndPoolAdopted(t *testing.T) {
	// Upgrade from a felt without cluster networks: every host made blue
	// by hand. One declares it, the others adopt theirs.
	c := newTestCluster(t)
	a, b := c.host("a"), c.host("b")
	a.create(t, blue(poolA))
	idB := b.create(t, blue(poolA))
	passAll(t, a, b)
	if len(b.engine.created) != 0 || b.engine.count("blue") != 1 {
		t.Fatalf("b created %v", b.engine.created)
	}
	m, ok, err := b.state.ClusterMember(context.Background(), idB)
	if err != nil || !ok || !m.Confirmed {
		t.Fatalf("b's blue not adopted: %+v %v %v", m, ok, err)
	}
}

func TestDuplicateWarningUndone(t *testing.T) {
	c := newTestCluster(t)
	a, b := c.host("a"), c.host("b")
	a.create(t, blue(poolA))
	a.pass(t)
	b.engine.warn = true // Docker 20.10: a non-felt "blue" exists; the create only warns
	b.pass(t)
	if len(b.engine.removed) != 1 || b.engine.count("blue") != 0 {
		t.Fatalf("the duplicate was not removed: removed %v", b.engine.removed)
	}
	if !strings.Contains(b.log.String(), "conflict") {
		t.Errorf("log:\n%s", b.log)
	}
	members, _ := b.state.ClusterMembers(context.Background())
	if len(members) != 0 {
		t.Errorf("members %+v", members)
	}
}

func TestCreateErrorReported(t *testing.T) {
	c := newTestCluster(t)
	a, b := c.host("a"), c.host("b")
	a.create(t, blue(poolA))
	a.pass(t)
	b.engine.failNext = errFake
	b.pass(t)
	if !strings.Contains(b.log.String(), errFake.Error()) || !strings.Contains(b.log.String(), "conflict") {
		t.Errorf("the create's error is not in the log:\n%s", b.log)
	}
	b.engine.failNext = errFake
	b.pass(t)
	if len(b.engine.created) != 1 {
		t.Fatalf("a failed create is tried again on the next pass already: %d creates", len(b.engine.created))
	}
	c.tick(3 * time.Second)
	b.pass(t) // fails again: the next wait is longer
	c.tick(3 * time.Second)
	b.pass(t)
	if len(b.engine.created) != 2 {
		t.Fatalf("%d creates; want 2 (the wait doubles after each failure)", len(b.engine.created))
	}
	c.tick(2 * time.Second)
	b.pass(t)
	if b.engine.count("blue") != 1 {
		t.Errorf("not created once the wait was over")
	}
}

func TestCrashAfterCreateAdoptsByName(t *testing.T) {
	c := newTestCluster(t)
	a, b := c.host("a"), c.host("b")
	a.create(t, blue(poolA))
	passAll(t, a, b)
	// b's membership lost (a crash between Create and its record).
	n, _ := b.engine.byName("blue")
	if err := b.state.DeleteClusterMember(context.Background(), n.ID); err != nil {
		t.Fatal(err)
	}
	passAll(t, a, b)
	if b.engine.count("blue") != 1 || len(b.engine.created) != 1 {
		t.Fatalf("b: %d blue, created %d", b.engine.count("blue"), len(b.engine.created))
	}
	if _, ok, _ := b.state.ClusterMember(context.Background(), n.ID); !ok {
		t.Errorf("not adopted")
	}
}

func TestLostNetworkMadeAgain(t *testing.T) {
	// dockerd lost b's network (no intent: the user did not remove it).
	c := newTestCluster(t)
	a, b := c.host("a"), c.host("b")
	a.create(t, blue(poolA))
	passAll(t, a, b)
	n, _ := b.engine.byName("blue")
	b.engine.mu.Lock()
	delete(b.engine.nets, n.ID)
	b.engine.mu.Unlock()
	if err := b.state.DeleteNetwork(context.Background(), n.ID); err != nil {
		t.Fatal(err)
	}
	passAll(t, b)
	if b.engine.count("blue") != 0 {
		t.Errorf("made again at once: Docker unlists a network it is removing before felt's DeleteNetwork")
	}
	c.tick(unlistedGrace)
	passAll(t, b)
	if b.engine.count("blue") != 1 {
		t.Errorf("not made again")
	}
	if rec, _ := c.reg.GetNetwork(context.Background(), poolA); !rec.Cluster.Live() {
		t.Errorf("declaration withdrawn by a lost network")
	}
}

func TestStoreWipedDeclaredAgain(t *testing.T) {
	c := newTestCluster(t)
	a, b := c.host("a"), c.host("b")
	a.create(t, blue(poolA))
	passAll(t, a, b)
	before, _ := c.reg.GetNetwork(context.Background(), poolA)
	ctx := context.Background()
	pairs, _, err := c.shared.List(ctx, "felt/")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pairs {
		if err := c.shared.Delete(ctx, p.Key); err != nil {
			t.Fatal(err)
		}
	}
	passAll(t, a, b) // no record yet: nothing removed
	if a.engine.count("blue") != 1 || b.engine.count("blue") != 1 {
		t.Fatalf("a wiped store removed networks")
	}
	if _, err := c.reg.ReservePool(ctx, poolA, 0); err != nil { // the next lease renewal
		t.Fatal(err)
	}
	passAll(t, a, b)
	after, err := c.reg.GetNetwork(ctx, poolA)
	if err != nil || !after.Cluster.Live() || after.Cluster.UID != before.Cluster.UID {
		t.Fatalf("declaration after the wipe: %+v %v; before %+v", after.Cluster, err, before.Cluster)
	}
	if len(a.engine.created)+len(b.engine.created) != 1 {
		t.Errorf("networks created again: %v %v", a.engine.created, b.engine.created)
	}
}

func TestRemovedWhileDeclaringIsWithdrawn(t *testing.T) {
	c := newTestCluster(t)
	a, b := c.host("a"), c.host("b")
	id := a.create(t, blue(poolA))
	// The user removes it between the pass's listing and its record:
	// the hook found no membership, left an intent without UID.
	if err := a.sync.Deleted(context.Background(), id, poolA); err != nil {
		t.Fatal(err)
	}
	v, err := a.sync.read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	delete(v.intents, id) // as read before the removal
	if err := a.sync.declare(context.Background(), v, v.docker[id]); err != nil {
		t.Fatal(err)
	}
	a.engine.mu.Lock()
	delete(a.engine.nets, id)
	a.engine.mu.Unlock()
	passAll(t, a, b)
	if b.engine.count("blue") != 0 {
		// It may have been made on b for a moment; the withdrawal
		// removes it.
		passAll(t, a, b)
	}
	if b.engine.count("blue") != 0 {
		t.Errorf("a network removed while it was being declared lives on elsewhere")
	}
	if rec, err := c.reg.GetNetwork(context.Background(), poolA); err == nil && rec.Cluster.Live() {
		t.Errorf("declaration still live: %+v", rec.Cluster)
	}
}

func TestNameRaceOneWins(t *testing.T) {
	c := newTestCluster(t)
	a, b := c.host("a"), c.host("b")
	a.create(t, blue(poolA))
	b.create(t, CreateRequest{Name: "blue", Pool: poolB})
	errs := make(chan error, 2)
	for _, h := range []*host{a, b} {
		go func() { errs <- h.sync.Pass(context.Background()) }()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	passAll(t, a, b)
	live := 0
	for _, p := range []netip.Prefix{poolA, poolB} {
		if rec, err := c.reg.GetNetwork(context.Background(), p); err == nil && rec.Cluster.Live() {
			live++
		}
	}
	if live != 1 {
		t.Errorf("%d live declarations of blue", live)
	}
	if a.engine.count("blue") != 1 || b.engine.count("blue") != 1 {
		t.Errorf("networks changed: a %d b %d", a.engine.count("blue"), b.engine.count("blue"))
	}
}

func TestDeletedHookRecordsIntent(t *testing.T) {
	c := newTestCluster(t)
	a := c.host("a")
	ctx := context.Background()
	if err := a.state.PutClusterMember(ctx, state.ClusterMember{ID: "n1", UID: "u1", Pool: poolA, Confirmed: true}); err != nil {
		t.Fatal(err)
	}
	if err := a.sync.Deleted(ctx, "n1", poolA); err != nil {
		t.Fatal(err)
	}
	i, ok, err := a.state.ClusterIntent(ctx, "n1")
	if err != nil || !ok || i.UID != "u1" || i.Pool != poolA {
		t.Fatalf("intent %+v %v %v", i, ok, err)
	}
	if _, ok, _ := a.state.ClusterMember(ctx, "n1"); ok {
		t.Errorf("membership kept")
	}
}

// A host that has just started: its first pass comes before dockerd has
// enabled felt, and Docker refuses the create ("found but disabled"). The
// loop tries again when the retry is due, not only at the next resync or
// event, and does not call it a conflict.
func TestRunRetriesCreateWhileFeltIsEnabled(t *testing.T) {
	c := newTestCluster(t)
	a := c.host("a")
	a.create(t, blue(poolA))
	a.pass(t)

	b := c.host("b")
	b.engine.failNext = errors.New(`Error response from daemon: plugin "felt:latest" found but disabled`)
	s := New(Config{Engine: b.engine, Records: c.reg, State: b.state, HostID: "b", Resync: time.Hour,
		Log: b.sync.cfg.Log}) // the real clock: Run's timers use it
	b.engine.hook = s.Deleted
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	testkit.WaitFor(t, "blue created on b after the refused first try", func() bool { return b.engine.count("blue") == 1 })
	if strings.Contains(b.log.String(), "conflict") {
		t.Errorf("a refusal while felt is being enabled was reported as a conflict:\n%s", b.log)
	}
}

func TestDuplicateWarningBacksOff(t *testing.T) {
	// Docker 20.10 makes a duplicate and only warns, every time: felt
	// removes it, and must wait longer before each try, as for any failed
	// create. (Its own CreateNetwork hook kicks a pass 2 s later, so a
	// wait that stays at 2 s creates and removes a network for ever.)
	c := newTestCluster(t)
	a, b := c.host("a"), c.host("b")
	a.create(t, blue(poolA))
	a.pass(t)
	b.engine.warn = true
	b.pass(t)
	for range 4 {
		c.tick(2*time.Second + time.Millisecond)
		b.pass(t)
	}
	// 2 s, then 4 s, then 8 s: tries at 0, ~2, ~6 s; not at ~4 and ~8.
	if n := len(b.engine.created); n != 3 {
		t.Errorf("%d creates in 8 s of passes every 2 s; want 3 (the wait doubles after each duplicate)", n)
	}
}

// liveDecl reports whether pool's record carries a live declaration.
func liveDecl(t *testing.T, c *testCluster, pool netip.Prefix) bool {
	t.Helper()
	rec, err := c.reg.GetNetwork(context.Background(), pool)
	if errors.Is(err, kv.ErrNotFound) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return rec.Cluster.Live()
}

func TestWithdrawnWhileAwayNotBroughtBackByRenewal(t *testing.T) {
	// b is away longer than the lease TTL: its lease expires and goes.
	// Meanwhile the user removes blue on a; the tombstone goes with the
	// last lease. b returns, and its lease renewal (Reassert) makes the
	// record again, without declaration, before b's first pass: that
	// must remove b's blue, not declare blue again for every host.
	c := newTestCluster(t)
	ctx := context.Background()
	a, b := c.host("a"), c.host("b")
	idA := a.create(t, blue(poolA))
	passAll(t, a, b)
	nb, ok := b.engine.byName("blue")
	if !ok {
		t.Fatal("b did not create blue")
	}
	if err := c.reg.Release(ctx, poolA, b.engine.subnetOf(nb.ID), "b"); err != nil { // expired and removed
		t.Fatal(err)
	}
	a.rm(t, idA)
	a.pass(t)
	if _, err := c.reg.GetNetwork(ctx, poolA); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("record of the withdrawn pool without leases: %v", err)
	}
	if _, err := c.reg.ReservePool(ctx, poolA, 0); err != nil { // b's renewal, first
		t.Fatal(err)
	}
	passAll(t, b, a)
	if liveDecl(t, c, poolA) {
		t.Errorf("the declaration the user withdrew is live again")
	}
	if n := a.engine.count("blue"); n != 0 {
		t.Errorf("a made blue again after its user removed it")
	}
	if n := b.engine.count("blue"); n != 0 {
		t.Errorf("b kept the withdrawn blue")
	}
}

func TestWithdrawnDuringCreateNotBroughtBack(t *testing.T) {
	// b's pass saw blue declared and creates it; before b's IPAM records
	// the pool, the user removes blue on a and the record goes with a's
	// last lease. b's create makes the record again, without declaration.
	c := newTestCluster(t)
	ctx := context.Background()
	a, b := c.host("a"), c.host("b")
	idA := a.create(t, blue(poolA))
	a.pass(t)
	b.engine.beforeCreate = func() {
		b.engine.beforeCreate = nil
		a.rm(t, idA)
		a.pass(t)
		if _, err := c.reg.GetNetwork(ctx, poolA); !errors.Is(err, kv.ErrNotFound) {
			t.Errorf("record of the withdrawn pool without leases: %v", err)
		}
	}
	b.pass(t)
	passAll(t, b, a)
	if liveDecl(t, c, poolA) {
		t.Errorf("the declaration the user withdrew is live again")
	}
	if n := a.engine.count("blue"); n != 0 {
		t.Errorf("a made blue again after its user removed it")
	}
	if n := b.engine.count("blue"); n != 0 {
		t.Errorf("b kept the withdrawn blue")
	}
}

func TestRewrittenByOlderFeltDeclaredAgain(t *testing.T) {
	// An older felt rewrote the record without the declaration (same
	// store, same epoch; the name claim stays): declared again, same UID,
	// and no network removed.
	c := newTestCluster(t)
	ctx := context.Background()
	a, b := c.host("a"), c.host("b")
	a.create(t, blue(poolA))
	passAll(t, a, b)
	before, err := c.reg.GetNetwork(ctx, poolA)
	if err != nil {
		t.Fatal(err)
	}
	old := before
	old.Cluster = nil
	val, err := json.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.shared.Put(ctx, "felt/networks/"+ipnet.Key(poolA), val); err != nil {
		t.Fatal(err)
	}
	passAll(t, b, a)
	after, err := c.reg.GetNetwork(ctx, poolA)
	if err != nil || !after.Cluster.Live() || after.Cluster.UID != before.Cluster.UID {
		t.Fatalf("declaration after an older felt's rewrite: %+v %v; before %+v", after.Cluster, err, before.Cluster)
	}
	if a.engine.count("blue") != 1 || b.engine.count("blue") != 1 || len(a.engine.removed)+len(b.engine.removed) != 0 {
		t.Errorf("networks changed: a %d b %d, removed %v %v", a.engine.count("blue"), b.engine.count("blue"), a.engine.removed, b.engine.removed)
	}
}

func TestReportedForgottenWhenSubjectGoes(t *testing.T) {
	// What report remembers of a conflict goes with its network or
	// declaration, or a long-running felt keeps one entry per network
	// and declaration that ever was in conflict.
	c := newTestCluster(t)
	a, b := c.host("a"), c.host("b")
	idA := a.create(t, blue(poolA))
	a.pass(t)
	b.engine.failNext = errFake // a conflict about a's declaration
	idB := b.create(t, CreateRequest{Name: "red", Pool: poolA})
	b.pass(t) // and one about b's own red, on the declared pool
	b.sync.mu.Lock()
	n := len(b.sync.reported)
	b.sync.mu.Unlock()
	if n != 2 {
		t.Fatalf("b reported %d subjects, want 2: %v", n, b.sync.reported)
	}
	b.rm(t, idB)
	a.rm(t, idA)
	passAll(t, a, b)
	b.sync.mu.Lock()
	defer b.sync.mu.Unlock()
	if len(b.sync.reported) != 0 {
		t.Errorf("b still remembers %v", b.sync.reported)
	}
}

func TestKeptNetworkNotDeclaredAgainAfterWipe(t *testing.T) {
	// blue is withdrawn but kept on d (a container uses it). The store is
	// wiped, and the lease renewal makes the record again: d must not
	// declare blue again (the tombstone went with the wipe, but d knew).
	c := newTestCluster(t)
	ctx := context.Background()
	a, d := c.host("a"), c.host("d")
	idA := a.create(t, blue(poolA))
	passAll(t, a, d)
	nd, _ := d.engine.byName("blue")
	d.engine.setContainers(nd.ID, 1)
	a.rm(t, idA)
	passAll(t, a, d)
	if d.engine.count("blue") != 1 || a.engine.count("blue") != 0 {
		t.Fatalf("before the wipe: a %d d %d blue", a.engine.count("blue"), d.engine.count("blue"))
	}
	if _, err := c.reg.DeleteAll(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.reg.ReservePool(ctx, poolA, 0); err != nil { // d's renewal
		t.Fatal(err)
	}
	passAll(t, d, a)
	if liveDecl(t, c, poolA) {
		t.Errorf("the withdrawn blue, kept on d, is declared again after the wipe")
	}
	if a.engine.count("blue") != 0 {
		t.Errorf("a made the withdrawn blue again")
	}
	d.engine.setContainers(nd.ID, 0)
	passAll(t, d, a)
	if d.engine.count("blue") != 0 {
		t.Errorf("d kept the withdrawn blue after its last container went")
	}
}

// wipeAfterEpoch is the shared store wiped right after a pass read the
// epoch, before it lists the records.
type wipeAfterEpoch struct {
	Records
	wipe func()
}

func (w *wipeAfterEpoch) Epoch(ctx context.Context) (string, error) {
	e, err := w.Records.Epoch(ctx)
	if w.wipe != nil {
		w.wipe()
		w.wipe = nil
	}
	return e, err
}

func TestStoreWipedMidPassRemovesNothing(t *testing.T) {
	c := newTestCluster(t)
	ctx := context.Background()
	a, b := c.host("a"), c.host("b")
	a.create(t, blue(poolA))
	passAll(t, a, b)
	w := &wipeAfterEpoch{Records: c.reg, wipe: func() {
		if _, err := c.reg.DeleteAll(ctx); err != nil {
			t.Error(err)
		}
	}}
	b.sync.cfg.Records = w
	_ = b.sync.Pass(ctx) // may fail: the store changed under it
	if w.wipe != nil {
		t.Fatal("the wipe was not staged")
	}
	if b.engine.count("blue") != 1 {
		t.Errorf("b removed blue: the store was wiped during its pass, not blue withdrawn")
	}
}

func TestRemovalUnlistedBeforeDeleteNetworkIsWithdrawn(t *testing.T) {
	// docker network rm on b: Docker stops listing the network as soon as
	// its removal starts, and calls felt's DeleteNetwork (the Deleted
	// hook) a moment later. A pass in between (kicked by the disconnect
	// of the container removed just before, say) must not forget the
	// membership, or the hook finds none, the declaration is never
	// withdrawn, and b makes the network again.
	c := newTestCluster(t)
	ctx := context.Background()
	a, b := c.host("a"), c.host("b")
	a.create(t, blue(poolA))
	passAll(t, a, b)
	nb, _ := b.engine.byName("blue")
	b.engine.mu.Lock()
	delete(b.engine.nets, nb.ID) // unlisted: the removal has begun
	b.engine.mu.Unlock()
	b.pass(t)
	// Docker calls DeleteNetwork, then IPAM's ReleasePool.
	if err := b.sync.Deleted(ctx, nb.ID, poolA); err != nil {
		t.Fatal(err)
	}
	if err := b.state.DeleteNetwork(ctx, nb.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.reg.Release(ctx, poolA, b.engine.subnetOf(nb.ID), "b"); err != nil {
		t.Fatal(err)
	}
	passAll(t, b, a)
	if liveDecl(t, c, poolA) {
		t.Errorf("blue, removed on b, is still declared")
	}
	if n := b.engine.count("blue"); n != 0 {
		t.Errorf("b made blue again after its user removed it")
	}
	if n := a.engine.count("blue"); n != 0 {
		t.Errorf("a still has blue")
	}
}

func TestRemovedRightAfterWipeIsWithdrawn(t *testing.T) {
	// The store was wiped; before any host declared blue again, the user
	// removes it on a. a's withdrawal finds no declaration to withdraw;
	// b then declares blue again (its membership predates the wipe). The
	// removal must still win, not blue come back on a.
	c := newTestCluster(t)
	ctx := context.Background()
	a, b := c.host("a"), c.host("b")
	idA := a.create(t, blue(poolA))
	passAll(t, a, b)
	if _, err := c.reg.DeleteAll(ctx); err != nil {
		t.Fatal(err)
	}
	a.rm(t, idA)
	a.pass(t)
	if _, err := c.reg.ReservePool(ctx, poolA, 0); err != nil { // b's renewal
		t.Fatal(err)
	}
	b.pass(t) // declares blue again
	passAll(t, a, b)
	if n := a.engine.count("blue"); n != 0 {
		t.Errorf("a made blue again after its user removed it")
	}
	if liveDecl(t, c, poolA) {
		t.Errorf("blue, removed on a, is declared")
	}
	if n := b.engine.count("blue"); n != 0 {
		t.Errorf("b still has blue")
	}
}

// A create that failed (Docker's answer lost: dockerd restarting, or
// timing out) although Docker made the network: the next pass adopts it
// by name. The failed try's retry time, now past, must not make Run pass
// again and again without pause.
func TestRunIdleAfterFailedCreateAdopted(t *testing.T) {
	c := newTestCluster(t)
	a := c.host("a")
	a.create(t, blue(poolA))
	a.pass(t)

	b := c.host("b")
	b.engine.failNext = errFake
	b.pass(t) // fails; a retry is due in 2 s
	b.create(t, blue(poolA))
	s := New(Config{Engine: b.engine, Records: c.reg, State: b.state, HostID: "b", Resync: time.Hour,
		Log: b.sync.cfg.Log, Now: func() time.Time { return c.now().Add(time.Minute) }})
	s.retry = b.sync.retry // the same loop, a minute later
	b.engine.hook = s.Deleted
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	testkit.WaitFor(t, "b's blue adopted", func() bool {
		members, _ := b.state.ClusterMembers(context.Background())
		return len(members) == 1
	})
	b.engine.mu.Lock()
	before := b.engine.lists
	b.engine.mu.Unlock()
	time.Sleep(300 * time.Millisecond) // measures idleness: nothing to poll for
	cancel()
	<-done
	b.engine.mu.Lock()
	after := b.engine.lists
	b.engine.mu.Unlock()
	if after-before > 3 {
		t.Errorf("%d passes in 300 ms with nothing to do (Resync 1 h)", after-before)
	}
}
