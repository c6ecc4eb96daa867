// Command wittra-load is the gateway's load generator. It posts
// Wittra-shaped messages (unique payloadId, many devices, the send time in
// "timestamp") to the webhook over keep-alive connections, either as fast as
// -c clients go (closed loop) or at a fixed -rate, and optionally subscribes
// to the output broker to measure end-to-end latency, loss and duplication.
//
// Every run is bounded: sending stops at -n messages, after -d, or on
// SIGINT/SIGTERM (a second signal exits at once); the subscriber then waits
// at most -sub-wait for stragglers.
//
//	wittra-load -url http://127.0.0.1:8080/wittra -c 64 -d 15s
//	wittra-load -rate 1000 -c 16 -d 30s -sub tcp://127.0.0.1:1883
//	wittra-load ... -json      # one JSON object on stdout
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"wittra-gateway/internal/wmsg"
)

type options struct {
	url       string
	token     string
	rawToken  bool
	clients   int
	rate      float64
	n         uint64
	dur       time.Duration
	batch     int
	devices   int
	devBase   int
	project   string
	shape     string
	run       string
	timeout   time.Duration
	sub       string
	subTopic  string
	subPrefix string
	subQoS    int
	subID     string
	subWait   time.Duration
	subIdle   time.Duration
	json      bool
	progress  time.Duration
	label     string
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	var o options
	fs := flag.NewFlagSet("wittra-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.url, "url", "http://127.0.0.1:8080/wittra", "webhook URL (http:// only)")
	fs.StringVar(&o.token, "token", "", "route token; sent base64-encoded in auth-token (see -raw-token)")
	fs.BoolVar(&o.rawToken, "raw-token", false, "send -token as is instead of base64")
	fs.IntVar(&o.clients, "c", 32, "concurrent clients (one keep-alive connection each)")
	fs.Float64Var(&o.rate, "rate", 0, "messages per second; 0 = closed loop, as fast as the clients go")
	fs.Uint64Var(&o.n, "n", 0, "stop after this many messages (0: only -d bounds the run)")
	fs.DurationVar(&o.dur, "d", 10*time.Second, "stop sending after this long (always applies)")
	fs.IntVar(&o.batch, "batch", 1, "messages per request (>1 posts a JSON array)")
	fs.IntVar(&o.devices, "devices", 1000, "distinct device ids")
	fs.IntVar(&o.devBase, "device-base", 0, "number of the first device (disjoint ranges: disjoint devices)")
	fs.StringVar(&o.project, "project", "bench", `projectId in the bodies ("" = none: the route's project applies)`)
	fs.StringVar(&o.shape, "shape", wmsg.ShapeSmall, "message shape: small (~300 B) or full (~600 B, the f1 fixture's fields)")
	fs.StringVar(&o.run, "run", "", "run id, 8 letters/digits, part of every payloadId (default: random)")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "per-request timeout")
	fs.StringVar(&o.sub, "sub", "", `MQTT URL of the output broker to subscribe to, e.g. tcp://127.0.0.1:1883 ("" = no subscriber)`)
	fs.StringVar(&o.subTopic, "sub-topic", "", "topic filter (default <sub-prefix>/<project or +>/+/data)")
	fs.StringVar(&o.subPrefix, "sub-prefix", "wittra", "topic prefix of the sink")
	fs.IntVar(&o.subQoS, "sub-qos", 0, "subscription QoS")
	fs.StringVar(&o.subID, "sub-client-id", "", `subscriber's MQTT client id, e.g. a durable subscriber's ("" = wittra-load-<run>)`)
	fs.DurationVar(&o.subWait, "sub-wait", 15*time.Second, "after sending, wait at most this long for the subscriber to receive everything")
	fs.DurationVar(&o.subIdle, "sub-idle", 3*time.Second, "stop waiting when nothing arrived for this long")
	fs.BoolVar(&o.json, "json", false, "print one JSON object instead of a table")
	fs.DurationVar(&o.progress, "progress", 0, "print progress to stderr at this interval (0 = off)")
	fs.StringVar(&o.label, "label", "", "free text copied into the report")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if err := o.check(); err != nil {
		fmt.Fprintln(stderr, "wittra-load:", err)
		return 2
	}
	rep, err := load(o, stderr)
	if err != nil {
		fmt.Fprintln(stderr, "wittra-load:", err)
		return 1
	}
	if o.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(rep)
	} else {
		rep.table(stdout)
	}
	return 0
}

