package main

import (
	"encoding/json"
	"log/slog"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	promql "github.com/prometheus/prometheus/promql/parser"
)

// exportedMetricNames lists every metric name the gateway's /metrics can
// carry: its own collector's descriptions and the Go and process collectors.
func exportedMetricNames(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	c := reflect.ValueOf(newMetricsCollector(nil)).Elem()
	for i := range c.NumField() {
		f := c.Field(i)
		// The fields are unexported: read them through their address.
		if d, ok := reflect.NewAt(f.Type(), unsafe.Pointer(f.UnsafeAddr())).Elem().Interface().(*prometheus.Desc); ok && d != nil {
			m := fqName.FindStringSubmatch(d.String())
			if m == nil {
				t.Fatalf("no name in %s", d)
			}
			names[m[1]] = true
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		names[f.GetName()] = true
	}
	if len(names) < 30 {
		t.Fatalf("found only %d metric names: %v", len(names), names)
	}
	return names
}

// metricsOf parses a PromQL expression and returns the metric names it
// selects.
func metricsOf(t *testing.T, p promql.Parser, expr string) []string {
	t.Helper()
	e, err := p.ParseExpr(expr)
	if err != nil {
		t.Fatalf("%q: %v", expr, err)
	}
	var out []string
	promql.Inspect(e, func(n promql.Node, _ []promql.Node) error {
		if vs, ok := n.(*promql.VectorSelector); ok {
			out = append(out, vs.Name)
		}
		return nil
	})
	if len(out) == 0 {
		t.Fatalf("%q selects no metric", expr)
	}
	return out
}

// The example alert rules load in Prometheus (the same parser and checks
// as promtool check rules) and name only metrics the gateway exports.
func TestContribAlertRules(t *testing.T) {
	exported := exportedMetricNames(t)
	exported["up"] = true // written by Prometheus for every scrape
	content, err := os.ReadFile("../../contrib/prometheus/wittra-gateway-rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	p := promql.NewParser(promql.Options{})
	groups, errs := rulefmt.Parse(content, false, model.UTF8Validation, p, slog.New(slog.DiscardHandler))
	if len(errs) > 0 {
		t.Fatalf("rules do not load: %v", errs)
	}
	alerts := map[string]bool{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			alerts[r.Alert] = true
			for _, name := range metricsOf(t, p, r.Expr) {
				if !exported[name] {
					t.Errorf("alert %s: metric %s is not exported by the gateway", r.Alert, name)
				}
			}
		}
	}
	for _, want := range []string{"WittraGatewaySinkDown", "WittraGatewayBacklogOld", "WittraGatewayQueueNearFull", "WittraGatewayDeadLettersRising", "WittraGatewayNotReady"} {
		if !alerts[want] {
			t.Errorf("no alert %s", want)
		}
	}
}

// The Grafana dashboard's queries parse as PromQL (Grafana's own variables
// substituted) and name only metrics the gateway exports.
func TestContribGrafanaDashboard(t *testing.T) {
	exported := exportedMetricNames(t)
	content, err := os.ReadFile("../../contrib/grafana/wittra-gateway-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
		Templating struct {
			List []struct {
				Name       string
				Definition string
			}
		}
	}
	if err := json.Unmarshal(content, &dash); err != nil {
		t.Fatalf("dashboard is not JSON: %v", err)
	}
	if len(dash.Panels) < 8 {
		t.Fatalf("dashboard has %d panels", len(dash.Panels))
	}
	p := promql.NewParser(promql.Options{})
	grafanaVars := strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m")
	for _, panel := range dash.Panels {
		if len(panel.Targets) == 0 {
			t.Errorf("panel %q has no query", panel.Title)
		}
		for _, target := range panel.Targets {
			for _, name := range metricsOf(t, p, grafanaVars.Replace(target.Expr)) {
				if !exported[name] {
					t.Errorf("panel %q: metric %s is not exported by the gateway", panel.Title, name)
				}
			}
		}
	}
	labelValues := regexp.MustCompile(`^label_values\((\w+),`)
	for _, v := range dash.Templating.List {
		if m := labelValues.FindStringSubmatch(v.Definition); m != nil && !exported[m[1]] {
			t.Errorf("variable %s: metric %s is not exported", v.Name, m[1])
		}
	}
}
