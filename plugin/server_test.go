package plugin

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/felt-net/felt/testkit/netns"
)

func post(t *testing.T, srv *httptest.Server, path, body string) (int, map[string]any) {
	t.Helper()
	r, err := http.Post(srv.URL+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	return r.StatusCode, m
}

// Before start-up finishes (the store is not open yet), Activate and the
// capability calls answer at once; other calls wait, then fail clearly.
func TestServerBeforeReady(t *testing.T) {
	s := NewServer(slog.New(slog.NewTextHandler(io.Discard, nil)), 200*time.Millisecond)
	srv := httptest.NewServer(s)
	defer srv.Close()

	r, err := http.Post(srv.URL+"/Plugin.Activate", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if !strings.Contains(string(b), `"NetworkDriver"`) || !strings.Contains(string(b), `"IpamDriver"`) {
		t.Fatalf("Activate: %s", b)
	}
	if code, m := post(t, srv, "/NetworkDriver.GetCapabilities", "{}"); code != 200 || m["Scope"] != "local" || m["ConnectivityScope"] != "global" {
		t.Fatalf("network capabilities: %d %v", code, m)
	}
	if code, m := post(t, srv, "/IpamDriver.GetCapabilities", "{}"); code != 200 || m["RequiresMACAddress"] != true {
		t.Fatalf("ipam capabilities: %d %v", code, m)
	}
	code, m := post(t, srv, "/IpamDriver.RequestPool", `{"Pool":"10.42.0.0/16"}`)
	if code != http.StatusServiceUnavailable || !strings.Contains(m["Err"].(string), "still starting") || m["Error"] != m["Err"] {
		t.Fatalf("RequestPool before ready: %d %v", code, m)
	}
	code, m = post(t, srv, "/NetworkDriver.Join", `{"NetworkID": 5`)
	if code != http.StatusBadRequest || !strings.Contains(m["Err"].(string), "malformed JSON in NetworkDriver.Join request") {
		t.Fatalf("malformed: %d %v", code, m)
	}
}

// The fuzz target's lifecycle seed is what Docker sends for create, run,
// stop and remove: every call succeeds, so mutations of it reach every
// handler past its checks (a seed that failed early would not).
func TestFuzzLifecycleSeedSucceeds(t *testing.T) {
	netns.Require(t) // links need a namespace of the test's own
	w := newFuzzWorld(t)
	script := readSeed(t, "lifecycle")
	codes := w.run(t, script)
	if len(codes) != 18 {
		t.Fatalf("%d calls answered, want 18", len(codes))
	}
	for i, c := range codes {
		if c != http.StatusOK {
			t.Fatalf("call %d (%s) answered %d:\n%s", i+1, strings.Split(script, "\n")[i], c, w.logs.String())
		}
	}
}

// readSeed returns the script of a seed file of FuzzSocketAPI.
func readSeed(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzSocketAPI", name))
	if err != nil {
		t.Fatal(err)
	}
	_, lit, ok := strings.Cut(strings.TrimSpace(string(b)), "\nstring(")
	if !ok {
		t.Fatalf("seed %s: not a fuzz corpus file", name)
	}
	s, err := strconv.Unquote(strings.TrimSuffix(lit, ")"))
	if err != nil {
		t.Fatalf("seed %s: %v", name, err)
	}
	return s
}

// A handler that panics is answered with a JSON 500 and counted: the count
// is what makes FuzzSocketAPI fail on a panic.
func TestServerRecoversAndCountsPanics(t *testing.T) {
	s := NewServer(slog.New(slog.NewTextHandler(io.Discard, nil)), time.Second)
	s.route("/Test.Panic", func(http.ResponseWriter, *http.Request) { panic("boom") })
	srv := httptest.NewServer(s)
	defer srv.Close()
	code, m := post(t, srv, "/Test.Panic", "{}")
	if code != http.StatusInternalServerError || !strings.Contains(fmt.Sprint(m["Err"]), "internal error in Test.Panic: boom") || m["Error"] != m["Err"] {
		t.Fatalf("panic answered %d %v", code, m)
	}
	if s.Panics() != 1 {
		t.Fatalf("Panics() = %d, want 1", s.Panics())
	}
}

// Unknown calls and oversized bodies get JSON errors too.
func TestServerUnknownCallAndHugeBody(t *testing.T) {
	s := NewServer(slog.New(slog.NewTextHandler(io.Discard, nil)), time.Second)
	s.SetReady(Drivers{})
	srv := httptest.NewServer(s)
	defer srv.Close()
	code, m := post(t, srv, "/NetworkDriver.GwAllocCheck", `{"Options":{}}`)
	if code != http.StatusNotFound || m["Err"] != `felt does not implement "/NetworkDriver.GwAllocCheck"` {
		t.Fatalf("unknown call: %d %v", code, m)
	}
	code, m = post(t, srv, "/NetworkDriver.Join", `{"NetworkID":"`+strings.Repeat("a", MaxRequestBody)+`"}`)
	if code != http.StatusRequestEntityTooLarge || !strings.Contains(fmt.Sprint(m["Err"]), "NetworkDriver.Join request larger than 1048576 bytes") {
		t.Fatalf("huge body: %d %.200v", code, m)
	}
}
