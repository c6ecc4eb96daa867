package main

import (
	"github.com/prometheus/client_golang/prometheus"
)

// BuildTime is a wall time this binary cannot run before: `make build`
// sets it to the commit time of the source (-ldflags "-X
// main.BuildTime=2026-12-02T14:00:00Z"); without it the Go build info's
// vcs.time, or a date compiled into internal/clock, is the floor. A wall
// clock earlier than that is known to be wrong.
var BuildTime = ""

// clockCollector exposes what the queue knows about the wall clock: on a
// box without a real-time clock the operator sees that it booted at 1970
// or that NTP stepped it.
type clockCollector struct {
	g                     *gateway
	trusted, steps, floor *prometheus.Desc
	offset                *prometheus.Desc
}

func newClockCollector(g *gateway) *clockCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("wittra_gateway_"+name, help, nil, nil)
	}
	return &clockCollector{
		g:       g,
		trusted: d("clock_trusted", "1 when the wall clock is not before the binary's build time; 0 when it is known to be wrong (message ages do not depend on it)."),
		steps:   d("clock_steps_total", "Wall-clock steps larger than a minute seen since start (NTP sync, settimeofday)."),
		floor:   d("clock_build_floor_timestamp_seconds", "The build time: a wall clock earlier than this is known to be wrong."),
		offset:  d("clock_offset_seconds", "Wall clock minus the time the gateway measured passing: 0 on a box whose clock was always right; moves by every step."),
	}
}

func (c *clockCollector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

func (c *clockCollector) Collect(ch chan<- prometheus.Metric) {
	if c.g.queue == nil {
		return
	}
	st := c.g.queue.Clock()
	trusted := 0.0
	if st.Trusted {
		trusted = 1
	}
	ch <- prometheus.MustNewConstMetric(c.trusted, prometheus.GaugeValue, trusted)
	ch <- prometheus.MustNewConstMetric(c.steps, prometheus.CounterValue, float64(st.Steps))
	ch <- prometheus.MustNewConstMetric(c.floor, prometheus.GaugeValue, float64(st.Floor.Unix()))
	ch <- prometheus.MustNewConstMetric(c.offset, prometheus.GaugeValue, st.Offset.Seconds())
}
