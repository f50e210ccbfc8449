package plugin

import (
	"context"
	"net/netip"
	"time"

	"github.com/felt-net/felt/cluster"
	"github.com/felt-net/felt/names"
)

// resolvConf is the host's resolv.conf: Docker bind-mounts it into a
// host-network plugin, and a bare binary reads the host's own.
const resolvConf = "/etc/resolv.conf"

// runNames serves container names across hosts (package names) until ctx
// ends: felt's address on lo, the index of other hosts' names, the DNS
// server, and, with Consul and Docker access, the publisher of this
// host's names. Started from Background, never from a handler.
func (a *App) runNames(ctx context.Context) {
	s := a.Settings
	if !s.DNS.IsValid() {
		a.Log.Info("container names across hosts off", "why", "FELT_DNS=off")
		return
	}
	log := a.Log.With("dns", s.DNS)
	index := names.NewIndex(a.Registry, a.hostID, log)
	go index.Run(ctx)
	scope := names.StateScope{State: a.State}
	switch {
	case s.ConsulAddr == "":
		log.Info("publishing no container names: the embedded store has no other hosts (set CONSUL_HTTP_ADDR)")
	case s.DockerHost == "":
		log.Info("publishing no container names: FELT_DOCKER_HOST=off")
	default:
		docker := cluster.NewContainers(cluster.EngineConfig{Host: s.DockerHost, DriverName: s.DriverName, FallbackName: s.BareDriverName(), Log: a.Log})
		pub := names.NewPublisher(names.PublisherConfig{Docker: docker, State: a.State, Store: a.Registry, HostID: a.hostID, Resync: s.Resync, Log: log})
		scope.NonFelt = pub.NonFelt
		go pub.Run(ctx)
	}
	srv := names.NewServer(names.ServerConfig{
		Addr: netip.AddrPortFrom(s.DNS, 53), Index: index, Scope: scope,
		Forward:   names.NewLocalSources(a.Underlay.Netlink).Allowed,
		Upstreams: names.NewUpstreams(s.DNSUpstream, resolvConf, s.DNS).Servers,
		Log:       log,
	})
	// A failed start (no CAP_NET_ADMIN, something bound to 0.0.0.0:53) is
	// tried again every resync interval.
	for ctx.Err() == nil {
		err := names.EnsureAddress(a.Underlay.Netlink, s.DNS)
		if err == nil {
			err = srv.Serve(ctx)
		}
		if err == nil || ctx.Err() != nil {
			return
		}
		log.Error("serving container names failed; retrying", "err", err, "retry", s.Resync)
		select {
		case <-ctx.Done():
		case <-time.After(s.Resync):
		}
	}
}
