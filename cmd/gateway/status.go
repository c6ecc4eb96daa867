package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"wittra-gateway/bridge"
	"wittra-gateway/internal/status"
	"wittra-gateway/sinks"
)

// The status page (internal/status) reads the components through
// statusReading, the way metricsCollector does for /metrics.

// addStatus puts the status page on the admin mux and starts its sampler,
// which stops with the admin server.
func (g *gateway) addStatus(cfg *Config, mux *http.ServeMux) error {
	st, err := status.New(status.Config{
		GatewayID:   cfg.Gateway.ID,
		Version:     Version,
		Commit:      commitString(),
		Started:     time.Now(),
		Listeners:   g.statusListeners(cfg),
		Read:        func() status.Reading { return g.statusReading(cfg) },
		SampleEvery: g.timing.statusSampleEvery,
		Refresh:     g.timing.statusRefresh,
		Log:         g.log.With().Str("component", "status").Logger(),
	})
	if err != nil {
		return err
	}
	st.Register(mux)
	ctx, cancel := context.WithCancel(context.Background())
	g.admin.RegisterOnShutdown(cancel)
	go st.Run(ctx)
	return nil
}

// adminHandler puts basic auth in front of mux when admin.users is set;
// the liveness and readiness probes stay open.
func adminHandler(cfg *Config, mux http.Handler) (http.Handler, error) {
	if len(cfg.Admin.Users) == 0 {
		return mux, nil
	}
	users := make([]status.User, len(cfg.Admin.Users))
	for i, u := range cfg.Admin.Users {
		users[i] = status.User{Username: u.Username, PasswordHash: u.PasswordHash}
	}
	a, err := status.NewAuth(users, "/healthz", "/readyz")
	if err != nil {
		return nil, err
	}
	return a.Wrap(mux), nil
}

// warnOpenAdmin warns when the admin listener is reachable beyond this
// machine without credentials.
func (g *gateway) warnOpenAdmin(cfg *Config) {
	if len(cfg.Admin.Users) > 0 || g.adminLn == nil {
		return
	}
	if a, ok := g.adminLn.Addr().(*net.TCPAddr); ok && !a.IP.IsLoopback() {
		g.log.Warn().Str("listen", cfg.Admin.Listen).Msg("admin listener is open beyond loopback without admin.users: anyone on the network can read the status page and metrics")
	}
}

func (g *gateway) statusListeners(cfg *Config) []status.Listener {
	var ls []status.Listener
	if g.webhookLn != nil {
		scheme := "http"
		if cfg.Webhook.TLS.CertFile != "" {
			scheme = "https"
		}
		ls = append(ls, status.Listener{Name: "webhook", Scheme: scheme, Address: g.webhookLn.Addr().String()})
	}
	if g.adminLn != nil {
		ls = append(ls, status.Listener{Name: "admin", Scheme: "http", Address: g.adminLn.Addr().String()})
	}
	if g.brokerSrv != nil {
		addrs := g.brokerSrv.Addrs()
		for i, l := range cfg.Broker.Listeners {
			if i >= len(addrs) {
				break
			}
			scheme := map[string]string{"tcp": "mqtt", "tls": "mqtts", "websocket": "ws"}[l.Type]
			if l.Type == "websocket" && l.CertFile != "" {
				scheme = "wss"
			}
			ls = append(ls, status.Listener{Name: "broker", Scheme: scheme, Address: addrs[i]})
		}
	}
	return ls
}

// statusReading reads every component's counters now.
func (g *gateway) statusReading(cfg *Config) status.Reading {
	var r status.Reading
	if g.receiver != nil {
		r.Intake.Replies = map[int]uint64{}
		for _, rs := range g.receiver.Stats() {
			for i, code := range bridge.ReplyCodes {
				r.Intake.Replies[code] += rs.Replies[i].Load()
			}
			r.Intake.Accepted += rs.Accepted.Load()
			r.Intake.Duplicates += rs.Duplicates.Load()
			r.Intake.Filtered += rs.Dropped.Load()
		}
		r.Intake.LastRequest = g.receiver.LastRequest()
		for _, d := range g.receiver.Devices() {
			info := g.deviceInfo(d.Project, d.ID) // names.go
			r.Devices = append(r.Devices, status.DeviceReading{
				ID: d.ID, Project: d.Project, Kind: d.Kind.String(), Name: info.Name, Type: info.Type,
				LastSeen: d.LastSeen, Messages: d.Messages, Body: d.Body, BodyLen: d.BodyLen,
			})
		}
	}
	consumers := map[string]status.SinkReading{}
	if g.queue != nil {
		st, err := g.queue.Stats()
		if err != nil {
			r.Queue.Err = err
		}
		r.Queue.Messages, r.Queue.Bytes = st.Messages, st.Bytes
		r.Queue.DeadLetters, r.Queue.Dropped, r.Queue.Expired = st.DeadLetters, st.Dropped, st.Expired
		r.Queue.MaxBytes = cfg.Buffer.MaxBytes
		r.Queue.FileBytes = g.queue.FileSize()
		for _, cs := range st.Consumers {
			consumers[cs.Name] = status.SinkReading{Depth: cs.Depth, Oldest: cs.Oldest}
		}
	} else {
		r.Queue.Err = errors.New("queue not open")
	}
	for i, f := range g.forwarders {
		s := g.sinks[i]
		sr := consumers[s.Name()]
		sr.Name, sr.Type = s.Name(), cfg.Sinks[i].Type
		fs := f.Stats()
		sr.Delivered, sr.Failures, sr.DeadLetters = fs.Delivered.Load(), fs.Failures.Load(), fs.Rejected.Load()
		sr.LastSuccess, sr.LastFailure = unixNano(fs.LastSuccess.Load()), unixNano(fs.LastFailure.Load())
		sr.LastError = fs.LastError()
		if l, ok := s.(sinks.Linked); ok {
			ls := l.LinkState()
			sr.Link = &status.LinkReading{Connected: ls.Connected, Since: ls.Since, LastError: ls.LastError}
		}
		r.Sinks = append(r.Sinks, sr)
	}
	return r
}

func unixNano(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}
