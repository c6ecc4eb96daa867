package main

import (
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"wittra-gateway/bridge"
	"wittra-gateway/sinks/broker"
)

// metricsCollector exposes the components' own counters at scrape time, so
// the hot paths keep plain atomics and nothing but this file knows about
// Prometheus.
type metricsCollector struct {
	g *gateway

	requests, accepted, duplicates, dropped     *prometheus.Desc
	expired, commits, compactions, quarantined  *prometheus.Desc
	depth, oldestAge, queueMessages, queueBytes *prometheus.Desc
	fileBytes, deadStored                       *prometheus.Desc
	salvaged, salvageLost                       *prometheus.Desc
	delivered, failures, deadLettered           *prometheus.Desc
	undecodable, lastSuccess, connected         *prometheus.Desc
	brokerClients, brokerDropped, buildInfo     *prometheus.Desc
	refused                                     *prometheus.Desc
	queueMaxBytes, ready                        *prometheus.Desc
	certExpiry, webhookCertExpiry               *prometheus.Desc

	retainedTopics, retainedBytes, retainedCleared *prometheus.Desc
	clientDropped, subUnmatched, subResent         *prometheus.Desc // durable subscribers (type subscriber)
	dedupKeys                                      *prometheus.Desc
	// The two parts of a sink's depth (backlog: live_first, docs/live-first.md).
	backlogDepth, liveDepth, liveOldestAge *prometheus.Desc

	// The dedup count walks the whole index: at most once per
	// dedupCountEvery, however often Prometheus scrapes.
	dedupMu    sync.Mutex
	dedupAt    time.Time
	dedupN     int
	dedupKnown bool
}

