package plugin

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
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
