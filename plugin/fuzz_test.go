package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/felt-net/felt/driver"
	"github.com/felt-net/felt/ipam"
	"github.com/felt-net/felt/kv/boltkv"
	"github.com/felt-net/felt/lease"
	"github.com/felt-net/felt/overlay"
	"github.com/felt-net/felt/overlay/backends"
	"github.com/felt-net/felt/state"
	"github.com/felt-net/felt/testkit"
	"github.com/felt-net/felt/testkit/netns"
)

// FuzzSocketAPI drives the plugin's HTTP handler, decoding included, with
// real drivers on a temp store, as Docker would over the socket. An input is
// a script: one call per line, the path up to the first space and the JSON
// body after it. In bodies, $POOLID, $SUBNET and $GW stand for the answer
// of the script's last successful RequestPool and $ADDR for its last
// RequestAddress, so mutations reach the calls behind a network's creation.
//
// Every call must be answered with valid JSON (an error object with "Err"
// and "Error" for any non-200 status) and no handler may panic: the server
// recovers panics so Docker gets an answer, and counts them, and any count
// fails the input.
//
// Kernel calls: as root the driver works in a test network namespace,
// emptied of links before each input so every input starts from the same
// state. Without root it gets a netlink handle in the current namespace,
// where the kernel refuses every change (EPERM): the handlers still answer
// every input, with errors where they would change links. The store is
// wiped before each input as well. No firewall or overlay: they are driven
// by networks that exist, which the driver tests and integration tests
// cover; this target is about what a request can do to the handlers.
//
// Seeds: plugin/testdata/fuzz/FuzzSocketAPI/, run by the normal `go test`.
// Fuzz with
//
//	go test -run '^$' -fuzz FuzzSocketAPI -fuzztime 5m -fuzzminimizetime 5s -parallel 1 ./plugin/
//
// (the default minimization time of 60 s per new interesting input makes
// the fuzzer look stalled for a minute at a time).
func FuzzSocketAPI(f *testing.F) {
	w := newFuzzWorld(f)
	f.Fuzz(func(t *testing.T, script string) {
		if len(script) > maxScript {
			return
		}
		w.reset(t)
		w.run(t, script)
	})
}

// maxScriptCalls and maxScript bound one input, so its cost stays bounded
// however the fuzzer grows it: inputs of megabytes made the fuzzer spend
// its time minimizing them. Huge fields and bodies are covered by
// TestSocketAPIHugeInput instead.
const (
	maxScriptCalls = 24
	maxScript      = 64 << 10
)

// Huge bodies and fields are answered with JSON errors (413 over
// MaxRequestBody), no handler panics, and error text stays short.
func TestSocketAPIHugeInput(t *testing.T) {
	w := newFuzzWorld(t)
	for _, script := range hugeScripts() {
		w.reset(t)
		codes := w.run(t, script)
		if len(codes) != 1 || codes[0] == http.StatusOK {
			t.Fatalf("%.100s...: answered %v, want one error", script, codes)
		}
	}
}

type fuzzWorld struct {
	srv  *Server
	st   *state.Store
	kv   *boltkv.Store
	ns   *netns.NS // nil without root
	logs *testkit.LogBuffer
}

