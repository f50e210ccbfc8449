// The Containers: what the names loop reads of this host's Docker engine,
// through the same client, guard and timeouts as the Engine (docker.go).

package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"time"

	"github.com/moby/moby/client"
)

// Container is a container as Docker's inspect shows it, reduced to what
// its names need.
type Container struct {
	ID, Name string // Name without Docker's leading "/"
	Hostname string
	Running  bool
	Labels   map[string]string
	// SandboxKey is what Docker sends in JoinRequest.SandboxKey.
	SandboxKey string
	Networks   map[string]ContainerNet // by Docker network ID
}

// ContainerNet is one network's endpoint of a container.
type ContainerNet struct {
	Name     string // the network's name in Docker
	IP       netip.Addr
	Aliases  []string // the short ID too on API ≤ 1.44
	DNSNames []string // API ≥ 1.44: name, aliases, short ID, hostname; nil before
}

// ContainerEvent is one container or network event, as far as names care.
type ContainerEvent struct {
	Container string // the container's full ID
	Action    string // "start", "die", "rename", "connect", "disconnect", ...
	Network   string // the network's ID, for connect and disconnect
}

// Containers is the part of this host's Docker engine the names loop uses.
type Containers interface {
	// ContainerInspect shows one container; ErrNotFound if gone.
	ContainerInspect(ctx context.Context, id string) (Container, error)
	// FeltContainers lists the IDs of running containers attached to any
	// of the networks netIDs (Docker's network filter); none if netIDs is empty.
	FeltContainers(ctx context.Context, netIDs []string) ([]string, error)
	// WatchContainers streams container events and the network events of
	// Self's networks, calling f (which must not block) for each. It
	// returns when the stream ends, with the error, or when ctx ends.
	WatchContainers(ctx context.Context, f func(ContainerEvent)) error
}

// NewContainers returns the Containers of the engine an Engine of cfg
// talks to (its own client).
func NewContainers(cfg EngineConfig) Containers { return newEngine(cfg) }

func (e *dockerEngine) ContainerInspect(ctx context.Context, id string) (Container, error) {
	c, _, cctx, cancel, err := e.call(ctx, "ContainerInspect", false, e.short)
	if err != nil {
		return Container{}, err
	}
	defer cancel()
	res, err := c.cli.ContainerInspect(cctx, id, client.ContainerInspectOptions{})
	if err != nil {
		e.lost(ctx, c, err)
		return Container{}, inspectErr("container", id, err)
	}
	r := res.Container
	out := Container{ID: r.ID, Name: strings.TrimPrefix(r.Name, "/"), Networks: map[string]ContainerNet{}}
	if r.State != nil {
		out.Running = r.State.Running
	}
	if r.Config != nil {
		out.Hostname, out.Labels = r.Config.Hostname, r.Config.Labels
	}
	if ns := r.NetworkSettings; ns != nil {
		out.SandboxKey = ns.SandboxKey
		for name, ep := range ns.Networks {
			if ep == nil || ep.NetworkID == "" {
				continue
			}
			out.Networks[ep.NetworkID] = ContainerNet{Name: name, IP: ep.IPAddress, Aliases: ep.Aliases, DNSNames: ep.DNSNames}
		}
	}
	return out, nil
}

func (e *dockerEngine) FeltContainers(ctx context.Context, netIDs []string) ([]string, error) {
	if err := e.refuse(ctx, "FeltContainers"); err != nil {
		return nil, err
	}
	if len(netIDs) == 0 {
		return nil, nil
	}
	c, _, cctx, cancel, err := e.call(ctx, "FeltContainers", false, e.short)
	if err != nil {
		return nil, err
	}
	defer cancel()
	// Several network filters are ORed by Docker.
	res, err := c.cli.ContainerList(cctx, client.ContainerListOptions{Filters: make(client.Filters).Add("network", netIDs...)})
	if err != nil {
		e.lost(ctx, c, err)
		return nil, fmt.Errorf("listing the containers of felt's networks: %w", decodeHint(err))
	}
	ids := make([]string, 0, len(res.Items))
	for _, s := range res.Items {
		ids = append(ids, s.ID)
	}
	return ids, nil
}

func (e *dockerEngine) WatchContainers(ctx context.Context, f func(ContainerEvent)) error {
	if err := e.refuse(ctx, "WatchContainers"); err != nil {
		return err
	}
	c, self, err := e.get(ctx, true)
	if err != nil {
		return err
	}
	names := driverNames(self)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	slow := time.AfterFunc(e.short, cancel) // as in WatchEvents
	res := c.cli.Events(sctx, client.EventsListOptions{Filters: make(client.Filters).Add("type", "container", "network")})
	if !slow.Stop() && ctx.Err() == nil {
		e.lost(ctx, c, context.DeadlineExceeded)
		return fmt.Errorf("watching Docker's container events: no answer in %s", e.short)
	}
	for {
		select {
		case m := <-res.Messages:
			switch m.Type {
			case "network":
				// A network event's "type" is the driver; "container" is
				// set on connect and disconnect.
				if d := m.Actor.Attributes["type"]; containsString(names, d) && m.Actor.Attributes["container"] != "" {
					f(ContainerEvent{Container: m.Actor.Attributes["container"], Action: string(m.Action), Network: m.Actor.ID})
				}
			case "container":
				f(ContainerEvent{Container: m.Actor.ID, Action: string(m.Action)})
			}
		case err := <-res.Err:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err == nil || errors.Is(err, io.EOF) {
				err = errors.New("Docker ended the event stream")
			}
			e.lost(ctx, c, io.EOF)
			return fmt.Errorf("watching Docker's container events: %w", err)
		}
	}
}
