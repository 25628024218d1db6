package harness

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrapeTimeout bounds one /metrics request.
const scrapeTimeout = 5 * time.Second

// Sample is one exposed series: a counter, gauge or untyped value, or one
// part of a summary or histogram (name_count, name_sum, name_bucket{le},
// name{quantile}), as the text format writes them.
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// Metrics is what one or more /metrics scrapes exposed, as samples.
// Several nodes' Metrics concatenated (Merge) sum across the nodes.
type Metrics []Sample

// Scrape fetches and parses http://httpAddr/metrics with the Prometheus
// text parser.
func Scrape(ctx context.Context, httpAddr string) (Metrics, error) {
	ctx, cancel := context.WithTimeout(ctx, scrapeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+httpAddr+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	// No keep-alive: no idle connection outlives the scrape on either side.
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s: %w", httpAddr, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s: %s", httpAddr, resp.Status)
	}
	return ParseMetrics(resp.Body)
}

// ScrapeT is Scrape for tests.
func ScrapeT(t testing.TB, httpAddr string) Metrics {
	t.Helper()
	m, err := Scrape(context.Background(), httpAddr)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// ParseMetrics parses the Prometheus text format.
func ParseMetrics(r io.Reader) (Metrics, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("parse metrics: %w", err)
	}
	var out Metrics
	for name, f := range families {
		for _, m := range f.GetMetric() {
			out = append(out, flatten(name, f.GetType(), m)...)
		}
	}
	return out, nil
}

// flatten turns one metric into the samples the text format shows for it.
func flatten(name string, typ dto.MetricType, m *dto.Metric) []Sample {
	labels := map[string]string{}
	for _, lp := range m.GetLabel() {
		labels[lp.GetName()] = lp.GetValue()
	}
	with := func(k, v string) map[string]string {
		out := make(map[string]string, len(labels)+1)
		for lk, lv := range labels {
			out[lk] = lv
		}
		out[k] = v
		return out
	}
	switch typ {
	case dto.MetricType_COUNTER:
		return []Sample{{name, labels, m.GetCounter().GetValue()}}
	case dto.MetricType_GAUGE:
		return []Sample{{name, labels, m.GetGauge().GetValue()}}
	case dto.MetricType_SUMMARY:
		s := m.GetSummary()
		out := []Sample{{name + "_count", labels, float64(s.GetSampleCount())}, {name + "_sum", labels, s.GetSampleSum()}}
		for _, q := range s.GetQuantile() {
			out = append(out, Sample{name, with("quantile", formatFloat(q.GetQuantile())), q.GetValue()})
		}
		return out
	case dto.MetricType_HISTOGRAM:
		h := m.GetHistogram()
		out := []Sample{{name + "_count", labels, float64(h.GetSampleCount())}, {name + "_sum", labels, h.GetSampleSum()}}
		for _, b := range h.GetBucket() {
			out = append(out, Sample{name + "_bucket", with("le", formatFloat(b.GetUpperBound())), float64(b.GetCumulativeCount())})
		}
		return out
	default:
		return []Sample{{name, labels, m.GetUntyped().GetValue()}}
	}
}

func formatFloat(f float64) string {
	if math.IsInf(f, +1) {
		return "+Inf"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// Sum adds the samples named name whose labels include every pair of
// match, given as label, value, label, value...; a value "" also matches
// a sample without that label. A series never exposed sums to 0.
func (m Metrics) Sum(name string, match ...string) float64 {
	var sum float64
	for _, s := range m {
		if s.Name == name && labelsMatch(s.Labels, match) {
			sum += s.Value
		}
	}
	return sum
}

func labelsMatch(labels map[string]string, match []string) bool {
	for i := 0; i+1 < len(match); i += 2 {
		if labels[match[i]] != match[i+1] {
			return false
		}
	}
	return true
}

// Merge concatenates several scrapes, so Sum adds over all of them.
func Merge(ms ...Metrics) Metrics {
	var out Metrics
	for _, m := range ms {
		out = append(out, m...)
	}
	return out
}
