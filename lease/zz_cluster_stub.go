package lease

// TEMPORARY stub until s18-records merges (lead's compile aid).

import (
	"context"
	"errors"
	"net/netip"
	"time"
)

type Declaration struct {
	UID        string            `json:"uid"`
	Name       string            `json:"name"`
	DriverOpts map[string]string `json:"driverOpts,omitempty"`
	IPAMOpts   map[string]string `json:"ipamOpts,omitempty"`
	Labels     map[string]string `json:"labels,omitempty"`
	IPRange    netip.Prefix      `json:"ipRange,omitzero"`
	Internal   bool              `json:"internal,omitempty"`
	Attachable bool              `json:"attachable,omitempty"`
	By         string            `json:"by"`
	At         time.Time         `json:"at"`
	Removed    *Removal          `json:"removed,omitempty"`
}
type Removal struct {
	By string    `json:"by"`
	At time.Time `json:"at"`
}

func (d *Declaration) Live() bool { return d != nil && d.Removed == nil }

var ErrNameTaken = errors.New("name taken")
var ErrDeclared = errors.New("declared")

func (r *Registry) Declare(ctx context.Context, pool netip.Prefix, d Declaration) (Network, error) {
	return Network{}, nil
}
func (r *Registry) Withdraw(ctx context.Context, pool netip.Prefix, uid, byHost string) error {
	return nil
}
func (r *Registry) Epoch(ctx context.Context) (string, error)                        { return "", nil }
func (r *Registry) WatchNetworks(ctx context.Context, index uint64) (uint64, error) { return 0, nil }