func newFuzzWorld(f testing.TB) *fuzzWorld {
	w := &fuzzWorld{logs: &testkit.LogBuffer{}}
	var nl *netlink.Handle
	if os.Geteuid() == 0 {
		w.ns = netns.New(f, "fuzz")
		nl = w.ns.NL
	} else {
		h, err := netlink.NewHandle()
		if err != nil {
			f.Fatalf("netlink: %v", err)
		}
		f.Cleanup(h.Close)
		nl = h
	}
	dir := f.TempDir()
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		// A store in memory: the wipe before each input costs no fsync.
		if d, err := os.MkdirTemp("/dev/shm", "felt-fuzz-"); err == nil {
			dir = d
			f.Cleanup(func() { os.RemoveAll(d) })
		}
	}
	kv, err := boltkv.Open(dir + "/felt.db")
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { kv.Close() })
	w.kv, w.st = kv, state.New(kv)
	log := slog.New(slog.NewTextHandler(w.logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
	reg := lease.NewRegistry(kv, "felt/", nil)
	drv := driver.New(driver.Config{State: w.st, Registry: reg, Netlink: nl, Backends: backends.All(overlay.BackendConfig{}), Instance: "fuzzinst", Log: log})
	ipamDrv := ipam.New(ipam.Config{
		State: w.st, Registry: reg, Log: log, TTL: time.Hour,
		Owner: func(context.Context, netip.Prefix) (lease.Owner, error) {
			return lease.Owner{HostID: "fuzz-host", PublicIP: netip.MustParseAddr("192.0.2.1"), BackendData: json.RawMessage(`{"vtepMAC":"02:00:00:00:00:01"}`)}, nil
		},
	})
	w.srv = NewServer(log, time.Second)
	w.srv.SetReady(Drivers{Network: drv, IPAM: ipamDrv})
	return w
}

// reset empties the store and, in the test namespace, removes every link
// but lo, so each input starts from nothing.
func (w *fuzzWorld) reset(t *testing.T) {
	ctx := context.Background()
	pairs, _, err := w.kv.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pairs {
		if err := w.kv.Delete(ctx, p.Key); err != nil {
			t.Fatal(err)
		}
	}
	if w.ns != nil {
		links, err := w.ns.NL.LinkList()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range links {
			if l.Attrs().Name != "lo" {
				_ = w.ns.NL.LinkDel(l) // a veth's peer may have gone with it
			}
		}
	}
	w.logs.Reset()
}

// run sends the script's calls, checks each answer and returns the
// statuses.
func (w *fuzzWorld) run(t *testing.T, script string) []int {
	var codes []int
	vars := map[string]string{}
	calls := 0
	for line := range strings.SplitSeq(script, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		if calls++; calls > maxScriptCalls {
			break
		}
		path, body, _ := strings.Cut(line, " ")
		for k, v := range vars {
			body = strings.ReplaceAll(body, k, v)
		}
		code, answer := w.call(t, path, body)
		if code == http.StatusOK {
			remember(vars, path, answer)
		}
		codes = append(codes, code)
	}
	return codes
}

func (w *fuzzWorld) call(t *testing.T, path, body string) (int, []byte) {
	before := w.srv.Panics()
	req := (&http.Request{
		Method: http.MethodPost,
		URL:    &url.URL{Path: path},
		Header: http.Header{"Content-Type": {"application/vnd.docker.plugins.v1.2+json"}},
		Body:   io.NopCloser(strings.NewReader(body)),
	}).WithContext(t.Context())
	rec := httptest.NewRecorder()
	w.srv.ServeHTTP(rec, req)
	answer := rec.Body.Bytes()
	if w.srv.Panics() != before {
		t.Fatalf("%s %.300q: the handler panicked\n%s", quoted(path), body, w.logs.String())
	}
	if !json.Valid(answer) {
		t.Fatalf("%s %.300q: answer %d is not JSON: %.300q", quoted(path), body, rec.Code, answer)
	}
	if rec.Code != http.StatusOK {
		var e struct{ Err, Error *string }
		if err := json.Unmarshal(answer, &e); err != nil || e.Err == nil || *e.Err == "" || e.Error == nil || *e.Error != *e.Err {
			t.Fatalf("%s %.300q: answer %d is not an error object with Err and Error: %.300q", quoted(path), body, rec.Code, answer)
		}
		if len(*e.Err) > maxErrorText+100 {
			t.Fatalf("%s %.300q: error of %d bytes", quoted(path), body, len(*e.Err))
		}
	}
	return rec.Code, answer
}

// remember keeps what later calls of a script refer to.
func remember(vars map[string]string, path string, answer []byte) {
	switch path {
	case "/IpamDriver.RequestPool":
		var r struct {
			PoolID, Pool string
			Data         map[string]string
		}
		if json.Unmarshal(answer, &r) == nil {
			vars["$POOLID"], vars["$SUBNET"], vars["$GW"] = r.PoolID, r.Pool, r.Data["com.docker.network.gateway"]
		}
	case "/IpamDriver.RequestAddress":
		var r struct{ Address string }
		if json.Unmarshal(answer, &r) == nil {
			vars["$ADDR"] = r.Address
		}
	}
}

// hugeScripts are single calls with megabyte bodies or 100 kB fields.
func hugeScripts() []string {
	huge := strings.Repeat("7", 2*MaxRequestBody)
	big := strings.Repeat("1", 100_000)
	return []string{
		"/IpamDriver.RequestPool " + fmt.Sprintf(`{"Pool":%q}`, huge),
		"/IpamDriver.RequestPool " + fmt.Sprintf(`{"Pool":%q,"SubPool":%q,"Options":{%q:%q}}`, big, big, big, big),
		"/NetworkDriver.CreateNetwork " + fmt.Sprintf(`{"NetworkID":%q,"Options":{"com.docker.network.generic":{%q:%q}},"IPv4Data":[{"Pool":%q,"Gateway":%q}]}`, big, big, big, big, big),
		"/NetworkDriver.CreateEndpoint " + fmt.Sprintf(`{"NetworkID":%q,"EndpointID":%q,"Interface":{"Address":%q,"MacAddress":%q}}`, big, big, big, big),
		"/NetworkDriver.Join " + strings.Repeat("[", 100_000),
	}
}
