package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeDocker is a Docker Engine API on a unix socket: /_ping answers with
// its API version, and every other request must carry that version in its
// path (as a negotiating client's do) and is answered by routes, keyed by
// "METHOD /path" without the version. Everything it receives is recorded.
type fakeDocker struct {
	t       *testing.T
	sock    string
	version string
	routes  map[string]http.HandlerFunc
	srv     *httptest.Server

	mu    sync.Mutex
	reqs  []fakeReq
	pings atomic.Int64
}

type fakeReq struct {
	Method, Path, Query string
	Body                []byte
}

// newFakeDocker serves on sock (made in a fresh temporary directory if "").
func newFakeDocker(t *testing.T, sock, version string, routes map[string]http.HandlerFunc) *fakeDocker {
	t.Helper()
	if sock == "" {
		sock = filepath.Join(t.TempDir(), "docker.sock")
	}
	f := &fakeDocker{t: t, sock: sock, version: version, routes: routes}
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	f.srv.Listener = l
	f.srv.Start()
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeDocker) host() string { return "unix://" + f.sock }

func (f *fakeDocker) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.reqs = append(f.reqs, fakeReq{r.Method, r.URL.Path, r.URL.RawQuery, body})
	f.mu.Unlock()
	w.Header().Set("Api-Version", f.version)
	if r.URL.Path == "/_ping" {
		f.pings.Add(1)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprint(w, "OK")
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/v"+f.version+"/")
	if !ok {
		apiError(w, http.StatusBadRequest, "fake daemon speaks API "+f.version+" only: "+r.URL.Path)
		return
	}
	key := r.Method + " /" + rest
	for pattern, h := range f.routes {
		// A trailing * matches any rest of the path (an ID).
		if p, wild := strings.CutSuffix(pattern, "*"); pattern == key || wild && strings.HasPrefix(key, p) {
			r.Body = io.NopCloser(strings.NewReader(string(body)))
			h(w, r)
			return
		}
	}
	apiError(w, http.StatusNotFound, "page not found")
}

// requests returns what the fake received, pings included.
func (f *fakeDocker) requests() []fakeReq {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeReq(nil), f.reqs...)
}

// apiError answers as dockerd does: JSON {"message": …}.
func apiError(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"message": msg})
}

func jsonAnswer(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, body)
	}
}

const (
	pluginID = "8b2c6e0f3f1d4e8a9c2b7a6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f"
	feltID   = "4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f8b2c6e0f3f1d4e8a9c2b7a6d5e"
)

// The JSON of API 1.41 (Docker 20.10.24): a felt network created with
// -o, --ipam-opt, --ip-range, --label, --internal.
const feltNet141 = `{"Name":"blue","Id":"` + feltID + `","Created":"2026-12-01T10:02:56.331700679Z","Scope":"local","Driver":"felt:latest","EnableIPv6":false,` +
	`"IPAM":{"Driver":"felt:latest","Options":{"x":"1"},"Config":[{"Subnet":"10.42.0.0/16","IPRange":"10.42.7.0/24","Gateway":"10.42.7.1"}]},` +
	`"Internal":true,"Attachable":false,"Ingress":false,"ConfigFrom":{"Network":""},"ConfigOnly":false,` +
	`"Containers":%s,"Options":{"vni":"42"},"Labels":{"team":"a"}}`

const bridgeNet141 = `{"Name":"bridge","Id":"13239b4c2c44b781e262c949d682b423fe39aade7fb411855bcb86af514a84e5","Created":"2026-12-01T10:02:56.331700679Z","Scope":"local","Driver":"bridge","EnableIPv6":false,` +
	`"IPAM":{"Driver":"default","Options":null,"Config":[{"Subnet":"172.17.0.0/16"}]},"Internal":false,"Attachable":false,"Ingress":false,"ConfigFrom":{"Network":""},"ConfigOnly":false,` +
	`"Containers":{},"Options":{"com.docker.network.bridge.default_bridge":"true"},"Labels":{}}`