func newMetricsCollector(g *gateway) *metricsCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("wittra_gateway_"+name, help, labels, nil)
	}
	return &metricsCollector{
		g:                 g,
		requests:          d("webhook_requests_total", "Webhook requests by route and reply code.", "route", "code"),
		accepted:          d("messages_accepted_total", "Messages newly queued.", "route"),
		duplicates:        d("messages_duplicate_total", "Messages acknowledged as already seen (payloadId within dedup_window).", "route"),
		dropped:           d("messages_dropped_total", "Messages deleted without delivery by policy.", "reason"),
		expired:           d("messages_expired_total", "Undelivered messages deleted after buffer.max_age."),
		commits:           d("queue_commits_total", "Queue transactions committed (each one fsync)."),
		compactions:       d("queue_compactions_total", "Times the queue file was rewritten to shrink it."),
		quarantined:       d("queue_quarantined_total", "Damaged queue files moved aside at start (queue.db.corrupt-<time>)."),
		salvaged:          d("queue_salvaged_messages_total", "Messages copied out of quarantined queue files at start."),
		salvageLost:       d("queue_salvage_lost_messages_total", "Undelivered messages of quarantined queue files that could not be read."),
		depth:             d("queue_depth_messages", "Messages queued for the sink and not yet delivered.", "sink"),
		oldestAge:         d("queue_oldest_age_seconds", "Age of the oldest message not yet delivered to the sink (0 when none).", "sink"),
		backlogDepth:      d("queue_backlog_messages", "Part of the sink's depth in its backlog: before the split point of a live_first sink, all of it otherwise.", "sink"),
		liveDepth:         d("queue_live_messages", "Part of the sink's depth after the split point of a live_first sink (delivered ahead of the backlog); 0 otherwise.", "sink"),
		liveOldestAge:     d("queue_live_oldest_age_seconds", "Age of the oldest undelivered message after the split point (0 when none).", "sink"),
		queueMessages:     d("queue_messages", "Messages stored in the queue."),
		queueBytes:        d("queue_bytes", "Bytes of stored messages, as counted against buffer.max_bytes."),
		fileBytes:         d("queue_file_bytes", "Size of the queue file on disk."),
		deadStored:        d("dead_letters_total", "Messages sinks refused permanently (kept in the dead-letter bucket)."),
		delivered:         d("sink_deliveries_total", "Messages delivered to the sink.", "sink"),
		failures:          d("sink_failures_total", "Failed delivery attempts (each is retried with backoff).", "sink"),
		deadLettered:      d("sink_dead_letters_total", "Messages the sink refused permanently since start.", "sink"),
		undecodable:       d("sink_undecodable_total", "Queue records that could not be decoded for the sink.", "sink"),
		lastSuccess:       d("sink_last_success_timestamp_seconds", "Unix time of the sink's last delivery (0 before the first).", "sink"),
		connected:         d("sink_connected", "1 when the sink's connection is up (sinks with a connection only).", "sink"),
		brokerClients:     d("broker_clients", "Clients connected to the embedded broker."),
		brokerDropped:     d("broker_messages_dropped_total", "Messages the embedded broker dropped for slow or over-quota subscribers."),
		buildInfo:         d("build_info", "Build information.", "version", "commit", "goversion"),
		queueMaxBytes:     d("queue_max_bytes", "buffer.max_bytes: the bound queue_bytes is held to."),
		ready:             d("ready", "1 while /readyz would answer 200 (started, not stopping, the queue's commit path answers within 1 s), else 0."),
		refused:           d("messages_refused_total", "Messages of webhook requests answered 503 because the queue was full (not stored; the sender must retry).", "route", "reason"),
		certExpiry:        d("sink_certificate_expiry_timestamp_seconds", "Unix time the sink's client certificate expires (sinks with one only).", "sink"),
		webhookCertExpiry: d("webhook_certificate_expiry_timestamp_seconds", "Unix time the webhook's TLS certificate expires, by ACME domain (or cert_file).", "domain"),

		retainedTopics:  d("broker_retained_topics", "Retained topics of the gateway held by the embedded broker."),
		retainedBytes:   d("broker_retained_bytes", "Payload bytes of those retained topics."),
		retainedCleared: d("broker_retained_cleared_topics_total", "Retained topics cleared by a bound: reason cap (retain_max_topics/bytes) or age (retain_max_age).", "reason"),
		clientDropped:   d("broker_client_messages_dropped_total", "Messages the embedded broker dropped per ordinary subscriber (100 clients by name, the rest as _other).", "client"),
		subUnmatched:    d("subscriber_unmatched_total", "Publications a type subscriber sink skipped because none of the client's subscriptions matched.", "sink"),
		subResent:       d("subscriber_resent_total", "Publications a type subscriber sink sent again after a reconnect.", "sink"),
		dedupKeys:       d("queue_dedup_keys", "payloadIds remembered for deduplication (bounded by dedup_window × intake; counted by a walk of the index at most every 30 s)."),
	}
}

func (c *metricsCollector) Describe(ch chan<- *prometheus.Desc) {
	prometheus.DescribeByCollect(c, ch)
}

// connectedSink is implemented by sinks that hold a connection.
type connectedSink interface{ Connected() bool }

// certSink is implemented by sinks that may log in with a client certificate.
type certSink interface{ CertificateExpiry() (time.Time, bool) }