func (o *options) check() error {
	switch {
	case o.clients < 1 || o.clients > 10000:
		return errors.New("-c must be 1..10000")
	case o.batch < 1 || o.batch > 10000:
		return errors.New("-batch must be 1..10000")
	case o.dur <= 0:
		return errors.New("-d must be > 0: every run is bounded in time")
	case o.rate < 0:
		return errors.New("-rate must be ≥ 0")
	case o.devices < 1 || o.devBase < 0:
		return errors.New("-devices must be ≥ 1 and -device-base ≥ 0")
	case o.shape != wmsg.ShapeSmall && o.shape != wmsg.ShapeFull:
		return fmt.Errorf("-shape must be %s or %s", wmsg.ShapeSmall, wmsg.ShapeFull)
	case o.subQoS < 0 || o.subQoS > 2:
		return errors.New("-sub-qos must be 0, 1 or 2")
	}
	if o.run == "" {
		o.run = wmsg.NewRunID(time.Now())
	}
	if err := wmsg.CheckRunID(o.run); err != nil {
		return err
	}
	if o.subTopic == "" {
		p := o.project
		if p == "" {
			p = "+"
		}
		o.subTopic = o.subPrefix + "/" + p + "/+/data"
	}
	if o.token != "" && !o.rawToken {
		o.token = base64.StdEncoding.EncodeToString([]byte(o.token))
	}
	return nil
}

// maxTracked bounds the sequences tracked for loss detection (two bitsets
// of this many bits) when neither -n nor -rate bounds the count.
const maxTracked = 64 << 20

// limit is the number of messages this run may send.
func (o *options) limit() uint64 {
	if o.n > 0 {
		return o.n
	}
	if o.rate > 0 {
		return uint64(o.rate*o.dur.Seconds()*1.05) + uint64(o.batch)
	}
	return maxTracked
}

// Report is the result of one run.
type Report struct {
	Label       string            `json:"label,omitempty"`
	Run         string            `json:"run"`
	URL         string            `json:"url"`
	Mode        string            `json:"mode"` // closed | rate
	Clients     int               `json:"clients"`
	TargetRate  float64           `json:"target_rate,omitempty"`
	Batch       int               `json:"batch"`
	Shape       string            `json:"shape"`
	Devices     int               `json:"devices"`
	BodyBytes   float64           `json:"avg_message_bytes"`
	Started     string            `json:"started"`
	DurationS   float64           `json:"duration_s"` // first send to last reply
	StoppedBy   string            `json:"stopped_by"` // count | time | signal
	Requests    uint64            `json:"requests"`
	Messages    uint64            `json:"messages"`    // sent
	Accepted    uint64            `json:"accepted"`    // in requests answered 200
	ServerNew   uint64            `json:"server_new"`  // "accepted" in the 200 replies
	ServerDups  uint64            `json:"server_dups"` // "duplicates" in the 200 replies
	AcceptedPS  float64           `json:"accepted_per_s"`
	RequestsPS  float64           `json:"requests_per_s"`
	Behind      uint64            `json:"behind,omitempty"` // rate mode: sends skipped because every client was busy
	Codes       map[string]uint64 `json:"codes"`
	Errors      map[string]uint64 `json:"errors"` // non-200 codes and transport errors
	ErrorSample map[string]string `json:"error_samples,omitempty"`
	Latency     Latency           `json:"request_latency"`
	Sub         *SubReport        `json:"subscriber,omitempty"`
	GoMaxProcs  int               `json:"gomaxprocs"`
}

type worker struct {
	h         hist
	requests  uint64
	messages  uint64
	accepted  uint64
	serverNew uint64
	serverDup uint64
	bytes     uint64
	codes     map[int]uint64
	errs      map[string]uint64
	samples   map[string]string
}