const twoContainers = `{"c1":{"Name":"a","EndpointID":"e1","MacAddress":"02:42:0a:2a:07:02","IPv4Address":"10.42.7.2/24","IPv6Address":""},` +
	`"c2":{"Name":"b","EndpointID":"e2","MacAddress":"02:42:0a:2a:07:03","IPv4Address":"10.42.7.3/24","IPv6Address":""}}`

// testEngine is an engine on f that finds no plugin mount and so is "felt:latest"
// (the fallback), with short timeouts.
func testEngine(f *fakeDocker) *dockerEngine {
	e := newEngine(EngineConfig{Host: f.host(), FallbackName: "felt:latest"})
	e.mountinfo = func() ([]byte, error) { return []byte(hostMountinfo), nil }
	e.short, e.long = 2*time.Second, 2*time.Second
	return e
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestEngineNegotiatesAndListsByDriver(t *testing.T) {
	f := newFakeDocker(t, "", "1.41", map[string]http.HandlerFunc{
		// A daemon that ignored the filter: the bridge must still be dropped.
		"GET /networks": jsonAnswer("[" + fmt.Sprintf(feltNet141, "{}") + "," + bridgeNet141 + "]"),
	})
	e := testEngine(f)
	nets, err := e.Networks(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	want := Net{ID: feltID, Name: "blue", Driver: "felt:latest", Subnet: netip.MustParsePrefix("10.42.0.0/16"),
		IPRange: netip.MustParsePrefix("10.42.7.0/24"), DriverOpts: map[string]string{"vni": "42"}, IPAMOpts: map[string]string{"x": "1"},
		Labels: map[string]string{"team": "a"}, Internal: true, Containers: -1}
	if len(nets) != 1 || fmt.Sprint(nets[0]) != fmt.Sprint(want) {
		t.Fatalf("Networks = %+v\nwant [%+v]", nets, want)
	}
	var list *fakeReq
	for _, r := range f.requests() {
		if r.Path == "/v1.41/networks" {
			list = &r
		}
		if strings.HasPrefix(r.Path, "/v1.5") {
			t.Errorf("request %s used the client's own version, not the negotiated 1.41", r.Path)
		}
	}
	if list == nil {
		t.Fatalf("no GET /v1.41/networks among %+v", f.requests())
	}
	q, _ := urlQuery(list.Query)
	var filters map[string]map[string]bool
	if err := json.Unmarshal([]byte(q.Get("filters")), &filters); err != nil {
		t.Fatalf("filters %q: %v", q.Get("filters"), err)
	}
	// "-d felt" makes networks of driver "felt" served by felt:latest.
	if len(filters) != 1 || !filters["driver"]["felt:latest"] || !filters["driver"]["felt"] || len(filters["driver"]) != 2 {
		t.Errorf("filters = %v, want driver = felt:latest, felt", filters)
	}
}

func TestEngineCreateSendsTheDeclaration(t *testing.T) {
	var body []byte
	f := newFakeDocker(t, "", "1.41", map[string]http.HandlerFunc{
		"POST /networks/create": func(w http.ResponseWriter, r *http.Request) {
			body, _ = io.ReadAll(r.Body)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusCreated)
			// 20.10 creates a duplicate name with only this warning.
			fmt.Fprintf(w, `{"Id":%q,"Warning":"Network with name blue (id : 1234) already exists"}`, feltID)
		},
	})
	e := testEngine(f)
	id, warnings, err := e.Create(ctxT(t), CreateRequest{Name: "blue", Pool: netip.MustParsePrefix("10.42.0.0/16"), IPRange: netip.MustParsePrefix("10.42.7.0/24"),
		DriverOpts: map[string]string{"vni": "42"}, IPAMOpts: map[string]string{"x": "1"}, Labels: map[string]string{"team": "a"}, Internal: true, Attachable: true})
	if err != nil {
		t.Fatal(err)
	}
	if id != feltID || len(warnings) != 1 || !strings.Contains(warnings[0], "already exists") {
		t.Errorf("Create = %q, %q", id, warnings)
	}
	var got map[string]any
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("create body %s: %v", body, err)
	}
	if _, ok := got["EnableIPv4"]; ok {
		t.Error("create body sets EnableIPv4, which Docker before 28 does not know")
	}
	want := `{"Attachable":true,"ConfigFrom":null,"ConfigOnly":false,"Driver":"felt:latest","EnableIPv6":false,` +
		`"IPAM":{"Config":[{"IPRange":"10.42.7.0/24","Subnet":"10.42.0.0/16"}],"Driver":"felt:latest","Options":{"x":"1"}},"Ingress":false,` +
		`"Internal":true,"Labels":{"team":"a"},"Name":"blue","Options":{"vni":"42"},"Scope":""}`
	if g, _ := json.Marshal(got); string(g) != want {
		t.Errorf("create body\n got %s\nwant %s", g, want)
	}

	// Without a range, the IPAM config has none (a zero prefix would be
	// sent as "" and refused).
	if _, _, err := e.Create(ctxT(t), CreateRequest{Name: "red", Pool: netip.MustParsePrefix("10.43.0.0/16")}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(body), "IPRange") || !strings.Contains(string(body), `"Config":[{"Subnet":"10.43.0.0/16"}]`) {
		t.Errorf("create body without range: %s", body)
	}
}

