package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	consulapi "github.com/hashicorp/consul/api"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/felt-net/felt/kv"
	"github.com/felt-net/felt/kv/boltkv"
	"github.com/felt-net/felt/kv/consulkv"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/plugin"
)

const leasesUsage = `usage: felt leases [--json]

Lists the cluster's network records (with their cluster declarations) and
subnet leases, read from the store felt shares: Consul when CONSUL_HTTP_ADDR
is set (with FELT_KV_PREFIX and Consul's TLS and token variables), else the
embedded store in FELT_STATE_DIR. It works whether or not felt runs on this
host, and never writes.
`

// leasesTimeout bounds the whole listing: a Consul that does not answer
// must not hang a script.
const leasesTimeout = 30 * time.Second

// leasesOutput is `felt leases --json`. Leases are the records as stored
// (lease.Lease's wire format, backend keys included); now is the time
// their expiry is judged by.
type leasesOutput struct {
	Store    string          `json:"store"`
	Prefix   string          `json:"prefix"`
	Now      time.Time       `json:"now"`
	Networks []lease.Network `json:"networks"`
	Leases   []lease.Lease   `json:"leases"`
}

// runLeases is `felt leases`: its exit status is 0, 1 when the store
// cannot be read, 2 for a usage or settings error.
func runLeases(ctx context.Context, args []string, stdout, stderr io.Writer, lookup func(string) (string, bool)) int {
	fs := flag.NewFlagSet("felt leases", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, leasesUsage) }
	asJSON := fs.Bool("json", false, "print JSON instead of tables")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "felt leases: unexpected argument %q\n%s", fs.Arg(0), leasesUsage)
		return 2
	}
	s, err := plugin.SettingsFromEnv(lookup)
	if err != nil {
		fmt.Fprintf(stderr, "felt leases: %v\n", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(ctx, leasesTimeout)
	defer cancel()
	store, where, err := openShared(s)
	if err != nil {
		fmt.Fprintf(stderr, "felt leases: %v\n", err)
		return 1
	}
	defer store.Close()
	reg := lease.NewRegistry(store, s.KVPrefix, nil)
	out := leasesOutput{Store: where, Prefix: s.KVPrefix, Now: reg.Now().UTC()}
	if out.Networks, err = reg.ListNetworks(ctx); err != nil {
		fmt.Fprintf(stderr, "felt leases: network records in %s: %v\n", where, err)
		return 1
	}
	if out.Leases, err = reg.AllLeases(ctx); err != nil {
		fmt.Fprintf(stderr, "felt leases: %s: %v\n", where, err)
		return 1
	}
	slices.SortFunc(out.Leases, func(a, b lease.Lease) int {
		return cmp.Or(a.Pool.Addr().Compare(b.Pool.Addr()), a.Subnet.Addr().Compare(b.Subnet.Addr()))
	})
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			fmt.Fprintf(stderr, "felt leases: %v\n", err)
			return 1
		}
		return 0
	}
	printLeases(stdout, out)
	return 0
}

// openShared opens the store felt shares, as plugin.Build picks it, for
// reading. The embedded store is locked while a felt runs on it: then a
// consistent copy is read instead (copyBolt).
func openShared(s plugin.Settings) (kv.Store, string, error) {
	if s.ConsulAddr != "" {
		st, err := consulkv.New(consulapi.DefaultConfig()) // reads CONSUL_HTTP_ADDR, _TOKEN, _CACERT... as felt does
		if err != nil {
			return nil, "", err
		}
		return st, "consul " + st.Addr(), nil
	}
	path := filepath.Join(s.StateDir, "felt.db")
	where := "embedded store " + path
	if _, err := os.Stat(path); err != nil {
		return nil, "", fmt.Errorf("%s (FELT_STATE_DIR=%s; set CONSUL_HTTP_ADDR to read Consul): %w", where, s.StateDir, err)
	}
	st, err := boltkv.Open(path)
	if err == nil {
		return st, where, nil
	}
	if !errors.Is(err, bolterrors.ErrTimeout) {
		return nil, "", err
	}
	// A running felt holds the file's lock.
	cp, err := copyBolt(path)
	if err != nil {
		return nil, "", fmt.Errorf("%s is in use by a running felt, and reading a copy failed: %w", where, err)
	}
	return cp, where + " (a copy: felt is running)", nil
}