func load(o options, stderr io.Writer) (*Report, error) {
	limit := o.limit()
	if o.n == 0 && limit > maxTracked {
		limit = maxTracked
	}
	accepted := newBitset(limit)
	spec := wmsg.Spec{Run: o.run, Project: o.project, Devices: o.devices, DeviceBase: o.devBase, Shape: o.shape}

	// Check the target answers before starting anything else.
	if err := probe(o.url); err != nil {
		return nil, err
	}

	var sub *subscriber
	if o.sub != "" {
		var err error
		if sub, err = startSubscriber(o.sub, o.subTopic, byte(o.subQoS), o.run, o.subID, accepted); err != nil {
			return nil, err
		}
		defer sub.close()
	}

	ctx, cancel := context.WithTimeout(context.Background(), o.dur)
	defer cancel()
	var stoppedBy atomic.Value
	stoppedBy.Store("time")
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		select {
		case <-sigs:
			stoppedBy.Store("signal")
			cancel()
		case <-ctx.Done():
			return
		}
		select {
		case <-sigs:
			fmt.Fprintln(stderr, "wittra-load: second signal, exiting")
			os.Exit(130)
		case <-time.After(o.subWait + o.timeout + 30*time.Second):
		}
	}()

	var next atomic.Uint64 // next sequence to send
	var countDone atomic.Bool
	var tokens chan struct{}
	var behind atomic.Uint64
	start := time.Now()
	if o.rate > 0 {
		tokens = make(chan struct{}, 2*o.clients)
		go pace(ctx, tokens, o.rate/float64(o.batch), &behind)
	}

	workers := make([]*worker, o.clients)
	var wg sync.WaitGroup
	for i := range workers {
		w := &worker{codes: map[int]uint64{}, errs: map[string]uint64{}, samples: map[string]string{}}
		workers[i] = w
		hc, err := newHTTPConn(o.url, o.token, o.timeout)
		if err != nil {
			return nil, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer hc.close()
			w.loop(ctx, hc, &spec, o.batch, limit, &next, &countDone, tokens, accepted)
		}()
	}
	var stopProgress chan struct{}
	if o.progress > 0 {
		stopProgress = make(chan struct{})
		go progress(stderr, o.progress, start, &next, sub, stopProgress)
	}
	wg.Wait()
	elapsed := time.Since(start)
	if countDone.Load() {
		stoppedBy.Store("count")
	}
	cancel()
	if stopProgress != nil {
		close(stopProgress)
	}

	rep := &Report{
		Label: o.label, Run: o.run, URL: o.url, Mode: "closed", Clients: o.clients, Batch: o.batch,
		Shape: o.shape, Devices: o.devices, Started: start.UTC().Format(time.RFC3339),
		DurationS: elapsed.Seconds(), StoppedBy: stoppedBy.Load().(string),
		Codes: map[string]uint64{}, Errors: map[string]uint64{}, ErrorSample: map[string]string{},
		Behind: behind.Load(), GoMaxProcs: runtime.GOMAXPROCS(0),
	}
	if o.rate > 0 {
		rep.Mode, rep.TargetRate = "rate", o.rate
	}
	var h hist
	var bodyBytes uint64
	for _, w := range workers {
		h.merge(&w.h)
		rep.Requests += w.requests
		rep.Messages += w.messages
		rep.Accepted += w.accepted
		rep.ServerNew += w.serverNew
		rep.ServerDups += w.serverDup
		bodyBytes += w.bytes
		for c, n := range w.codes {
			rep.Codes[strconv.Itoa(c)] += n
			if c != 200 {
				rep.Errors[strconv.Itoa(c)] += n
			}
		}
		for k, n := range w.errs {
			rep.Errors[k] += n
		}
		for k, s := range w.samples {
			rep.ErrorSample[k] = s
		}
	}
	rep.Latency = h.summary()
	if rep.Messages > 0 {
		rep.BodyBytes = float64(bodyBytes) / float64(rep.Messages)
	}
	if s := elapsed.Seconds(); s > 0 {
		rep.AcceptedPS = float64(rep.Accepted) / s
		rep.RequestsPS = float64(rep.Requests) / s
	}
	if sub != nil {
		acc := rep.Accepted
		wait := sub.wait(func() uint64 { return acc }, o.subIdle, o.subWait)
		rep.Sub = sub.report(o.sub, o.subTopic, byte(o.subQoS), wait)
	}
	return rep, nil
}

// probe checks that something listens at the URL's address.
func probe(rawURL string) error {
	hc, err := newHTTPConn(rawURL, "", 2*time.Second)
	if err != nil {
		return err
	}
	c, err := net.DialTimeout("tcp", hc.addr, 2*time.Second)
	if err != nil {
		return fmt.Errorf("webhook %s: %w", rawURL, err)
	}
	return c.Close()
}

// pace hands out one token per request at rate requests/s; when every
// client is busy and the buffer is full the send is skipped and counted.
func pace(ctx context.Context, tokens chan<- struct{}, rate float64, behind *atomic.Uint64) {
	defer close(tokens)
	start := time.Now()
	var issued uint64
	t := time.NewTicker(500 * time.Microsecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			due := uint64(now.Sub(start).Seconds() * rate)
			for ; issued < due; issued++ {
				select {
				case tokens <- struct{}{}:
				default:
					behind.Add(1)
				}
			}
		}
	}
}

