package wireguard_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"

	"github.com/felt-net/felt/overlay/wireguard"
)

// A new wireguard-go device has its key and port before it can go up (a
// TUN reports itself up at once): it binds its UDP socket once, on the
// network's port, with no moment on a random port during which a peer's
// handshake would meet a closed one.
func TestUserspaceBindsOnceOnItsPort(t *testing.T) {
	tb, b, n := newBed(t, t.TempDir())
	a := tb.Hosts[0]
	if err := b.Setup(context.Background(), n); err != nil {
		t.Fatal(err)
	}
	if impl := status(t, b, n).Implementation; impl != wireguard.ImplUserspace {
		t.Skipf("implementation %s: wireguard-go's start is not used", impl)
	}
	log := a.Logs.String()
	if got := strings.Count(log, "UDP bind has been updated"); got != 1 {
		t.Errorf("wireguard-go bound its socket %d times, want once:\n%s", got, log)
	}
	port, up := strings.Index(log, "UAPI: Updating listen port"), strings.Index(log, "Interface up requested")
	if port < 0 || up < 0 || up < port {
		t.Errorf("the device went up (at %d) before it had its port (at %d):\n%s", up, port, log)
	}
	err := a.NS.Do(func() error {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: wireguard.DefaultPort})
		if err == nil {
			c.Close()
		}
		return err
	})
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("binding port %d next to the device: %v, want it in use", wireguard.DefaultPort, err)
	}
}

// A port another program holds fails Setup naming -o port= (the device
// cannot bind it when it goes up); once the port is free, the next Setup
// works.
func TestUserspacePortTaken(t *testing.T) {
	tb, b, n := newBed(t, t.TempDir())
	a := tb.Hosts[0]
	var c *net.UDPConn
	if err := a.NS.Do(func() error {
		var err error
		c, err = net.ListenUDP("udp", &net.UDPAddr{Port: wireguard.DefaultPort})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	err := b.Setup(context.Background(), n)
	if err == nil || !strings.Contains(err.Error(), "-o port=") {
		c.Close()
		t.Fatalf("setup with the port taken: %v, want an error naming -o port=", err)
	}
	c.Close()
	if err := b.Setup(context.Background(), n); err != nil {
		t.Fatalf("setup with the port free again: %v", err)
	}
	if st := status(t, b, n); st.ListenPort != wireguard.DefaultPort {
		t.Fatalf("listen port %d", st.ListenPort)
	}
}