// copyBolt opens a consistent copy of the bbolt file at path, which a
// running felt holds locked. bbolt never overwrites the pages its current
// meta page refers to until a later commit has replaced that meta page, so
// a copy taken while both meta pages stay unchanged is a consistent
// snapshot; a copy during which a commit landed is taken again.
func copyBolt(path string) (kv.Store, error) {
	metaLen := 2 * os.Getpagesize() // bbolt's two meta pages, at its default page size
	dir, err := os.MkdirTemp("", "felt-leases-")
	if err != nil {
		return nil, err
	}
	var last error
	for range 5 {
		before, err := readHead(path, metaLen)
		if err != nil {
			last = err
			break
		}
		data, err := os.ReadFile(path)
		if err != nil {
			last = err
			break
		}
		after, err := readHead(path, metaLen)
		if err != nil || string(before) != string(after) {
			last = cmp.Or(err, errors.New("the file kept changing (felt is committing)"))
			continue
		}
		cp := filepath.Join(dir, "felt.db")
		if err := os.WriteFile(cp, data, 0o600); err != nil {
			last = err
			break
		}
		st, err := boltkv.Open(cp)
		if err != nil {
			last = err
			continue
		}
		return removeOnClose{Store: st, dir: dir}, nil
	}
	os.RemoveAll(dir)
	return nil, last
}

func readHead(path string, n int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b := make([]byte, n)
	k, err := io.ReadFull(f, b)
	if errors.Is(err, io.ErrUnexpectedEOF) {
		err = nil
	}
	return b[:k], err
}

// removeOnClose is a store on a temporary copy, removed with it.
type removeOnClose struct {
	kv.Store
	dir string
}

func (s removeOnClose) Close() error {
	err := s.Store.Close()
	os.RemoveAll(s.dir)
	return err
}

// printLeases writes the two tables people read.
func printLeases(w io.Writer, out leasesOutput) {
	fmt.Fprintf(w, "store: %s, prefix %s\n\n", out.Store, out.Prefix)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "NETWORK POOL\tBACKEND\tVNI\tPORT\tMTU\tSUBNET LEN\tCLUSTER NETWORK\n")
	for _, n := range out.Networks {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", n.Pool, dash(n.Backend), num(n.VNI), num(n.Port), mtu(n.MTU),
			n.SubnetLen, declaration(n.Cluster))
	}
	if len(out.Networks) == 0 {
		fmt.Fprintf(tw, "(none)\n")
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "POOL\tSUBNET\tHOST\tPUBLIC IP\tEXPIRES\n")
	for _, l := range out.Leases {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", l.Pool, l.Subnet, l.HostID, l.PublicIP, expiry(l, out.Now))
	}
	if len(out.Leases) == 0 {
		fmt.Fprintf(tw, "(none)\n")
	}
	tw.Flush()
}

func dash(s string) string { return cmp.Or(s, "-") }

func num(v int) string {
	if v == 0 {
		return "-"
	}
	return strconv.Itoa(v)
}

// mtu is a record's MTU; 0 means each host derives it from its underlay.
func mtu(v int) string {
	if v == 0 {
		return "auto"
	}
	return strconv.Itoa(v)
}

// declaration describes a record's cluster declaration in one cell.
func declaration(d *lease.Declaration) string {
	switch {
	case d == nil:
		return "-"
	case d.Removed != nil:
		return fmt.Sprintf("%s (removed by %s at %s)", d.Name, short(d.Removed.By), d.Removed.At.UTC().Format(time.RFC3339))
	}
	var extra []string
	if d.Internal {
		extra = append(extra, "internal")
	}
	if d.Attachable {
		extra = append(extra, "attachable")
	}
	if d.IPRange.IsValid() {
		extra = append(extra, "ip-range "+d.IPRange.String())
	}
	extra = append(extra, "declared by "+short(d.By))
	return d.Name + " (" + strings.Join(extra, ", ") + ")"
}

// short is a host ID's instance: the first 8 characters, as in felt's
// kernel marks and logs.
func short(id string) string { return id[:min(8, len(id))] }

func expiry(l lease.Lease, now time.Time) string {
	switch {
	case l.Expiry.IsZero():
		return "never"
	case l.Expired(now):
		return fmt.Sprintf("%s (expired %s ago)", l.Expiry.UTC().Format(time.RFC3339), now.Sub(l.Expiry).Round(time.Second))
	}
	return fmt.Sprintf("%s (in %s)", l.Expiry.UTC().Format(time.RFC3339), l.Expiry.Sub(now).Round(time.Second))
}
