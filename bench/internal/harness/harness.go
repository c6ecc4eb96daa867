// Package harness wires the gateway's real packages (bridge.Receiver,
// buffer.Queue, the embedded broker and its sink, bridge.Forwarder) the way
// cmd/gateway does, for the benchmark's baseline and profiling servers and
// the offline queue filler. Only the knobs a benchmark needs are exposed:
// the commit batch size (MaxBatch 1 = one fsync per message), pprof, and a
// forwarder that can start late.
package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/pprof"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"wittra-gateway/bridge"
	"wittra-gateway/buffer"
	"wittra-gateway/internal/wmsg"
	"wittra-gateway/sinks/broker"
)

// The gateway's defaults (cmd/gateway/config.go), so the harness differs
// from the product only where a benchmark says so.
const (
	MaxBytes    = 1 << 30
	MaxAge      = 168 * time.Hour
	DedupWindow = 24 * time.Hour
	MaxBody     = 1 << 20
	RoutePath   = "/wittra"
	SinkName    = "local"
)

// QueueConfig is the gateway's buffer config for path and consumers.
func QueueConfig(path string, consumers []string, maxBatch int) buffer.Config {
	return buffer.Config{
		Path:        path,
		MaxBytes:    MaxBytes,
		MaxAge:      MaxAge,
		WhenFull:    buffer.Reject,
		DedupWindow: DedupWindow,
		Consumers:   consumers,
		MaxBatch:    maxBatch,
	}
}

// Options configure a Server.
type Options struct {
	Webhook   string // webhook listen address
	Broker    string // embedded broker TCP listen address
	Admin     string // /readyz, /stats, /start and (with Pprof) /debug/pprof; "" = off
	QueuePath string
	MaxBatch  int  // buffer.Config.MaxBatch; 0 = the product default
	Values    bool // sink values (the product default is true)
	Retain    bool // sink retain (the product default is true)
	Pprof     bool
	// HoldForwarder keeps the forwarder stopped until GET /start (or
	// StartForwarder): queue a backlog first, then profile its drain.
	HoldForwarder bool
	Log           zerolog.Logger
}

// Server is a running harness.
type Server struct {
	opts     Options
	Queue    *buffer.Queue
	broker   *broker.Server
	sink     *broker.Sink
	fwd      *bridge.Forwarder
	Receiver *bridge.Receiver
	web      *http.Server
	admin    *http.Server

	fwdCtx    context.Context
	fwdCancel context.CancelFunc
	fwdOnce   sync.Once
	fwdWG     sync.WaitGroup
	Started   atomic.Int64 // Unix ns the forwarder started; 0 before
	ready     atomic.Bool
}

// Start opens everything; the forwarder runs at once unless HoldForwarder.
func Start(o Options) (s *Server, err error) {
	s = &Server{opts: o}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	s.Queue, err = buffer.Open(QueueConfig(o.QueuePath, []string{SinkName}, o.MaxBatch), o.Log)
	if err != nil {
		return s, err
	}
	s.broker, err = broker.New(broker.Config{
		Listeners:      []broker.Listener{{Type: broker.TypeTCP, Address: o.Broker}},
		AllowAnonymous: true,
	}, o.Log)
	if err != nil {
		return s, err
	}
	if err = s.broker.Start(); err != nil {
		return s, err
	}
	s.sink, err = broker.NewSink(s.broker, broker.SinkConfig{
		Name: SinkName, TopicPrefix: "wittra", Values: o.Values, Retain: o.Retain, GatewayID: "bench",
	}, o.Log)
	if err != nil {
		return s, err
	}
	r, err := s.Queue.Reader(SinkName)
	if err != nil {
		return s, err
	}
	s.fwd = bridge.NewForwarder(bridge.ForwarderConfig{}, r, s.sink, o.Log)
	s.fwdCtx, s.fwdCancel = context.WithCancel(context.Background())
	if !o.HoldForwarder {
		s.StartForwarder()
	}
	s.Receiver = bridge.NewReceiver(bridge.ReceiverConfig{
		Routes:  []bridge.Route{{Path: RoutePath}},
		MaxBody: MaxBody,
	}, s.Queue, o.Log)
	ln, err := net.Listen("tcp", o.Webhook)
	if err != nil {
		return s, err
	}
	s.web = &http.Server{
		Handler:           s.Receiver,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    32 << 10,
	}
	go s.web.Serve(ln)
	if o.Admin != "" {
		aln, err := net.Listen("tcp", o.Admin)
		if err != nil {
			return s, err
		}
		s.admin = &http.Server{Handler: s.adminMux(), ReadHeaderTimeout: 5 * time.Second}
		go s.admin.Serve(aln)
	}
	s.ready.Store(true)
	return s, nil
}

