package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/felt-net/felt/plugin"
)

const statusUsage = `usage: felt status [--json] [--socket PATH]

Asks the felt running on this host (over its plugin socket) what it is
doing: this host, the store, each felt network with this host's lease, each
peer and whether it is reachable THROUGH the overlay (felt probes every
peer's gateway, with a small and a full-size packet), drift between the
leases and the kernel, and a PROBLEMS section saying what to check.

The socket is found by itself: a managed plugin's under
/run/docker/plugins/<plugin ID>/felt.sock, a bare felt's at
/run/docker/plugins/felt.sock (or FELT_SOCKET). --socket names it.

Exit status: 0 all is well, 1 something is wrong (a peer unreachable, the
store down, drift, felt starting or failed), 2 usage error or no felt found.
`

// pluginsDir is where Docker keeps plugin sockets: managed plugins' in a
// directory named by their 64-hex ID, a bare binary's at the top.
const pluginsDir = "/run/docker/plugins"

// statusTimeout bounds one status call: felt bounds its own store request
// to 2 s, so a felt that does not answer within this is stuck.
const statusTimeout = 10 * time.Second

// runStatus is `felt status`.
func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer, lookup func(string) (string, bool)) int {
	return runStatusIn(ctx, pluginsDir, args, stdout, stderr, lookup)
}

func runStatusIn(ctx context.Context, dir string, args []string, stdout, stderr io.Writer, lookup func(string) (string, bool)) int {
	fs := flag.NewFlagSet("felt status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, statusUsage) }
	asJSON := fs.Bool("json", false, "print JSON instead of text")
	socket := fs.String("socket", "", "the felt plugin socket to ask")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "felt status: unexpected argument %q\n%s", fs.Arg(0), statusUsage)
		return 2
	}
	var st plugin.Status
	var err error
	if *socket != "" {
		st, err = askStatus(ctx, *socket)
		if err != nil {
			fmt.Fprintf(stderr, "felt status: --socket %s: %v\n", *socket, err)
			return 2
		}
	} else {
		var tried []string
		env, _ := lookup("FELT_SOCKET")
		st, *socket, tried, err = discover(ctx, dir, strings.TrimSpace(env))
		if err != nil {
			fmt.Fprintf(stderr, "felt status: %v\n", err)
			if len(tried) > 0 {
				fmt.Fprintf(stderr, "sockets tried:\n  %s\n", strings.Join(tried, "\n  "))
			}
			return 2
		}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(st); err != nil {
			fmt.Fprintf(stderr, "felt status: %v\n", err)
			return 1
		}
	} else {
		printStatus(stdout, *socket, st)
	}
	if st.State != plugin.StatusRunning || len(st.Problems) > 0 {
		return 1
	}
	return 0
}

// pluginID is a managed plugin's directory name.
var pluginID = regexp.MustCompile(`^[0-9a-f]{64}$`)

// candidates are the sockets a felt may listen on, in dir: FELT_SOCKET
// if set, every managed plugin's felt.sock, the bare binary's.
func candidates(dir, env string) []string {
	var out []string
	if env != "" {
		out = append(out, env)
	}
	matches, _ := filepath.Glob(filepath.Join(dir, "*", "felt.sock"))
	for _, m := range matches {
		if pluginID.MatchString(filepath.Base(filepath.Dir(m))) {
			out = append(out, m)
		}
	}
	out = append(out, filepath.Join(dir, "felt.sock"))
	return slices.Compact(out)
}

// discover asks every candidate socket and keeps the felt that answers:
// none is an error, and so are several (the user picks with --socket).
func discover(ctx context.Context, dir, env string) (plugin.Status, string, []string, error) {
	var found []string
	var st plugin.Status
	var tried []string
	for _, sock := range candidates(dir, env) {
		if _, err := os.Stat(sock); err != nil {
			continue
		}
		s, err := askStatus(ctx, sock)
		if err != nil {
			tried = append(tried, sock+": "+err.Error())
			continue
		}
		found = append(found, sock)
		st = s
	}
	switch len(found) {
	case 0:
		hint := ""
		if os.Geteuid() != 0 {
			hint = "; run as root: Docker's plugin directory is root's"
		}
		return st, "", tried, fmt.Errorf("no running felt found under %s (is the plugin enabled? `docker plugin ls`); name its socket with --socket%s", dir, hint)
	case 1:
		return st, found[0], nil, nil
	default:
		return st, "", nil, fmt.Errorf("several felts answer; pick one with --socket:\n  %s", strings.Join(found, "\n  "))
	}
}