func (w *worker) loop(ctx context.Context, hc *httpConn, spec *wmsg.Spec, batch int, limit uint64,
	next *atomic.Uint64, countDone *atomic.Bool, tokens <-chan struct{}, accepted bitset) {
	body := make([]byte, 0, 1024*batch)
	failures := 0
	for ctx.Err() == nil {
		if tokens != nil {
			select {
			case _, ok := <-tokens:
				if !ok {
					return
				}
			case <-ctx.Done():
				return
			}
		}
		first := next.Add(uint64(batch)) - uint64(batch)
		if first+uint64(batch) > limit {
			countDone.Store(true)
			return
		}
		t0 := time.Now()
		body = spec.AppendBody(body[:0], first, batch, t0)
		code, resp, err := hc.post(body)
		w.h.add(time.Since(t0))
		w.requests++
		w.messages += uint64(batch)
		w.bytes += uint64(len(body))
		if err != nil {
			k := errKind(err)
			w.errs[k]++
			if _, ok := w.samples[k]; !ok {
				w.samples[k] = err.Error()
			}
			// A dead target must not become a busy loop: back off a little,
			// more after repeated failures.
			failures++
			select {
			case <-time.After(time.Duration(min(failures, 20)) * 10 * time.Millisecond):
			case <-ctx.Done():
			}
			continue
		}
		failures = 0
		w.codes[code]++
		if code != 200 {
			k := strconv.Itoa(code)
			if _, ok := w.samples[k]; !ok {
				w.samples[k] = string(resp)
			}
			continue
		}
		w.accepted += uint64(batch)
		if a, d, ok := replyCounts(resp); ok {
			w.serverNew += a
			w.serverDup += d
		}
		for s := first; s < first+uint64(batch); s++ {
			accepted.set(s)
		}
	}
}

func errKind(err error) string {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, errMalformed):
		return "malformed"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	default:
		return "conn"
	}
}

func progress(w io.Writer, every time.Duration, start time.Time, next *atomic.Uint64, sub *subscriber, stop <-chan struct{}) {
	t := time.NewTicker(every)
	defer t.Stop()
	var last uint64
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			n := next.Load()
			line := fmt.Sprintf("%6.1fs sent %d (%.0f/s)", time.Since(start).Seconds(), n, float64(n-last)/every.Seconds())
			if sub != nil {
				line += fmt.Sprintf(" received %d", sub.unique.Load())
			}
			fmt.Fprintln(w, line)
			last = n
		}
	}
}

func (r *Report) table(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	mode := fmt.Sprintf("closed loop, %d clients", r.Clients)
	if r.Mode == "rate" {
		mode = fmt.Sprintf("%.0f msg/s, %d clients", r.TargetRate, r.Clients)
	}
	fmt.Fprintf(tw, "run\t%s %s\n", r.Run, r.Label)
	fmt.Fprintf(tw, "target\t%s (%s, batch %d, %s messages ~%.0f B, %d devices)\n", r.URL, mode, r.Batch, r.Shape, r.BodyBytes, r.Devices)
	fmt.Fprintf(tw, "sent\t%d messages in %d requests, %.2f s (stopped by %s)\n", r.Messages, r.Requests, r.DurationS, r.StoppedBy)
	fmt.Fprintf(tw, "accepted\t%d (%.0f msg/s); server: %d new, %d duplicates\n", r.Accepted, r.AcceptedPS, r.ServerNew, r.ServerDups)
	if r.Behind > 0 {
		fmt.Fprintf(tw, "behind\t%d sends skipped: every client busy\n", r.Behind)
	}
	fmt.Fprintf(tw, "errors\t%s\n", fmtCounts(r.Errors))
	l := r.Latency
	fmt.Fprintf(tw, "request latency\tp50 %.2f ms  p90 %.2f ms  p99 %.2f ms  p99.9 %.2f ms  max %.2f ms  (mean %.2f)\n", l.P50Ms, l.P90Ms, l.P99Ms, l.P999Ms, l.MaxMs, l.MeanMs)
	if s := r.Sub; s != nil {
		e := s.E2E
		fmt.Fprintf(tw, "subscriber\t%s %s qos %d: received %d (unique %d), lost %d, duplicated %d, unexpected %d, foreign %d, waited %.1f s\n",
			s.URL, s.Topic, s.QoS, s.Received, s.Unique, s.Lost, s.Duplicated, s.Unexpected, s.Foreign, s.WaitS)
		fmt.Fprintf(tw, "end-to-end latency\tp50 %.2f ms  p90 %.2f ms  p99 %.2f ms  p99.9 %.2f ms  max %.2f ms\n", e.P50Ms, e.P90Ms, e.P99Ms, e.P999Ms, e.MaxMs)
	}
	for k, s := range r.ErrorSample {
		if len(s) > 200 {
			s = s[:200] + "…"
		}
		fmt.Fprintf(tw, "error %s\t%s\n", k, s)
	}
	tw.Flush()
}

func fmtCounts(m map[string]uint64) string {
	if len(m) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	s := ""
	for i, k := range keys {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%s: %d", k, m[k])
	}
	return s
}
