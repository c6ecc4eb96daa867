package cumulocity

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"wittra-gateway/buffer"
	"wittra-gateway/internal/testutil"
	"wittra-gateway/sinks"
	"wittra-gateway/sinks/cumulocity/c8yfake"
	"wittra-gateway/wittra"
)

const (
	testGateway = "gw-test-1"
	testUser    = "device_gw-test-1"
	testPass    = "s3cret, \"quoted\""
	tagID       = "D00124B001E2A1B2C" // f1, f3, f6
	lpthID      = "D00124B001E2D3E4F" // f2, f4
)

// fixture returns a shared example webhook body.
func fixture(t testing.TB, name string) []byte {
	return testutil.ReadFile(t, "..", "..", "testdata", name)
}

var seq atomic.Uint64

// message builds a queued message from a body the way the receiver does.
func message(t testing.TB, body []byte) sinks.Message {
	t.Helper()
	id, err := wittra.Identify(body)
	if err != nil {
		t.Fatalf("identify: %v", err)
	}
	m := sinks.Message{Seq: seq.Add(1), Received: time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC), Project: "p", Device: id.Device, Body: body}
	if m.Device == "" {
		m.Device = "_unknown"
	}
	if id.Event {
		m.Kind = sinks.KindEvent
	}
	return m
}

func startFake(t testing.TB) *c8yfake.Server {
	t.Helper()
	f, err := c8yfake.Start(c8yfake.Options{Users: map[string]string{testUser: testPass}})
	if err != nil {
		t.Fatalf("start fake: %v", err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f
}

// newSink builds a sink of mode against f; mod may adjust the config.
func newSink(t testing.TB, f *c8yfake.Server, mode string, mod func(*Config)) *Sink {
	t.Helper()
	cfg := Config{
		Name:                 "c8y",
		Mode:                 mode,
		URL:                  f.MQTTURL(),
		Tenant:               f.Tenant(),
		Username:             testUser,
		Password:             testPass,
		GatewayID:            testGateway,
		RequestTimeout:       3 * time.Second,
		connectRetryInterval: 200 * time.Millisecond,
	}
	if mode == ModeREST {
		cfg.URL = f.URL()
	}
	if mod != nil {
		mod(&cfg)
	}
	log, _ := testutil.Logger(t) // printed when the test fails
	s, err := New(cfg, log)
	if err != nil {
		t.Fatalf("new sink: %v", err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

// openKV opens a real queue file in dir and returns its KV for the sink.
func openKV(t testing.TB, dir string) (*buffer.Queue, *buffer.KV) {
	t.Helper()
	q, err := buffer.Open(buffer.Config{Path: filepath.Join(dir, "queue.db"), Consumers: []string{"c8y"}}, zerolog.Nop())
	if err != nil {
		t.Fatalf("open queue: %v", err)
	}
	return q, q.KV("c8y")
}

// result of deliverAll.
type delivery struct {
	rejected []uint64 // Seq of messages refused permanently
	attempts int      // Publish calls
	failures []string // transient errors seen
	elapsed  time.Duration
}

// deliverAll does what the forwarder does: Publish, drop what was
// delivered, skip a permanently refused message, retry the rest after a
// short pause, until everything is through or timeout.
func deliverAll(t testing.TB, s *Sink, msgs []sinks.Message, timeout time.Duration) (d delivery) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	defer func() { d.elapsed = time.Since(start) }()
	for len(msgs) > 0 {
		d.attempts++
		n, err := s.Publish(ctx, msgs)
		if n < 0 || n > len(msgs) {
			t.Fatalf("Publish returned %d of %d", n, len(msgs))
		}
		if n < len(msgs) && err == nil {
			t.Fatalf("Publish returned %d of %d without an error", n, len(msgs))
		}
		msgs = msgs[n:]
		switch {
		case err == nil:
		case errors.Is(err, sinks.ErrPermanent):
			d.rejected = append(d.rejected, msgs[0].Seq)
			msgs = msgs[1:]
		default:
			d.failures = append(d.failures, err.Error())
			if ctx.Err() != nil {
				t.Fatalf("not delivered within %v: %d left; errors: %q", timeout, len(msgs), d.failures)
			}
			select {
			case <-time.After(50 * time.Millisecond):
			case <-ctx.Done():
			}
		}
	}
	return d
}

// flat renders what the fake stored for the device with external id ext
// as sorted lines, one per series, event or location:
//
//	M <type> <time> <fragment>.<series>=<value> <unit>
//	E <type> <time> <text>
//	L <time> <lat> <lng> <alt> <accuracy>
//
// and, per line, how many times it was stored.
func flat(f *c8yfake.Server, ext string) (lines []string, counts map[string]int) {
	mo, ok := f.DeviceBySerial(ext)
	if !ok {
		return nil, nil
	}
	counts = map[string]int{}
	add := func(l string) {
		if counts[l] == 0 {
			lines = append(lines, l)
		}
		counts[l]++
	}
	for _, m := range f.Measurements() {
		if m.Source != mo.ID {
			continue
		}
		for frag, ss := range m.Fragments {
			for name, s := range ss {
				add(fmt.Sprintf("M %s %s %s.%s=%s %s", m.Type, m.TimeText, frag, name, s.Text, s.Unit))
			}
		}
	}
	for _, e := range f.Events() {
		if e.Source != mo.ID {
			continue
		}
		if e.Position != nil {
			add(fmt.Sprintf("L %s %s", e.TimeText, posText(e.Position)))
			continue
		}
		add(fmt.Sprintf("E %s %s %s", e.Type, e.TimeText, e.Text))
	}
	slices.Sort(lines)
	return lines, counts
}

func posText(p *c8yfake.Position) string {
	opt := func(v *float64) string {
		if v == nil {
			return "-"
		}
		return strconv.FormatFloat(*v, 'g', -1, 64)
	}
	return fmt.Sprintf("%g %g %s %s", p.Lat, p.Lng, opt(p.Alt), opt(p.Accuracy))
}

// duplicates sums how many extra copies counts shows.
func duplicates(counts map[string]int) int {
	n := 0
	for _, c := range counts {
		n += c - 1
	}
	return n
}

func diffLines(got, want []string) string {
	var b strings.Builder
	for _, l := range want {
		if !slices.Contains(got, l) {
			fmt.Fprintf(&b, "\n  missing: %s", l)
		}
	}
	for _, l := range got {
		if !slices.Contains(want, l) {
			fmt.Fprintf(&b, "\n  unexpected: %s", l)
		}
	}
	return b.String()
}