func TestEngineRemove(t *testing.T) {
	f := newFakeDocker(t, "", "1.41", map[string]http.HandlerFunc{
		"DELETE /networks/gone": func(w http.ResponseWriter, r *http.Request) {
			apiError(w, http.StatusNotFound, "network gone not found")
		},
		"DELETE /networks/busy": func(w http.ResponseWriter, r *http.Request) {
			apiError(w, http.StatusForbidden, "error while removing network: network blue id busy has active endpoints")
		},
		"DELETE /networks/bridge": func(w http.ResponseWriter, r *http.Request) {
			apiError(w, http.StatusForbidden, "bridge is a pre-defined network and cannot be removed")
		},
		"DELETE /networks/ok": func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) },
	})
	e := testEngine(f)
	ctx := ctxT(t)
	if err := e.Remove(ctx, "ok"); err != nil {
		t.Errorf("Remove(ok) = %v", err)
	}
	if err := e.Remove(ctx, "gone"); err != nil {
		t.Errorf("Remove of a network already gone = %v, want nil", err)
	}
	err := e.Remove(ctx, "busy")
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "id busy has active endpoints") {
		t.Errorf("Remove(busy) = %v, want ErrInUse with Docker's message", err)
	}
	if err := e.Remove(ctx, "bridge"); err == nil || errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "pre-defined") {
		t.Errorf("Remove(bridge) = %v, want Docker's refusal, not ErrInUse", err)
	}
}

func TestEngineInspect(t *testing.T) {
	f := newFakeDocker(t, "", "1.41", map[string]http.HandlerFunc{
		"GET /networks/" + feltID: jsonAnswer(fmt.Sprintf(feltNet141, twoContainers)),
		"GET /networks/gone": func(w http.ResponseWriter, r *http.Request) {
			apiError(w, http.StatusNotFound, "network gone not found")
		},
	})
	e := testEngine(f)
	n, err := e.Inspect(ctxT(t), feltID)
	if err != nil {
		t.Fatal(err)
	}
	if n.Containers != 2 || n.Name != "blue" || n.Subnet != netip.MustParsePrefix("10.42.0.0/16") || n.DriverOpts["vni"] != "42" {
		t.Errorf("Inspect = %+v", n)
	}
	if _, err := e.Inspect(ctxT(t), "gone"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Inspect(gone) = %v, want ErrNotFound", err)
	}
}

