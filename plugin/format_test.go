package plugin

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	ipamapi "github.com/docker/go-plugins-helpers/ipam"

	"github.com/felt-net/felt/kv/boltkv"
	"github.com/felt-net/felt/testkit"
)

// TestBuildRefusesNewerLocalFormat: a state directory written by a newer
// felt stops this one at start, with an error saying what to do, and its
// records are left as they were.
func TestBuildRefusesNewerLocalFormat(t *testing.T) {
	ctx := context.Background()
	newer := `{"version":3,"writer":"felt 9.0.0"}`
	db, settings := stateWithRecord(t, "local/format", newer)
	settings.Version = "1.0.0"
	app, err := Build(ctx, settings, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil {
		app.Close()
		t.Fatal("Build succeeded on state written by a newer felt")
	}
	want := "local state in " + db + ": state written by a newer felt (format 3, written by felt 9.0.0; this felt understands up to 1): upgrade felt, or move " + db + " aside to start with empty state"
	if err.Error() != want {
		t.Fatalf("Build error\n%v\nwant\n%s", err, want)
	}
	s, err := boltkv.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p, err := s.Get(ctx, "local/format")
	if err != nil || string(p.Value) != newer {
		t.Fatalf("format record after the refusal: %q, %v; want it untouched", p.Value, err)
	}
	if pairs, _, _ := s.List(ctx, "local/"); len(pairs) != 1 {
		var keys []string
		for _, p := range pairs {
			keys = append(keys, p.Key)
		}
		t.Fatalf("the refused start wrote %s", strings.Join(keys, ", "))
	}
}

// TestSharedNewerFormatRefusedOnFirstWrite: felt starts on shared state
// written by a newer felt (it must not contact the shared store at start),
// and its first write there fails with the error saying what to do, leaving
// the store as it was. The embedded store plays the shared one here.
func TestSharedNewerFormatRefusedOnFirstWrite(t *testing.T) {
	testkit.NeedRoot(t) // Build needs root (netlink, iptables)
	ctx := context.Background()
	newer := `{"version":5,"writer":"felt 9.0.0"}`
	db, settings := stateWithRecord(t, "felt/format", newer)
	app, err := Build(ctx, settings, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("Build on shared state of a newer format: %v; want it to start (the check comes before the first write)", err)
	}
	defer app.Close()
	_, err = app.IPAM.RequestPool(ctx, &ipamapi.RequestPoolRequest{Pool: "10.201.0.0/16"})
	want := "shared state in " + db + " under felt/: state written by a newer felt (format 5, written by felt 9.0.0; this felt understands up to 1): upgrade felt, or give this felt another FELT_KV_PREFIX"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("RequestPool error = %v\nwant it to contain\n%s", err, want)
	}
	pairs, _, err := app.Local.List(ctx, "felt/")
	if err != nil {
		t.Fatal(err)
	}
	if len(pairs) != 1 || string(pairs[0].Value) != newer {
		t.Fatalf("shared records after the refusal: %v; want only the untouched format record", pairs)
	}
}

// stateWithRecord makes a state directory whose store (db) holds value at
// key, and the settings of a felt using it.
func stateWithRecord(t *testing.T, key, value string) (db string, settings Settings) {
	t.Helper()
	dir := t.TempDir()
	db = filepath.Join(dir, "felt.db")
	s, err := boltkv.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(context.Background(), key, []byte(value)); err != nil {
		t.Fatal(err)
	}
	s.Close()
	settings, err = SettingsFromEnv(func(k string) (string, bool) {
		return map[string]string{"FELT_STATE_DIR": dir, "FELT_SOCKET": filepath.Join(dir, "felt.sock")}[k], true
	})
	if err != nil {
		t.Fatal(err)
	}
	return db, settings
}
