package bench

import (
	"fmt"
	"image/color"
	"os"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// writeChart draws the data plane relative to the bare underlay: throughput
// (1 and 4 streams; higher is better) above, request/response p50 latency
// (lower is better) below, one group of bars per path. A path that was not
// available gets no bar and "n/a" in its name.
func writeChart(path string, r Results) error {
	var names []string
	var t1, t4, lat plotter.Values
	for _, p := range r.DataPlane {
		name := shortName(p)
		if !p.Available {
			names = append(names, name+" (n/a)")
			t1, t4, lat = append(t1, 0), append(t4, 0), append(lat, 0)
			continue
		}
		names = append(names, name)
		if p.Stream1.RatioToBare == 0 { // the baseline itself
			t1, t4, lat = append(t1, 1), append(t4, 1), append(lat, 1)
			continue
		}
		t1, t4, lat = append(t1, p.Stream1.RatioToBare), append(t4, p.Stream4.RatioToBare), append(lat, p.LatencyRatioToBare)
	}
	if len(names) == 0 {
		return fmt.Errorf("chart: no data-plane results")
	}
	bare := r.DataPlane[0]
	tput, err := bars("TCP throughput relative to the bare underlay (higher is better)", names,
		[]plotter.Values{t1, t4}, []string{"1 stream", "4 streams"})
	if err != nil {
		return err
	}
	rr, err := bars("TCP request/response p50 latency relative to the bare underlay (lower is better)", names,
		[]plotter.Values{lat}, []string{"p50 round trip"})
	if err != nil {
		return err
	}
	if bare.Available {
		tput.Title.Text += fmt.Sprintf("\nbare: %.1f / %.1f Gbit/s", bare.Stream1.Gbps, bare.Stream4.Gbps)
		rr.Title.Text += fmt.Sprintf("\nbare: %.0f µs", bare.Latency.P50)
	}

	img := vgimg.New(vg.Points(720), vg.Points(640))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 2, Cols: 1, PadY: vg.Points(16), PadTop: vg.Points(8), PadBottom: vg.Points(8),
		PadLeft: vg.Points(8), PadRight: vg.Points(8)}
	plots := [][]*plot.Plot{{tput}, {rr}}
	canvases := plot.Align(plots, tiles, dc)
	tput.Draw(canvases[0][0])
	rr.Draw(canvases[1][0])

	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("chart: writing %s: %w", path, err)
	}
	return f.Close()
}

// bars is a grouped bar chart: one group per name, one bar per series,
// with a line at 1 (the bare underlay).
func bars(title string, names []string, series []plotter.Values, legends []string) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = title
	p.Y.Label.Text = "× bare underlay"
	p.Y.Min = 0
	p.Add(plotter.NewGrid())
	palette := []color.Color{color.RGBA{0x1f, 0x77, 0xb4, 0xff}, color.RGBA{0xff, 0x7f, 0x0e, 0xff}}
	w := vg.Points(22)
	top := 1.0
	for i, vs := range series {
		b, err := plotter.NewBarChart(vs, w)
		if err != nil {
			return nil, fmt.Errorf("chart %q: %w", legends[i], err)
		}
		b.Color = palette[i%len(palette)]
		b.LineStyle.Width = 0
		b.Offset = w * vg.Length(2*i-len(series)+1) / 2
		p.Add(b)
		if len(series) > 1 {
			p.Legend.Add(legends[i], b)
		}
		// The value above each bar: the chart is read for these numbers.
		xy := plotter.XYLabels{XYs: make(plotter.XYs, len(vs)), Labels: make([]string, len(vs))}
		for j, v := range vs {
			xy.XYs[j] = plotter.XY{X: float64(j), Y: v}
			if v > 0 {
				xy.Labels[j] = fmt.Sprintf("%.2f", v)
			}
			top = max(top, v)
		}
		l, err := plotter.NewLabels(xy)
		if err != nil {
			return nil, fmt.Errorf("chart labels: %w", err)
		}
		for k := range l.TextStyle {
			l.TextStyle[k].XAlign = draw.XCenter
			l.TextStyle[k].Font.Size = vg.Points(8)
		}
		l.Offset = vg.Point{X: b.Offset, Y: vg.Points(3)}
		p.Add(l)
	}
	one := plotter.NewFunction(func(float64) float64 { return 1 })
	one.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	p.Add(one)
	p.Y.Max = top * 1.2 // room for the labels and the legend above the bars
	p.Legend.Top = true
	p.NominalX(names...)
	return p, nil
}

func shortName(p Path) string {
	switch {
	case p.Backend != "":
		return p.Backend
	case strings.HasPrefix(p.Name, "bare"):
		return "bare underlay"
	case strings.HasPrefix(p.Name, "same host"):
		return "same host"
	}
	return p.Name
}