// A network the client's netip types cannot decode fails the whole answer
// (moby/moby#52991); the error says what to do.
func TestEngineDecodeErrorHasHint(t *testing.T) {
	bad := strings.Replace(fmt.Sprintf(feltNet141, "{}"), `"Gateway":"10.42.7.1"`, `"Gateway":"fd05::1/112"`, 1)
	f := newFakeDocker(t, "", "1.41", map[string]http.HandlerFunc{"GET /networks": jsonAnswer("[" + bad + "]")})
	_, err := testEngine(f).Networks(ctxT(t))
	if err == nil || !strings.Contains(err.Error(), "moby/moby#52991") {
		t.Errorf("Networks = %v, want the decode hint", err)
	}
}

func TestEngineSelf(t *testing.T) {
	inspected := atomic.Int64{}
	routes := map[string]http.HandlerFunc{
		"GET /plugins/" + pluginID + "/json": func(w http.ResponseWriter, r *http.Request) {
			inspected.Add(1)
			fmt.Fprintf(w, `{"Id":%q,"Name":"felt2:beta","Enabled":true,"Settings":{},"Config":{}}`, pluginID)
		},
		"GET /networks": jsonAnswer("[]"),
	}
	f := newFakeDocker(t, "", "1.41", routes)
	ctx := ctxT(t)

	// In a managed plugin: the name of the plugin whose ID is in our mounts.
	e := testEngine(f)
	e.mountinfo = func() ([]byte, error) { return []byte(pluginMountinfo), nil }
	for range 2 {
		if self, err := e.Self(ctx); err != nil || self != "felt2:beta" {
			t.Fatalf("Self = %q, %v; want felt2:beta", self, err)
		}
	}
	if _, err := e.Networks(ctx); err != nil {
		t.Fatal(err)
	}
	if n := inspected.Load(); n != 1 {
		t.Errorf("plugin inspected %d times, want once per client", n)
	}
	if q := f.requests()[len(f.requests())-1].Query; !strings.Contains(q, "felt2%3Abeta") {
		t.Errorf("list query %s does not filter by felt2:beta", q)
	}

	// The override wins, and Docker is not asked.
	e = testEngine(f)
	e.cfg.DriverName = "custom:1"
	e.mountinfo = func() ([]byte, error) { return []byte(pluginMountinfo), nil }
	if self, err := e.Self(ctx); err != nil || self != "custom:1" || inspected.Load() != 1 {
		t.Errorf("Self with DriverName = %q, %v (inspections %d)", self, err, inspected.Load())
	}

	// A bare binary: no plugin mount, the fallback.
	e = testEngine(f)
	if self, err := e.Self(ctx); err != nil || self != "felt:latest" {
		t.Errorf("Self of a bare binary = %q, %v", self, err)
	}
	e.cur = nil
	e.cfg.FallbackName = ""
	if _, err := e.Self(ctx); err == nil || !strings.Contains(err.Error(), "FELT_DRIVER_NAME") {
		t.Errorf("Self with nothing to go by = %v, want an error naming FELT_DRIVER_NAME", err)
	}

	// A plugin ID this engine does not know: the wrong FELT_DOCKER_HOST.
	e = testEngine(f)
	e.mountinfo = func() ([]byte, error) {
		return []byte(strings.ReplaceAll(pluginMountinfo, pluginID, strings.Repeat("a", 64))), nil
	}
	if _, err := e.Self(ctx); err == nil || !strings.Contains(err.Error(), "FELT_DOCKER_HOST") {
		t.Errorf("Self with an unknown plugin ID = %v, want an error naming FELT_DOCKER_HOST", err)
	}
}

