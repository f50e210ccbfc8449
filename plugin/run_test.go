package plugin

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A start-up that fails (here: the state directory is a file) keeps the
// socket open and answers every call with the reason, so that Docker shows
// it to the user instead of failing to dial a plugin that exited.
func TestRunServesStartupError(t *testing.T) {
	dir := t.TempDir()
	notADir := filepath.Join(dir, "state")
	if err := os.WriteFile(notADir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := SettingsFromEnv(func(k string) (string, bool) {
		v, ok := map[string]string{"FELT_SOCKET": filepath.Join(dir, "felt.sock"), "FELT_STATE_DIR": notADir}[k]
		return v, ok
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, s, slog.New(slog.NewTextHandler(io.Discard, nil))) }()

	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", s.Socket)
		}}}
	call := func(path, body string) (int, map[string]any) {
		t.Helper()
		var r *http.Response
		deadline := time.Now().Add(20 * time.Second)
		for {
			r, err = client.Post("http://felt"+path, "application/json", strings.NewReader(body))
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(50 * time.Millisecond) // the socket is not open yet
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		defer r.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(r.Body).Decode(&m)
		return r.StatusCode, m
	}
	if code, m := call("/NetworkDriver.GetCapabilities", "{}"); code != 200 || m["Scope"] != "local" {
		t.Fatalf("capabilities after a failed start-up: %d %v", code, m)
	}
	code, m := call("/IpamDriver.RequestPool", `{"Pool":"10.42.0.0/16"}`)
	msg, _ := m["Error"].(string)
	if code != http.StatusServiceUnavailable || !strings.Contains(msg, "felt could not start") || !strings.Contains(msg, notADir) {
		t.Fatalf("RequestPool after a failed start-up: %d %v", code, m)
	}
	select {
	case err := <-done:
		t.Fatalf("Run returned before it was stopped: %v", err)
	default:
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after stop: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}
