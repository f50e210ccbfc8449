package bench

import (
	"errors"
	"slices"
	"testing"
)

func TestMedianRun(t *testing.T) {
	gbps := []float64{5, 1, 3}
	i := 0
	r, err := medianRun(3, func() (Throughput, error) {
		r := Throughput{Gbps: gbps[i], Retransmits: i}
		i++
		return r, nil
	})
	if err != nil || r.Gbps != 3 || r.Retransmits != 2 || !slices.Equal(r.Runs, gbps) {
		t.Fatalf("median of %v: %+v %v; want the third run (3 Gbit/s) with every run listed", gbps, r, err)
	}
	boom := errors.New("boom")
	if _, err := medianRun(3, func() (Throughput, error) { return Throughput{}, boom }); !errors.Is(err, boom) {
		t.Fatalf("a failed run: %v", err)
	}
}
