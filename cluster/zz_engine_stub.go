package cluster

// TEMPORARY stub until s18-engine merges (lead's compile aid).

import (
	"context"
	"errors"
	"net/netip"
)

type Net struct {
	ID, Name, Driver             string
	Subnet                       netip.Prefix
	IPRange                      netip.Prefix
	DriverOpts, IPAMOpts, Labels map[string]string
	Internal, Attachable         bool
	Containers                   int
}
type CreateRequest struct {
	Name                         string
	Pool                         netip.Prefix
	IPRange                      netip.Prefix
	DriverOpts, IPAMOpts, Labels map[string]string
	Internal, Attachable         bool
}

var ErrInUse = errors.New("network has active endpoints")
var ErrNotFound = errors.New("no such network")
var ErrInHandler = errors.New("Docker API call from a plugin handler")

type Engine interface {
	Self(ctx context.Context) (string, error)
	Networks(ctx context.Context) ([]Net, error)
	Inspect(ctx context.Context, id string) (Net, error)
	Create(ctx context.Context, req CreateRequest) (id string, warnings []string, err error)
	Remove(ctx context.Context, id string) error
	WatchEvents(ctx context.Context, kick func()) error
}