// StartForwarder starts delivery (once).
func (s *Server) StartForwarder() {
	s.fwdOnce.Do(func() {
		s.Started.Store(time.Now().UnixNano())
		s.fwdWG.Add(1)
		go func() {
			defer s.fwdWG.Done()
			if err := s.fwd.Run(s.fwdCtx); err != nil {
				s.opts.Log.Error().Err(err).Msg("forwarder")
			}
		}()
	})
}

// Stats is what /stats returns.
type Stats struct {
	Depth       uint64 `json:"depth"`
	Messages    uint64 `json:"messages"`
	Bytes       int64  `json:"bytes"`
	Commits     uint64 `json:"commits"`
	Delivered   uint64 `json:"delivered"`
	FileBytes   int64  `json:"file_bytes"`
	Compactions uint64 `json:"compactions"`
}

// Stats reads the queue and forwarder counters.
func (s *Server) Stats() (Stats, error) {
	st, err := s.Queue.Stats()
	if err != nil {
		return Stats{}, err
	}
	out := Stats{Messages: st.Messages, Bytes: st.Bytes, Commits: st.Commits, Compactions: st.Compactions,
		Delivered: s.fwd.Stats().Delivered.Load(), FileBytes: s.Queue.FileSize()}
	for _, c := range st.Consumers {
		out.Depth += c.Depth
	}
	return out, nil
}

func (s *Server) adminMux() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		st, err := s.Stats()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		json.NewEncoder(w).Encode(st)
	})
	mux.HandleFunc("GET /start", func(w http.ResponseWriter, _ *http.Request) {
		s.StartForwarder()
		fmt.Fprintln(w, "forwarder started")
	})
	if s.opts.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// Close stops intake, delivery, the broker and the queue, in that order.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 9*time.Second)
	defer cancel()
	s.ready.Store(false)
	var errs []error
	for _, srv := range []*http.Server{s.web, s.admin} {
		if srv != nil {
			if err := srv.Shutdown(ctx); err != nil {
				srv.Close()
			}
		}
	}
	if s.fwdCancel != nil {
		s.fwdCancel()
	}
	s.fwdWG.Wait()
	if s.sink != nil {
		errs = append(errs, s.sink.Close(ctx))
	}
	if s.broker != nil {
		errs = append(errs, s.broker.Close())
	}
	if s.Queue != nil {
		errs = append(errs, s.Queue.Close())
	}
	return errors.Join(errs...)
}

// FillResult describes a Fill.
type FillResult struct {
	Messages     uint64  `json:"messages"`
	PayloadBytes uint64  `json:"payload_bytes"` // message bodies as posted
	Seconds      float64 `json:"seconds"`
}

// Fill posts n messages of spec through h (a bridge.Receiver) in-process,
// batch messages per request and workers requests at a time. Every request
// must be answered 200 with every message new.
func Fill(ctx context.Context, h http.Handler, spec wmsg.Spec, n uint64, batch, workers int) (FillResult, error) {
	start := time.Now()
	var next, payload, accepted atomic.Uint64
	var firstErr error
	var errOnce sync.Once
	fail := func(err error) { errOnce.Do(func() { firstErr = err }) }
	var wg sync.WaitGroup
	for w := 0; w < max(1, workers); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := make([]byte, 0, batch*700)
			var msg []byte
			for ctx.Err() == nil && firstErr == nil {
				first := next.Add(uint64(batch)) - uint64(batch)
				if first >= n {
					return
				}
				k := int(min(uint64(batch), n-first))
				now := time.Now()
				body = append(body[:0], '[')
				var pb uint64
				for i := 0; i < k; i++ {
					if i > 0 {
						body = append(body, ',')
					}
					msg = spec.Append(msg[:0], first+uint64(i), now)
					pb += uint64(len(msg))
					body = append(body, msg...)
				}
				body = append(body, ']')
				req := httptest.NewRequestWithContext(ctx, http.MethodPost, RoutePath, bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, req)
				if rec.Code != http.StatusOK {
					fail(fmt.Errorf("fill: request at %d: %d %s", first, rec.Code, rec.Body.String()))
					return
				}
				var reply struct{ Accepted, Duplicates int }
				if err := json.Unmarshal(rec.Body.Bytes(), &reply); err != nil || reply.Accepted != k {
					fail(fmt.Errorf("fill: request at %d: reply %s", first, rec.Body.String()))
					return
				}
				payload.Add(pb)
				accepted.Add(uint64(k))
			}
		}()
	}
	wg.Wait()
	res := FillResult{Messages: accepted.Load(), PayloadBytes: payload.Load(), Seconds: time.Since(start).Seconds()}
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return res, firstErr
}

// Logger is a JSON logger at level on stderr.
func Logger(level string) zerolog.Logger {
	l, err := zerolog.ParseLevel(level)
	if err != nil || level == "" {
		l = zerolog.WarnLevel
	}
	return zerolog.New(os.Stderr).Level(l).With().Timestamp().Logger()
}
