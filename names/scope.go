package names

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/felt-net/felt/state"
)

// StateScope finds a query's networks in this host's driver records:
// source address → the felt endpoint with that address → its sandbox →
// every felt endpoint of that sandbox → their pools, as Docker resolves
// over all networks of a container.
type StateScope struct {
	State *state.Store
}

// Pools returns the pools of src's container; ok is false if src is no
// felt endpoint of this host.
func (s StateScope) Pools(ctx context.Context, src netip.Addr) (pools []netip.Prefix, ok bool, err error) {
	eps, err := s.State.Endpoints(ctx)
	if err != nil {
		return nil, false, err
	}
	var me *state.Endpoint
	for i := range eps {
		if eps[i].Address.Addr() == src {
			me = &eps[i]
			break
		}
	}
	if me == nil {
		return nil, false, nil
	}
	nets := map[string]bool{me.NetworkID: true}
	if me.SandboxKey != "" {
		for _, ep := range eps {
			if ep.SandboxKey == me.SandboxKey {
				nets[ep.NetworkID] = true
			}
		}
	}
	for id := range nets {
		n, found, err := s.State.Network(ctx, id)
		if err != nil {
			return nil, false, err
		}
		if found {
			pools = append(pools, n.Pool)
		}
	}
	return pools, true, nil
}

// LocalSources are the sources felt forwards for besides felt
// endpoints: the subnets of this host's bridges (docker0, user bridge
// networks, felt's own) and the host's own addresses (--network host).
// Anything else is refused, so felt is no open resolver for the LAN. The
// list is read from the kernel at most every refresh.
type LocalSources struct {
	Netlink *netlink.Handle
	refresh time.Duration

	mu   sync.Mutex
	at   time.Time
	nets []netip.Prefix
}

// NewLocalSources reads the kernel's addresses through nl.
func NewLocalSources(nl *netlink.Handle) *LocalSources {
	return &LocalSources{Netlink: nl, refresh: 5 * time.Second}
}

// Allowed reports whether src may have its queries forwarded.
func (l *LocalSources) Allowed(src netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if time.Since(l.at) > l.refresh {
		if nets, err := l.read(); err == nil {
			l.nets, l.at = nets, time.Now()
		}
	}
	for _, p := range l.nets {
		if p.Contains(src) {
			return true
		}
	}
	return false
}

func (l *LocalSources) read() ([]netip.Prefix, error) {
	addrs, err := l.Netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, err
	}
	links, err := l.Netlink.LinkList()
	if err != nil {
		return nil, err
	}
	bridge := map[int]bool{}
	for _, ln := range links {
		if ln.Type() == "bridge" {
			bridge[ln.Attrs().Index] = true
		}
	}
	var out []netip.Prefix
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP.To4())
		if !ok {
			continue
		}
		out = append(out, netip.PrefixFrom(ip, 32))
		if ones, _ := a.Mask.Size(); bridge[a.LinkIndex] {
			out = append(out, netip.PrefixFrom(ip, ones).Masked())
		}
	}
	return out, nil
}
