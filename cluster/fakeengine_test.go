package cluster

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"sync"
	"testing"

	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/state"
)

// fakeEngine is one host's Docker engine with felt as its network driver:
// Create records the network as felt's handlers would (the pool in the
// shared record, the network in this host's state) and Remove undoes it
// through the driver's Deleted hook, as Docker's `network rm` does.
type fakeEngine struct {
	t     *testing.T
	reg   *lease.Registry
	state *state.Store
	hook  func(ctx context.Context, id string, pool netip.Prefix) error // the driver's Deleted hook

	mu       sync.Mutex
	host     string
	nets     map[string]Net
	pools    map[string]netip.Prefix
	subnets  map[string]netip.Prefix
	next     int
	warn     bool // answer creates with a warning, as Docker < 25 does for a duplicate name
	failNext error
	// beforeCreate, if set, runs in Create before Docker makes the
	// network: what other hosts do while this host's create is under way.
	beforeCreate func()
	lists        int // calls of Networks: one per pass
	created      []CreateRequest
	removed      []string
}

func newFakeEngine(t *testing.T, host string, reg *lease.Registry, st *state.Store) *fakeEngine {
	return &fakeEngine{t: t, host: host, reg: reg, state: st, nets: map[string]Net{}, pools: map[string]netip.Prefix{}, subnets: map[string]netip.Prefix{}}
}

func (e *fakeEngine) Self(context.Context) (string, error) { return "felt:latest", nil }

func (e *fakeEngine) Networks(context.Context) ([]Net, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.lists++
	out := make([]Net, 0, len(e.nets))
	for _, n := range e.nets {
		n.Containers = -1
		out = append(out, n)
	}
	return out, nil
}

func (e *fakeEngine) Inspect(_ context.Context, id string) (Net, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	n, ok := e.nets[id]
	if !ok {
		return Net{}, ErrNotFound
	}
	return n, nil
}

// add makes network name on pool as the user's `docker network create`
// does: through felt's handlers, which record the pool and lease a subnet
// of it for this host.
func (e *fakeEngine) add(ctx context.Context, req CreateRequest) (string, error) {
	rec, err := e.reg.ReservePool(ctx, req.Pool, 0)
	if err != nil {
		return "", err
	}
	l, err := e.reg.Acquire(ctx, lease.AcquireRequest{Network: rec,
		Owner: lease.Owner{HostID: e.host, PublicIP: netip.MustParseAddr("192.0.2.1")}})
	if err != nil {
		return "", err
	}
	e.mu.Lock()
	e.next++
	id := fmt.Sprintf("%s%063x", e.host[:1], e.next)
	e.mu.Unlock()
	if err := e.state.PutPool(ctx, state.Pool{ID: "felt/" + req.Pool.String() + "/" + id[:4], Pool: req.Pool, Range: req.IPRange, Subnet: l.Subnet, Refs: 1}); err != nil {
		return "", err
	}
	if err := e.state.PutNetwork(ctx, state.Network{ID: id, Pool: req.Pool, Subnet: l.Subnet}); err != nil {
		return "", err
	}
	e.mu.Lock()
	e.nets[id] = Net{ID: id, Name: req.Name, Driver: "felt:latest", Subnet: req.Pool, IPRange: req.IPRange,
		DriverOpts: maps.Clone(req.DriverOpts), IPAMOpts: maps.Clone(req.IPAMOpts), Labels: maps.Clone(req.Labels),
		Internal: req.Internal, Attachable: req.Attachable}
	e.pools[id] = req.Pool
	e.subnets[id] = l.Subnet
	e.mu.Unlock()
	return id, nil
}

func (e *fakeEngine) Create(ctx context.Context, req CreateRequest) (string, []string, error) {
	e.mu.Lock()
	e.created = append(e.created, req)
	fail := e.failNext
	e.failNext = nil
	warn := e.warn
	before := e.beforeCreate
	e.mu.Unlock()
	if fail != nil {
		return "", nil, fail
	}
	if before != nil {
		before()
	}
	id, err := e.add(ctx, req)
	if err != nil {
		return "", nil, err
	}
	if warn {
		return id, []string{"Network with name " + req.Name + " already exists"}, nil
	}
	return id, nil, nil
}

func (e *fakeEngine) Remove(ctx context.Context, id string) error {
	e.mu.Lock()
	n, ok := e.nets[id]
	pool := e.pools[id]
	e.mu.Unlock()
	if !ok {
		return nil
	}
	if n.Containers > 0 {
		return fmt.Errorf("%w: error while removing network: network %s id %s has active endpoints", ErrInUse, n.Name, id)
	}
	if e.hook != nil {
		if err := e.hook(ctx, id, pool); err != nil {
			return err
		}
	}
	if err := e.state.DeleteNetwork(ctx, id); err != nil {
		return err
	}
	if err := e.reg.Release(ctx, pool, e.subnetOf(id), e.host); err != nil {
		return err
	}
	e.mu.Lock()
	delete(e.nets, id)
	e.removed = append(e.removed, id)
	e.mu.Unlock()
	return nil
}

func (e *fakeEngine) WatchEvents(ctx context.Context, kick func()) error {
	<-ctx.Done()
	return ctx.Err()
}

func (e *fakeEngine) subnetOf(id string) netip.Prefix {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.subnets[id]
}

// setContainers sets how many containers use network id.
func (e *fakeEngine) setContainers(id string, n int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	net := e.nets[id]
	net.Containers = n
	e.nets[id] = net
}

func (e *fakeEngine) byName(name string) (Net, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, n := range e.nets {
		if n.Name == name {
			return n, true
		}
	}
	return Net{}, false
}

func (e *fakeEngine) count(name string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := 0
	for _, n := range e.nets {
		if n.Name == name {
			c++
		}
	}
	return c
}

var errFake = errors.New("fake Docker error")