// askStatus POSTs felt's status call to the socket.
func askStatus(ctx context.Context, sock string) (plugin.Status, error) {
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://felt"+plugin.StatusPath, bytes.NewReader([]byte("{}")))
	if err != nil {
		return plugin.Status{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	r, err := c.Do(req)
	if err != nil {
		return plugin.Status{}, err
	}
	defer r.Body.Close()
	b, err := io.ReadAll(io.LimitReader(r.Body, 64<<20))
	if err != nil {
		return plugin.Status{}, err
	}
	if r.StatusCode != http.StatusOK {
		// A felt from before the status call answers 404.
		return plugin.Status{}, fmt.Errorf("%s: %s", r.Status, strings.TrimSpace(string(b)))
	}
	var st plugin.Status
	if err := json.Unmarshal(b, &st); err != nil {
		return plugin.Status{}, fmt.Errorf("not felt's status: %w", err)
	}
	if st.State == "" {
		return plugin.Status{}, errors.New("not felt's status: no state")
	}
	return st, nil
}

// printStatus renders st for people: aligned tables, then the problems.
func printStatus(w io.Writer, socket string, st plugin.Status) {
	switch st.State {
	case plugin.StatusStarting:
		fmt.Fprintf(w, "felt (%s) is starting: its state store is not open yet; try again in a few seconds\n", socket)
		return
	case plugin.StatusFailed:
		fmt.Fprintf(w, "felt (%s) could not start: %s\n(it answers every Docker call with this error; fix it and restart the plugin)\n", socket, st.Error)
		return
	}
	now := st.Time
	h := st.Host
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "host:\t%s  public IP %s  underlay %s (MTU %d)  felt %s\n", short(h.ID), orDash(addrString(h.PublicIP)), orDash(h.Underlay), h.UnderlayMTU, h.Version)
	store := st.Store.Kind
	if st.Store.Addr != "" {
		store += " " + st.Store.Addr
	}
	store += " (prefix " + st.Store.Prefix + "): "
	if st.Store.Reachable {
		store += "reachable"
	} else {
		store += "UNREACHABLE: " + st.Store.Detail
	}
	fmt.Fprintf(tw, "store:\t%s\n", store)
	if st.Cluster.On {
		fmt.Fprintf(tw, "cluster networks:\ton\n")
	} else {
		fmt.Fprintf(tw, "cluster networks:\toff: %s\n", st.Cluster.Why)
	}
	if st.Probes.On {
		fmt.Fprintf(tw, "peer probes:\tevery %s\n", time.Duration(st.Probes.Interval*float64(time.Second)))
	} else {
		fmt.Fprintf(tw, "peer probes:\toff (FELT_PROBE_INTERVAL=0)\n")
	}
	sync := "in sync with the leases"
	if !st.InSync {
		sync = "NOT in sync with the leases"
	}
	fmt.Fprintf(tw, "overlay:\t%s\n", sync)
	tw.Flush()

	fmt.Fprintln(w)
	if len(st.Networks) == 0 {
		fmt.Fprintln(w, "no felt networks on this host")
	} else {
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "NETWORK\tNAME\tPOOL\tBACKEND\tVNI\tMTU\tSUBNET (THIS HOST)\tGATEWAY\tLEASE\tENDPOINTS\tPEERS")
		for _, n := range st.Networks {
			vni := "-"
			if n.VNI != 0 {
				vni = fmt.Sprint(n.VNI)
			}
			backend := n.Backend
			if n.DirectRouting {
				backend += "+direct"
			}
			if n.WireGuard != nil {
				backend += "/" + n.WireGuard.Implementation
			}
			if n.Internal {
				backend += " (internal)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%d\t%d\n", shortNet(n.ID), orDash(n.Name), n.Pool, backend, vni, n.MTU,
				n.Subnet, addrString(n.Gateway), expiresIn(n.LeaseExpiry, now), n.Endpoints, len(n.Peers))
		}
		tw.Flush()
	}
	for _, n := range st.Networks {
		if len(n.Peers) == 0 {
			continue
		}
		title := n.Pool.String()
		if n.Name != "" {
			title += " (" + n.Name + ")"
		}
		fmt.Fprintf(w, "\npeers of %s, probed through the overlay:\n", title)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "HOST\tPUBLIC IP\tSUBNET\tGATEWAY\tLEASE\tOVERLAY\tFULL-SIZE\tRTT\tSINCE")
		for _, p := range n.Peers {
			overlay, full, rtt, since := "-", "-", "-", "-"
			switch {
			case p.Expired:
				overlay = "lease expired"
			case p.Refused != "":
				overlay = "REFUSED" // why: under PROBLEMS
			case !st.Probes.On:
				overlay = "not probed"
			case !p.Probed:
				overlay = "probing…"
			case p.Reachable:
				overlay = "reachable"
				full = "ok"
				if !p.MTUOK {
					full = "LOST"
				}
				rtt = fmt.Sprintf("%.2fms", p.RTTSeconds*1000)
			default:
				overlay = "UNREACHABLE"
			}
			if p.Probed && !p.Since.IsZero() {
				since = age(now.Sub(p.Since)) + " ago"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", short(p.HostID), addrString(p.PublicIP), p.Subnet, addrString(p.Gateway),
				expiresIn(p.LeaseExpiry, now), overlay, full, rtt, since)
		}
		tw.Flush()
	}
	for _, n := range st.Networks {
		if n.WireGuard != nil {
			printWireGuard(w, n, now)
		}
	}
	if len(st.Drift) > 0 {
		fmt.Fprintln(w, "\ndrift between the leases and the kernel:")
		for _, d := range st.Drift {
			if d.Network != "" {
				fmt.Fprintf(w, "  network %s: %s\n", shortNet(d.Network), d.What)
			} else {
				fmt.Fprintf(w, "  %s\n", d.What)
			}
		}
	}
	fmt.Fprintln(w)
	if len(st.Problems) == 0 {
		fmt.Fprintln(w, "no problems found")
		return
	}
	fmt.Fprintln(w, "PROBLEMS:")
	for _, p := range st.Problems {
		fmt.Fprintf(w, "  %s: check: %s\n", p.What, p.Check)
	}
}

