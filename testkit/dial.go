package testkit

import (
	"context"
	"net"
	"net/http"

	"github.com/vishvananda/netns"

	"github.com/felt-net/felt/internal/nsutil"
)

// NetNSTransport is an HTTP transport that makes its connections from
// inside the named network namespace, for a test's client of a server
// listening there (Consul on a test underlay): a socket stays in the
// namespace it was created in, so only the dial needs to enter it.
func NetNSTransport(name string) *http.Transport {
	return &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		ns, err := netns.GetFromName(name)
		if err != nil {
			return nil, err
		}
		defer ns.Close()
		var conn net.Conn
		err = nsutil.Do(ns, func() (err error) {
			conn, err = (&net.Dialer{}).DialContext(ctx, network, addr)
			return err
		})
		return conn, err
	}}
}
