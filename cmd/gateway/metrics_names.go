package main

import "github.com/prometheus/client_golang/prometheus"

// namesCollector exposes the Wittra API client's figures (only with a
// wittra_api section).
type namesCollector struct {
	g                                   *gateway
	lastSuccess, devices, refreshErrors *prometheus.Desc
}

func newNamesCollector(g *gateway) *namesCollector {
	return &namesCollector{
		g:             g,
		lastSuccess:   prometheus.NewDesc("wittra_gateway_wittra_api_last_success_timestamp_seconds", "Unix time of the last device list fetched from the Wittra API (0 before the first since start).", nil, nil),
		devices:       prometheus.NewDesc("wittra_gateway_wittra_api_devices", "Devices whose name and type are known from the Wittra API (kept across restarts).", nil, nil),
		refreshErrors: prometheus.NewDesc("wittra_gateway_wittra_api_refresh_errors_total", "Failed Wittra API requests (network, timeout, 401, 404, 429, 5xx, unreadable answer).", nil, nil),
	}
}

func (c *namesCollector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

func (c *namesCollector) Collect(ch chan<- prometheus.Metric) {
	if c.g.names == nil || c.g.names.api == nil {
		return
	}
	st := c.g.names.api.Stats()
	last := 0.0
	if !st.LastSuccess.IsZero() {
		last = float64(st.LastSuccess.UnixNano()) / 1e9
	}
	ch <- prometheus.MustNewConstMetric(c.lastSuccess, prometheus.GaugeValue, last)
	ch <- prometheus.MustNewConstMetric(c.devices, prometheus.GaugeValue, float64(st.Devices))
	ch <- prometheus.MustNewConstMetric(c.refreshErrors, prometheus.CounterValue, float64(st.Errors))
}