// printWireGuard shows a wireguard network's device as WireGuard reports
// it: which WireGuard runs it, this host's key, and each peer's key,
// endpoint, latest handshake and traffic.
func printWireGuard(w io.Writer, n plugin.NetworkStatus, now time.Time) {
	wg := n.WireGuard
	title := n.Pool.String()
	if n.Name != "" {
		title += " (" + n.Name + ")"
	}
	impl := wg.Implementation
	switch impl {
	case "kernel":
		impl = "kernel WireGuard"
	case "userspace":
		impl = "wireguard-go in user space"
	}
	fmt.Fprintf(w, "\nwireguard of %s: %s, device %s, port %d, public key %s\n", title, impl, wg.Device, wg.ListenPort, orDash(wg.PublicKey))
	if wg.Error != "" {
		fmt.Fprintf(w, "  DEVICE UNREADABLE: %s\n", wg.Error)
	}
	if len(wg.Peers) == 0 {
		fmt.Fprintln(w, "  no WireGuard peers")
		return
	}
	// The host whose lease holds the peer's subnet.
	hosts := map[string]string{}
	for _, p := range n.Peers {
		hosts[p.Subnet.String()] = short(p.HostID)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOST\tPEER PUBLIC KEY\tENDPOINT\tALLOWED IPS\tLATEST HANDSHAKE\tRECEIVED\tSENT")
	for _, p := range wg.Peers {
		hs := "never"
		if !p.LatestHandshake.IsZero() {
			hs = age(now.Sub(p.LatestHandshake)) + " ago"
		}
		host := "-"
		if len(p.AllowedIPs) > 0 && hosts[p.AllowedIPs[0]] != "" {
			host = hosts[p.AllowedIPs[0]]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", host, p.PublicKey, orDash(p.Endpoint), orDash(strings.Join(p.AllowedIPs, ",")), hs,
			byteCount(p.RxBytes), byteCount(p.TxBytes))
	}
	tw.Flush()
}

// byteCount is a byte counter for people, in binary units.
func byteCount(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

// expiresIn is a lease's expiry relative to now.
func expiresIn(t, now time.Time) string {
	switch {
	case t.IsZero():
		return "none"
	case t.Before(now):
		return "EXPIRED " + age(now.Sub(t)) + " ago"
	default:
		return "expires in " + age(t.Sub(now))
	}
}

// age is a duration for people: to the second, without fractions.
func age(d time.Duration) string {
	d = d.Round(time.Second)
	if d >= time.Hour {
		d = d.Round(time.Minute)
	}
	s := d.String()
	s = strings.TrimSuffix(s, "0s")
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	if s == "" {
		return "0s"
	}
	return s
}

// shortNet is a Docker network ID as `docker network ls` shows it.
func shortNet(id string) string { return id[:min(12, len(id))] }

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func addrString[T interface {
	IsValid() bool
	String() string
}](a T) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}
