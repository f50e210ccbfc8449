package names

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/felt-net/felt/state"
)

// Source is what a query's source may see.
type Source struct {
	Pools []netip.Prefix // the felt networks of its container
	Felt  bool           // it is a felt endpoint of this host
	// InternalOnly: every network of its container is an --internal felt
	// network. Such a container gets names only: Docker ≥ 25.0.5 forwards
	// nothing from internal networks, and felt must not open the way out
	// (DNS exfiltration) that the network itself does not have.
	InternalOnly bool
}

// StateScope finds a query's networks in this host's driver records:
// source address → the felt endpoint with that address → its sandbox →
// every felt endpoint of that sandbox → their pools, as Docker resolves
// over all networks of a container.
type StateScope struct {
	State *state.Store
	// NonFelt tells whether the container of a sandbox has networks other
	// than felt's (Publisher.NonFelt, from Docker); known false (no Docker
	// access, not seen yet): treated as having some, so queries are
	// forwarded as Docker before 25.0.5 did.
	NonFelt func(sandbox string) (nonFelt, known bool)
}

// Of returns what src may see; Felt is false if src is no felt endpoint
// of this host.
func (s StateScope) Of(ctx context.Context, src netip.Addr) (Source, error) {
	eps, err := s.State.Endpoints(ctx)
	if err != nil {
		return Source{}, err
	}
	var me *state.Endpoint
	for i := range eps {
		if eps[i].Address.Addr() == src {
			me = &eps[i]
			break
		}
	}
	if me == nil {
		return Source{}, nil
	}
	nets := map[string]bool{me.NetworkID: true}
	if me.SandboxKey != "" {
		for _, ep := range eps {
			if ep.SandboxKey == me.SandboxKey {
				nets[ep.NetworkID] = true
			}
		}
	}
	out := Source{Felt: true, InternalOnly: me.SandboxKey != "" && s.NonFelt != nil}
	for id := range nets {
		n, found, err := s.State.Network(ctx, id)
		if err != nil {
			return Source{}, err
		}
		if found {
			out.Pools = append(out.Pools, n.Pool)
			out.InternalOnly = out.InternalOnly && n.Internal
		}
	}
	if out.InternalOnly {
		nonFelt, known := s.NonFelt(me.SandboxKey)
		out.InternalOnly = known && !nonFelt
	}
	return out, nil
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