func (c *metricsCollector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	g := c.g
	gauge(c.buildInfo, 1, Version, commitString(), runtime.Version())

	var filtered uint64
	if g.receiver != nil {
		for _, rs := range g.receiver.Stats() {
			route := rs.Path
			for i, code := range bridge.ReplyCodes {
				counter(c.requests, rs.Replies[i].Load(), route, strconv.Itoa(code))
			}
			if route == "" {
				continue
			}
			counter(c.accepted, rs.Accepted.Load(), route)
			counter(c.duplicates, rs.Duplicates.Load(), route)
			counter(c.refused, rs.Refused.Load(), route, "queue_full")
			filtered += rs.Dropped.Load()
		}
	}
	counter(c.dropped, filtered, "device_filter")

	gauge(c.ready, boolGauge(g.readyNow(time.Second) == nil))
	if g.queue != nil {
		gauge(c.queueMaxBytes, float64(g.queue.MaxBytes()))
		if st, err := g.queue.Stats(); err == nil {
			counter(c.dropped, st.Dropped, "queue_full")
			counter(c.expired, st.Expired)
			counter(c.commits, st.Commits)
			counter(c.compactions, st.Compactions)
			counter(c.quarantined, st.Quarantined)
			counter(c.salvaged, st.Salvaged)
			counter(c.salvageLost, st.SalvageLost)
			counter(c.deadStored, st.DeadLetters)
			gauge(c.queueMessages, float64(st.Messages))
			gauge(c.queueBytes, float64(st.Bytes))
			for _, cs := range st.Consumers {
				gauge(c.depth, float64(cs.Depth), cs.Name)
				// Measured as max_age measures it: a clock step does not move it.
				gauge(c.oldestAge, cs.OldestAge.Seconds(), cs.Name)
				gauge(c.backlogDepth, float64(cs.Backlog), cs.Name)
				gauge(c.liveDepth, float64(cs.Live), cs.Name)
				gauge(c.liveOldestAge, cs.LiveOldestAge.Seconds(), cs.Name)
			}
		}
		gauge(c.fileBytes, float64(g.queue.FileSize()))
		if n, ok := c.dedupCount(g); ok {
			gauge(c.dedupKeys, float64(n))
		}
	}

	for i, f := range g.forwarders {
		name := g.sinks[i].Name()
		fs := f.Stats()
		counter(c.delivered, fs.Delivered.Load(), name)
		counter(c.failures, fs.Failures.Load(), name)
		counter(c.deadLettered, fs.Rejected.Load(), name)
		counter(c.undecodable, fs.Undecodable.Load(), name)
		gauge(c.lastSuccess, float64(fs.LastSuccess.Load())/1e9, name)
		if ss, ok := g.sinks[i].(*broker.Subscriber); ok {
			counter(c.subUnmatched, ss.Stats().Unmatched.Load(), name)
			counter(c.subResent, ss.Stats().Resent.Load(), name)
		}
		if cs, ok := g.sinks[i].(connectedSink); ok {
			v := 0.0
			if cs.Connected() {
				v = 1
			}
			gauge(c.connected, v, name)
		}
		if cs, ok := g.sinks[i].(certSink); ok {
			if exp, ok := cs.CertificateExpiry(); ok {
				gauge(c.certExpiry, float64(exp.Unix()), name)
			}
		}
	}
	if g.webhookCertExpiry != nil {
		for name, t := range g.webhookCertExpiry() {
			if !t.IsZero() {
				gauge(c.webhookCertExpiry, float64(t.Unix()), name)
			}
		}
	}
	if g.brokerSrv != nil {
		gauge(c.brokerClients, float64(g.brokerSrv.ClientsConnected()))
		counter(c.brokerDropped, uint64(g.brokerSrv.Dropped()))
		rs := g.brokerSrv.RetainedStats()
		gauge(c.retainedTopics, float64(rs.Topics))
		gauge(c.retainedBytes, float64(rs.Bytes))
		counter(c.retainedCleared, rs.EvictedTopics, "cap")
		counter(c.retainedCleared, rs.ExpiredTopics, "age")
		for client, n := range g.brokerSrv.DroppedByClient() {
			counter(c.clientDropped, n, client)
		}
	}
}

// newRegistry is the /metrics registry: ours plus Go runtime and process
// metrics (RSS matters on small boxes).
func newRegistry(g *gateway) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(newMetricsCollector(g), newClockCollector(g),
		newNamesCollector(g), // metrics_names.go
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// dedupCountEvery bounds how often a scrape walks the dedup index (up to
// millions of keys with a 24 h window).
const dedupCountEvery = 30 * time.Second

func (c *metricsCollector) dedupCount(g *gateway) (int, bool) {
	c.dedupMu.Lock()
	defer c.dedupMu.Unlock()
	if !c.dedupKnown || time.Since(c.dedupAt) >= dedupCountEvery {
		n, err := g.queue.DedupKeys()
		c.dedupAt = time.Now()
		c.dedupN, c.dedupKnown = n, err == nil
	}
	return c.dedupN, c.dedupKnown
}
