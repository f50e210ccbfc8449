package bench

import (
	"fmt"
	"slices"
	"strings"
)

// scaleRows renders the scale part: a column per stage (1,000 and 10,000
// leases), then the simulated watchers, a row per number of watchers.
func scaleRows(sc Scale, header, row func(cells ...string)) {
	heads := []string{"**1,000 leases**", "**10,000 leases**"}
	for i, st := range sc.Stages {
		if i < len(heads) {
			heads[i] = fmt.Sprintf("**%s leases**", thousands(st.Leases))
		}
	}
	header(fmt.Sprintf("**control plane at scale**: %d hosts + simulated leases, %s, each host through a counting proxy to Consul", sc.RealHosts, sc.Backend),
		heads[0], heads[1], "**detail**", "")
	if !sc.Available && len(sc.Stages) == 0 {
		row("control plane at scale", na(sc.Reason), "", "", "")
		return
	}
	stageRow := func(name, detail string, cell func(st ScaleStage) string) {
		c := []string{"", ""} // a column per stage
		for i, st := range sc.Stages {
			if i < 2 {
				c[i] = cell(st)
			}
		}
		row(name, c[0], c[1], detail, "")
	}
	stageRow("leases joined per second: bulk loader / Acquire", "the bulk loader writes records straight to Consul (8 writers, not felt's join path); Acquire is felt's (32 at a time, as hosts joining at once; a fifth of each stage's leases), call p50 in brackets",
		func(st ScaleStage) string {
			return fmt.Sprintf("%.0f / %.1f (%s)", st.BulkRate, st.AcquireRate, ms(st.AcquireCall.P50))
		})
	stageRow("every host routes all, after the last write: bulk / Acquire", "",
		func(st ScaleStage) string {
			return fmt.Sprintf("%.1f s / %.1f s", st.RoutedAfterLastBulkS, st.RoutedAfterLastAcquireS)
		})
	stageRow(fmt.Sprintf("new lease → route on every host, p50 / p99 (%d via Acquire)", newLeases), "from the Acquire call's start",
		func(st ScaleStage) string {
			return distCell(st.Propagation, st.NewLeasesUnrouted, st.RouteBoundS)
		})
	stageRow("lease write → route on every host, p50 / p99 (single changes)", "a new lease written straight to Consul, one at a time",
		func(st ScaleStage) string { return distCell(st.WriteToRoute, st.Unrouted, st.RouteBoundS) })
	stageRow("felt CPU per lease change, max of hosts (minus quiet CPU)", "",
		func(st ScaleStage) string {
			return fmt.Sprintf("%s (%s)", ms(slices.Max(append([]float64{0}, st.FeltCPUMSPerChange...))), ms(slices.Max(append([]float64{0}, st.FeltCPUMSPerChangeNet...))))
		})
	stageRow("bytes Consul sends per lease change, per host (lease reads)", "as the host's proxy counted them (gzip if Consul used it), max of hosts; reads per change in brackets",
		func(st ScaleStage) string {
			return fmt.Sprintf("%s (%.1f)", kib(slices.Max(append([]int64{0}, st.BytesPerChange...))), slices.Max(append([]float64{0}, st.LeaseReadsPerChange...)))
		})
	stageRow("Consul CPU per lease change", "with the real hosts watching", func(st ScaleStage) string { return ms(st.ConsulCPUMSPerChange) })
	stageRow("felt RSS, max of hosts", "", func(st ScaleStage) string { return mib(maxOf(st.RSSKiB)) })
	stageRow("felt / Consul CPU, quiet", "% of a core, max of hosts, nothing changing",
		func(st ScaleStage) string {
			return fmt.Sprintf("%.1f%% / %.1f%%", slices.Max(append([]float64{0}, st.QuietFeltCPU...)), st.QuietConsulCPU)
		})
	if !sc.Available {
		row("control plane at scale", na(sc.Reason), "", "", "")
		return
	}
	w := sc.Watchers
	header(fmt.Sprintf("**simulated watchers**: %s leases, felt stopped, each watcher its own connection holding felt's lease watch", thousands(w.Leases)),
		"**Consul CPU per change**", "**bytes sent per change**", "**detail**", "")
	for _, p := range w.Points {
		row(fmt.Sprintf("%d watchers (%d changes)", p.Watchers, p.Changes), ms(p.ConsulCPUMSPerChange), kib(p.BytesPerChange),
			fmt.Sprintf("write → every watcher answered p50 %s; %s/s; Consul %.0f%% of a core meanwhile", ms(p.FanOut.P50), kib(int64(p.BytesPerS)), p.ConsulCPUPercentChanges), "")
	}
}

// distCell is "p50 / p99", and how many were not routed within bound.
func distCell(d Dist, unrouted int, bound float64) string {
	var parts []string
	if d.N > 0 {
		parts = append(parts, ms(d.P50)+" / "+ms(d.P99))
	}
	if unrouted > 0 {
		parts = append(parts, fmt.Sprintf("%d not routed everywhere within %.0f s", unrouted, bound))
	}
	return strings.Join(parts, "; ")
}

// kib is a byte count for the table, in KiB or MiB.
func kib(b int64) string {
	if b >= 10<<20 {
		return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20))
	}
	if b >= 1<<20 {
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	}
	return fmt.Sprintf("%.0f KiB", float64(b)/1024)
}

// thousands writes n with thousands separators: 10,000.
func thousands(n int) string {
	s := fmt.Sprint(n)
	var parts []string
	for len(s) > 3 {
		parts = append([]string{s[len(s)-3:]}, parts...)
		s = s[:len(s)-3]
	}
	return strings.Join(append([]string{s}, parts...), ",")
}