// After a connection error the client is dropped: the next call pings and
// negotiates again (with a daemon that is now another version) and finds
// Self again.
func TestEngineReconnectsAfterConnectionError(t *testing.T) {
	inspected := atomic.Int64{}
	routes := map[string]http.HandlerFunc{
		"GET /plugins/*": func(w http.ResponseWriter, r *http.Request) {
			inspected.Add(1)
			fmt.Fprintf(w, `{"Id":%q,"Name":"felt:latest","Enabled":true,"Settings":{},"Config":{}}`, pluginID)
		},
		"GET /networks": jsonAnswer("[]"),
	}
	f := newFakeDocker(t, "", "1.41", routes)
	e := testEngine(f)
	e.mountinfo = func() ([]byte, error) { return []byte(pluginMountinfo), nil }
	ctx := ctxT(t)
	if _, err := e.Networks(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Networks(ctx); err != nil {
		t.Fatal(err)
	}
	if f.pings.Load() != 1 || inspected.Load() != 1 {
		t.Fatalf("pings %d, plugin inspections %d; want 1 each for one client", f.pings.Load(), inspected.Load())
	}

	f.srv.Close() // dockerd stops
	_, err := e.Networks(ctx)
	if err == nil {
		t.Fatal("Networks with dockerd gone succeeded")
	}
	if e.cur != nil {
		t.Errorf("client kept after %v", err)
	}
	g := newFakeDocker(t, f.sock, "1.44", routes) // dockerd is back, upgraded
	if _, err := e.Networks(ctx); err != nil {
		t.Fatal(err)
	}
	if g.pings.Load() != 1 || inspected.Load() != 2 {
		t.Errorf("after reconnecting: pings %d, plugin inspections %d; want 1 and 2", g.pings.Load(), inspected.Load())
	}
	for _, r := range g.requests() {
		if r.Path != "/_ping" && !strings.HasPrefix(r.Path, "/v1.44/") {
			t.Errorf("after reconnecting: %s, want API 1.44", r.Path)
		}
	}
}

// A daemon that accepts but does not answer (socket activation, a restore
// in progress) costs one timeout, then the client is dropped.
func TestEngineTimeoutDropsClient(t *testing.T) {
	hang := make(chan struct{})
	f := newFakeDocker(t, "", "1.41", map[string]http.HandlerFunc{
		"GET /networks/*": func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-hang:
			case <-r.Context().Done():
			}
		},
	})
	t.Cleanup(func() { close(hang) })
	e := testEngine(f)
	e.short = 200 * time.Millisecond
	_, err := e.Inspect(ctxT(t), "x")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Inspect of a hanging daemon = %v, want a deadline error", err)
	}
	if e.cur != nil {
		t.Error("client kept after a timeout")
	}

	// The caller's own cancellation is not the daemon's fault: keep it.
	ctx, cancel := context.WithCancel(ctxT(t))
	time.AfterFunc(50*time.Millisecond, cancel)
	e.short = 5 * time.Second
	if _, err := e.Inspect(ctx, "x"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Inspect cancelled = %v", err)
	}
	if e.cur == nil {
		t.Error("client dropped after the caller cancelled")
	}
}

