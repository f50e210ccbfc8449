package cluster

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"testing"
)

// Inspect as Docker 20.10 (API 1.41) answers for a compose 1.29 service:
// Aliases hold the short ID and the service, no DNSNames.
const container141 = `{"Id":"822dc74a7073aaaa","Name":"/proj_web_1","State":{"Running":true},` +
	`"Config":{"Hostname":"822dc74a7073","Labels":{"com.docker.compose.service":"web"}},` +
	`"NetworkSettings":{"SandboxKey":"/var/run/docker/netns/0a1b2c3d4e5f","Networks":{"blue":{"Aliases":["822dc74a7073","web"],` +
	`"NetworkID":"` + feltID + `","EndpointID":"e1","IPAddress":"10.42.7.2","IPPrefixLen":24}}}}`

// And as Docker 26 (API 1.45): Aliases are the user's, DNSNames all names.
const container145 = `{"Id":"822dc74a7073aaaa","Name":"/web","State":{"Running":true},"Config":{"Hostname":"822dc74a7073"},` +
	`"NetworkSettings":{"SandboxKey":"/var/run/docker/netns/0a1b2c3d4e5f","Networks":{"blue":{"Aliases":["api"],"DNSNames":["web","api","822dc74a7073"],` +
	`"NetworkID":"` + feltID + `","EndpointID":"e1","IPAddress":"10.42.7.2","IPPrefixLen":24}}}}`

func TestContainerInspectShapes(t *testing.T) {
	for _, tc := range []struct {
		version, body, name string
		aliases, dnsNames   []string
	}{
		{"1.41", container141, "proj_web_1", []string{"822dc74a7073", "web"}, nil},
		{"1.45", container145, "web", []string{"api"}, []string{"web", "api", "822dc74a7073"}},
	} {
		t.Run(tc.version, func(t *testing.T) {
			f := newFakeDocker(t, "", tc.version, map[string]http.HandlerFunc{
				"GET /containers/822dc74a7073aaaa/json": jsonAnswer(tc.body),
			})
			c, err := testEngine(f).ContainerInspect(ctxT(t), "822dc74a7073aaaa")
			if err != nil {
				t.Fatal(err)
			}
			n, ok := c.Networks[feltID]
			if c.Name != tc.name || !c.Running || c.SandboxKey != "/var/run/docker/netns/0a1b2c3d4e5f" || !ok ||
				n.IP != netip.MustParseAddr("10.42.7.2") || !slices.Equal(n.Aliases, tc.aliases) || !slices.Equal(n.DNSNames, tc.dnsNames) {
				t.Fatalf("got %+v", c)
			}
		})
	}
}

func TestContainerInspectNotFound(t *testing.T) {
	f := newFakeDocker(t, "", "1.45", map[string]http.HandlerFunc{
		"GET /containers/*": func(w http.ResponseWriter, r *http.Request) { apiError(w, http.StatusNotFound, "No such container") },
	})
	if _, err := testEngine(f).ContainerInspect(ctxT(t), "gone"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("err %v, want ErrNotFound", err)
	}
}

// FeltContainers filters by network on Docker's side; handlers may not call it.
func TestFeltContainersFilters(t *testing.T) {
	f := newFakeDocker(t, "", "1.41", map[string]http.HandlerFunc{
		"GET /containers/json": jsonAnswer(`[{"Id":"c1"},{"Id":"c2"}]`),
	})
	e := testEngine(f)
	ids, err := e.FeltContainers(ctxT(t), []string{feltID})
	if err != nil || !slices.Equal(ids, []string{"c1", "c2"}) {
		t.Fatalf("%v, %v", ids, err)
	}
	var q string
	for _, r := range f.requests() {
		if r.Path == "/v1.41/containers/json" {
			q = r.Query
		}
	}
	v, _ := url.ParseQuery(q)
	if want := `{"network":{"` + feltID + `":true}}`; v.Get("filters") != want {
		t.Fatalf("filters %q, want %q", v.Get("filters"), want)
	}
	hctx := InHandler(ctxT(t))
	for name, call := range map[string]func() error{
		"FeltContainers":   func() error { _, err := e.FeltContainers(hctx, []string{feltID}); return err },
		"ContainerInspect": func() error { _, err := e.ContainerInspect(hctx, "c1"); return err },
		"WatchContainers": func() error {
			return e.WatchContainers(hctx, func(ContainerEvent) { t.Error("event from a handler's watch") })
		},
	} {
		if err := call(); !errors.Is(err, ErrInHandler) {
			t.Errorf("%s from a handler: %v, want ErrInHandler", name, err)
		}
	}
}

// WatchContainers passes container events and felt's network connects and
// disconnects, not other drivers' ones; the end of the stream drops the client.
func TestWatchContainers(t *testing.T) {
	var query string
	f := newFakeDocker(t, "", "1.41", map[string]http.HandlerFunc{
		"GET /events": func(w http.ResponseWriter, r *http.Request) {
			query = r.URL.RawQuery
			w.Header().Set("Content-Type", "application/json")
			for _, ev := range []string{
				`{"Type":"network","Action":"connect","Actor":{"ID":"n1","Attributes":{"container":"c1","name":"blue","type":"felt:latest"}},"scope":"local","time":1}`,
				`{"Type":"network","Action":"connect","Actor":{"ID":"n0","Attributes":{"container":"c1","name":"bridge","type":"bridge"}},"scope":"local","time":2}`,
				`{"Type":"container","Action":"start","Actor":{"ID":"c1","Attributes":{"name":"web"}},"scope":"local","time":3}`,
				`{"Type":"network","Action":"create","Actor":{"ID":"n2","Attributes":{"name":"red","type":"felt"}},"scope":"local","time":4}`,
				`{"Type":"network","Action":"disconnect","Actor":{"ID":"n2","Attributes":{"container":"c2","name":"red","type":"felt"}},"scope":"local","time":5}`,
			} {
				fmt.Fprintln(w, ev)
			}
		},
	})
	e := testEngine(f)
	var got []string
	err := e.WatchContainers(ctxT(t), func(ev ContainerEvent) { got = append(got, ev.Action+" "+ev.Container+" "+ev.Network) })
	if err == nil || !strings.Contains(err.Error(), "Docker ended the event stream") {
		t.Errorf("WatchContainers = %v, want the end of the stream", err)
	}
	if want := []string{"connect c1 n1", "start c1 ", "disconnect c2 n2"}; !slices.Equal(got, want) {
		t.Errorf("events %q, want %q", got, want)
	}
	if v, _ := url.ParseQuery(query); v.Get("filters") != `{"type":{"container":true,"network":true}}` {
		t.Errorf("events query %q", query)
	}
	if e.cur != nil {
		t.Error("client kept after the event stream ended")
	}
}
