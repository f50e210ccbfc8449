package lease

import (
	"container/heap"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// How a Watch shards its blocking queries (watcher.go). Consul's KV list is
// a plain string prefix, so a set of textual prefixes of the subnet keys
// ("10.64.1" holds 10.64.1.x, 10.64.10-19.x and 10.64.100-199.x) that
// partitions every key a pool's leases can have gives buckets, each
// followed by its own query. The key layout stays as it is: nothing to
// migrate, and old and new felts read each other.
//
// A bucket is a node of the trie of the dotted addresses of the pool: its
// children are the next characters a key can have ('0'-'9', '.' after a
// complete octet, '-' after the fourth). The plan covers the keys of every
// subnet length, not only of the pool's: the watch is told pools, not
// their records, and a record recreated with another length must not hide
// leases. The length only weighs the buckets (hintLen).

const (
	// watchBudget is the most blocking queries one Watch holds, over all
	// its pools. Each holds an HTTP connection to the Consul agent, whose
	// http_max_conns_per_client is 200 by default, and the names and
	// network watches need theirs.
	watchBudget = 64
	// watchTarget is the capacity (possible subnets) under which a bucket
	// is not split. 256 keeps the default pool (a /16 of /24s) one query:
	// its worst answer is 256 records (~90 KB from Consul), and splitting
	// it finer costs many queries that mostly answer nothing, which Consul
	// wakes on every write next to them anyway (an empty prefix is watched
	// on the nearest node of its tree above it, at the table's index).
	// Bigger pools split until their buckets are this small or the budget
	// is spent: a /10 of /24s (16,384) gets 64 buckets of 256.
	watchTarget = 256
)

// hintLen is the subnet length a pool's buckets are weighed by: the
// default one (DefaultSubnetLen, or the pool's own length if longer), as
// writeNetwork picks it. Only the balance of the plan depends on it.
func hintLen(pool netip.Prefix) int { return max(DefaultSubnetLen, pool.Bits()) }

// planNode is a bucket candidate: the textual prefix s of a pool's subnet
// keys (after the pool's own key prefix) and its capacity, the number of
// subnets of the pool's hint length whose keys start with s.
type planNode struct {
	pool int // index in the pools planned
	s    string
	cap  uint64
}

// planBuckets splits the subnet keys of each pool into buckets: textual
// prefixes (of the key after "<pool key>/") that are disjoint and together
// cover every key a lease of the pool can have, of any subnet length. The
// greedy split takes the bucket of largest capacity and replaces it by its
// children while it holds more than target subnets and the total stays
// within budget; it stops at the first that cannot split. Every pool gets
// at least one bucket, so more pools than budget exceed it. A pool that is
// not IPv4 is one bucket ("": the whole pool). Each pool's buckets come
// sorted, so their keys come in store order.
func planBuckets(pools []netip.Prefix, budget int, target uint64) [][]string {
	out := make([][]string, len(pools))
	var h planHeap
	for i, p := range pools {
		if !p.IsValid() || !p.Addr().Is4() {
			out[i] = []string{""}
			continue
		}
		p = p.Masked()
		n, _ := keySpan(p, hintLen(p), "")
		heap.Push(&h, planNode{pool: i, s: "", cap: n})
	}
	count := len(pools)
	for h.Len() > 0 {
		top := heap.Pop(&h).(planNode)
		if top.cap <= target {
			out[top.pool] = append(out[top.pool], top.s)
			continue
		}
		p := pools[top.pool].Masked()
		kids := keyChildren(p, hintLen(p), top.s)
		if len(kids) == 0 || count-1+len(kids) > budget {
			// The largest cannot split: the rest stay as they are.
			out[top.pool] = append(out[top.pool], top.s)
			for _, n := range h {
				out[n.pool] = append(out[n.pool], n.s)
			}
			break
		}
		count += len(kids) - 1
		for _, k := range kids {
			k.pool = top.pool
			heap.Push(&h, k)
		}
	}
	for i := range out {
		slices.Sort(out[i])
	}
	return out
}

// keyChildren are the nodes under s that hold a key of pool, of any
// subnet length: s followed by one more character.
func keyChildren(pool netip.Prefix, hint int, s string) []planNode {
	if strings.Contains(s, "-") {
		return nil // one address: its keys differ by length alone
	}
	parts := strings.Split(s, ".")
	next := []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}
	if last := parts[len(parts)-1]; last != "" {
		if len(parts) < 4 {
			next = append(next, ".")
		} else {
			next = append(next, "-")
		}
	}
	var out []planNode
	for _, c := range next {
		if n, ok := keySpan(pool, hint, s+c); ok {
			out = append(out, planNode{s: s + c, cap: n})
		}
	}
	return out
}

// keySpan says whether some address of pool has a dotted form starting
// with s (ok), and how many of those are subnets of length hint. s is the
// textual start of a subnet key: octets, and after a complete address a
// '-' (the length is not looked at).
func keySpan(pool netip.Prefix, hint int, s string) (n uint64, ok bool) {
	if addr, _, cut := strings.Cut(s, "-"); cut {
		a, err := netip.ParseAddr(addr)
		if err != nil || !a.Is4() || a.String() != addr || !pool.Contains(a) {
			return 0, false
		}
		if netip.PrefixFrom(a, hint).Masked().Addr() == a {
			return 1, true
		}
		return 0, true
	}
	parts := strings.Split(s, ".")
	if len(parts) > 4 {
		return 0, false
	}
	var fixed [4]byte
	for i, o := range parts[:len(parts)-1] {
		v, err := strconv.Atoi(o)
		if err != nil || v < 0 || v > 255 || strconv.Itoa(v) != o {
			return 0, false
		}
		fixed[i] = byte(v)
	}
	k, partial := len(parts)-1, parts[len(parts)-1]
	for v := 0; v < 256; v++ {
		if !strings.HasPrefix(strconv.Itoa(v), partial) {
			continue
		}
		fixed[k] = byte(v)
		q := netip.PrefixFrom(netip.AddrFrom4(fixed), 8*(k+1)).Masked()
		if !q.Overlaps(pool) {
			continue
		}
		if pool.Bits() > q.Bits() {
			q = pool
		}
		ok = true
		switch {
		case q.Bits() <= hint:
			n += 1 << (hint - q.Bits())
		case netip.PrefixFrom(q.Addr(), hint).Masked().Addr() == q.Addr():
			n++ // q is inside one subnet, which starts at q's start
		}
	}
	return n, ok
}

// planHeap orders nodes by capacity, largest first; ties by pool and text,
// so a plan does not depend on the heap's whims.
type planHeap []planNode

func (h planHeap) Len() int { return len(h) }
func (h planHeap) Less(i, j int) bool {
	if h[i].cap != h[j].cap {
		return h[i].cap > h[j].cap
	}
	if h[i].pool != h[j].pool {
		return h[i].pool < h[j].pool
	}
	return h[i].s < h[j].s
}
func (h planHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *planHeap) Push(x any)   { *h = append(*h, x.(planNode)) }
func (h *planHeap) Pop() any {
	old := *h
	n := old[len(old)-1]
	*h = old[:len(old)-1]
	return n
}