func TestEngineWatchEvents(t *testing.T) {
	var query string
	f := newFakeDocker(t, "", "1.41", map[string]http.HandlerFunc{
		"GET /events": func(w http.ResponseWriter, r *http.Request) {
			query = r.URL.RawQuery
			w.Header().Set("Content-Type", "application/json")
			for _, ev := range []string{
				`{"Type":"network","Action":"create","Actor":{"ID":"n1","Attributes":{"name":"blue","type":"felt:latest"}},"scope":"local","time":1}`,
				`{"Type":"network","Action":"connect","Actor":{"ID":"n0","Attributes":{"container":"c","name":"bridge","type":"bridge"}},"scope":"local","time":2}`,
				`{"Type":"network","Action":"destroy","Actor":{"ID":"n2","Attributes":{"name":"red","type":"felt"}},"scope":"local","time":3}`,
			} {
				fmt.Fprintln(w, ev)
			}
			// Then dockerd stops: the stream ends.
		},
	})
	e := testEngine(f)
	var kicks atomic.Int64
	err := e.WatchEvents(ctxT(t), func() { kicks.Add(1) })
	if err == nil || !strings.Contains(err.Error(), "Docker ended the event stream") {
		t.Errorf("WatchEvents = %v, want the end of the stream", err)
	}
	if n := kicks.Load(); n != 2 {
		t.Errorf("%d kicks, want 2 (felt:latest and felt networks, not the bridge)", n)
	}
	if q, _ := urlQuery(query); q.Get("filters") != `{"type":{"network":true}}` {
		t.Errorf("events query %q, want filter type=network", query)
	}
	if e.cur != nil {
		t.Error("client kept after the event stream ended")
	}

	// Ending ctx ends the watch with ctx's error.
	g := newFakeDocker(t, "", "1.41", map[string]http.HandlerFunc{
		"GET /events": func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		},
	})
	ctx, cancel := context.WithCancel(ctxT(t))
	time.AfterFunc(100*time.Millisecond, cancel)
	if err := testEngine(g).WatchEvents(ctx, func() {}); !errors.Is(err, context.Canceled) {
		t.Errorf("WatchEvents after cancel = %v", err)
	}
}

// Every Engine method refuses a handler's context, before any request.
func TestEngineRefusesHandlerContext(t *testing.T) {
	f := newFakeDocker(t, "", "1.41", nil)
	e := testEngine(f)
	ctx := InHandler(ctxT(t))
	// Derived contexts carry the mark too.
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	calls := map[string]func() error{
		"Self":     func() error { _, err := e.Self(ctx); return err },
		"Networks": func() error { _, err := e.Networks(ctx); return err },
		"Inspect":  func() error { _, err := e.Inspect(ctx, feltID); return err },
		"Create": func() error {
			_, _, err := e.Create(ctx, CreateRequest{Name: "blue", Pool: netip.MustParsePrefix("10.42.0.0/16")})
			return err
		},
		"Remove":      func() error { return e.Remove(ctx, feltID) },
		"WatchEvents": func() error { return e.WatchEvents(ctx, func() { t.Error("kicked") }) },
	}
	// Keep this list in step with the interface.
	if n := reflectMethods(); n != len(calls) {
		t.Fatalf("Engine has %d methods, the test covers %d", n, len(calls))
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, ErrInHandler) {
			t.Errorf("%s from a handler = %v, want ErrInHandler", name, err)
		}
	}
	if r := f.requests(); len(r) != 0 {
		t.Errorf("requests reached Docker from a handler: %+v", r)
	}
	if inHandler(context.Background()) {
		t.Error("an unmarked context counts as a handler's")
	}
}

func urlQuery(q string) (url.Values, error) { return url.ParseQuery(q) }

func reflectMethods() int { return reflect.TypeFor[Engine]().NumMethod() }

// Concurrent first calls make one client: one ping, one Self.
func TestEngineConcurrentCallsShareOneClient(t *testing.T) {
	var inspected atomic.Int64
	f := newFakeDocker(t, "", "1.41", map[string]http.HandlerFunc{
		"GET /plugins/*": func(w http.ResponseWriter, r *http.Request) {
			inspected.Add(1)
			fmt.Fprintf(w, `{"Id":%q,"Name":"felt:latest","Enabled":true,"Settings":{},"Config":{}}`, pluginID)
		},
		"GET /networks": jsonAnswer("[]"),
	})
	e := testEngine(f)
	e.mountinfo = func() ([]byte, error) { return []byte(pluginMountinfo), nil }
	ctx := ctxT(t)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if _, err := e.Networks(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if f.pings.Load() != 1 || inspected.Load() != 1 {
		t.Errorf("8 concurrent calls: %d pings, %d plugin inspections; want 1 each", f.pings.Load(), inspected.Load())
	}
}
