// Package metricstest reads felt's metrics as a scraper does, for tests.
package metricstest

import (
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Values are the samples of one scrape, by series: the metric's name
// followed by its labels sorted by name, as in the text format:
// felt_api_requests_total{method="NetworkDriver.CreateNetwork",outcome="ok"}.
// A histogram gives its _count and _sum.
type Values map[string]float64

// Scrape GETs url (a /metrics endpoint) and parses the text format.
func Scrape(t testing.TB, url string) Values {
	t.Helper()
	r, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	if r.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %s\n%s", url, r.Status, b)
	}
	v, err := Parse(string(b))
	if err != nil {
		t.Fatalf("scrape %s: %v\n%s", url, err, b)
	}
	return v
}

// Parse reads the Prometheus text format.
func Parse(text string) (Values, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		return nil, err
	}
	out := Values{}
	for name, f := range fams {
		for _, m := range f.GetMetric() {
			labels := m.GetLabel()
			slices.SortFunc(labels, func(a, b *dto.LabelPair) int { return strings.Compare(a.GetName(), b.GetName()) })
			var ls []string
			for _, l := range labels {
				ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			series := func(suffix string) string {
				if len(ls) == 0 {
					return name + suffix
				}
				return name + suffix + "{" + strings.Join(ls, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[series("")] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[series("")] = m.GetGauge().GetValue()
			case m.Histogram != nil:
				out[series("_count")] = float64(m.GetHistogram().GetSampleCount())
				out[series("_sum")] = m.GetHistogram().GetSampleSum()
			case m.Untyped != nil:
				out[series("")] = m.GetUntyped().GetValue()
			}
		}
	}
	return out, nil
}
