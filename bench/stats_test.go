package bench

import (
	"math"
	"slices"
	"time"
)

// Dist summarises a set of durations, in milliseconds or microseconds as
// its Unit says (JSON readers should not have to guess).
type Dist struct {
	Unit string  `json:"unit"`
	N    int     `json:"n"`
	P50  float64 `json:"p50"`
	P99  float64 `json:"p99"`
	Min  float64 `json:"min"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

// distOf summarises ds in unit ("ms" or "µs").
func distOf(ds []time.Duration, unit string) Dist {
	if len(ds) == 0 {
		return Dist{Unit: unit}
	}
	per := float64(time.Millisecond)
	if unit == "µs" {
		per = float64(time.Microsecond)
	}
	v := make([]float64, len(ds))
	sum := 0.0
	for i, d := range ds {
		v[i] = float64(d) / per
		sum += v[i]
	}
	slices.Sort(v)
	return Dist{Unit: unit, N: len(v), P50: quantile(v, 0.50), P99: quantile(v, 0.99),
		Min: round3(v[0]), Max: round3(v[len(v)-1]), Mean: round3(sum / float64(len(v)))}
}

// quantile of sorted v by the nearest-rank method: with 20 samples p99 is
// the largest, which is the honest answer for so few.
func quantile(v []float64, q float64) float64 {
	i := int(math.Ceil(q*float64(len(v)))) - 1
	return round3(v[max(0, min(i, len(v)-1))])
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

// ratio is a/b rounded, or 0 when either is missing (0 means "no value" in
// the results: no measurement is ever truly zero).
func ratio(a, b float64) float64 {
	if a <= 0 || b <= 0 {
		return 0
	}
	return round3(a / b)
}
