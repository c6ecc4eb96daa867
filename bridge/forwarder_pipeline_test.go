package bridge

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"wittra-gateway/buffer"
	"wittra-gateway/internal/testutil"
	"wittra-gateway/sinks"
)

// windowSink imitates a sink that keeps publications in flight across
// Publish calls (the durable subscriber): a call sends the messages it has
// not sent before and, when there were some, returns early with its last
// hold messages still awaiting acknowledgement; a call with nothing new
// waits for release (when set) and then delivers everything.
type windowSink struct {
	hold    int
	release chan struct{}

	mu      sync.Mutex
	sent    []uint64 // in send order
	seen    map[uint64]bool
	calls   [][]uint64
	mixed   int // calls with held messages followed by new ones
	waiting bool
}

func (s *windowSink) Name() string                { return "window" }
func (s *windowSink) Close(context.Context) error { return nil }

func (s *windowSink) Publish(ctx context.Context, msgs []sinks.Message) (int, error) {
	s.mu.Lock()
	fresh := 0
	var call []uint64
	for _, m := range msgs {
		call = append(call, m.Seq)
		if !s.seen[m.Seq] {
			s.seen[m.Seq] = true
			s.sent = append(s.sent, m.Seq)
			fresh++
		}
	}
	s.calls = append(s.calls, call)
	if fresh > 0 && fresh < len(msgs) {
		s.mixed++
	}
	if fresh > 0 && len(msgs) > s.hold {
		s.mu.Unlock()
		return len(msgs) - s.hold, nil
	}
	s.waiting = s.release != nil
	s.mu.Unlock()
	if s.release != nil {
		select {
		case <-s.release:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return len(msgs), nil
}

func (s *windowSink) snapshot() (sent []uint64, calls [][]uint64, waiting bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.sent), slices.Clone(s.calls), s.waiting
}

func (s *windowSink) mixedCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mixed
}

func postN(t *testing.T, in *intake, n int) {
	t.Helper()
	for i := range n {
		body := fmt.Sprintf(`{"deviceId":"D%d","payloadId":"pipe-%d"}`, i%3, i)
		if got := in.post(t, "POST", "/wittra", "application/json", body, nil); got.code != 200 {
			t.Fatalf("post %d: %d", i, got.code)
		}
	}
}

func runForwarder(t *testing.T, in *intake, cfg ForwarderConfig, sink sinks.Sink) {
	t.Helper()
	r, err := in.q.Reader("s")
	if err != nil {
		t.Fatal(err)
	}
	f := NewForwarder(cfg, r, sink, zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func waitCursor(t *testing.T, in *intake, want uint64) {
	t.Helper()
	var cursor uint64
	if !testutil.Poll(10*time.Second, func() bool {
		st, err := in.q.Stats()
		if err != nil {
			t.Fatal(err)
		}
		cursor = st.Consumers[0].Cursor
		return cursor == want
	}) {
		t.Fatalf("cursor %d, want %d", cursor, want)
	}
}

// A sink that returns early gets its rest back followed by newer messages:
// each message is sent once, in order, every call holds at most two
// batches, and the cursor reaches the end.
func TestForwarderHandsBackTheRestWithNewerMessages(t *testing.T) {
	in := newIntake(t, buffer.Config{})
	postN(t, in, 30)
	sink := &windowSink{hold: 3, seen: map[uint64]bool{}}
	runForwarder(t, in, ForwarderConfig{Batch: 7}, sink)
	waitCursor(t, in, 30)

	sent, calls, _ := sink.snapshot()
	if len(sent) != 30 {
		t.Fatalf("sent %v, want 1..30 once each", sent)
	}
	for i, seq := range sent {
		if seq != uint64(i+1) {
			t.Fatalf("sent %v, want 1..30 in order", sent)
		}
	}
	for _, c := range calls {
		if len(c) > 14 {
			t.Fatalf("call of %d messages %v: more than two batches of 7", len(c), c)
		}
		for i := 1; i < len(c); i++ {
			if c[i] != c[i-1]+1 {
				t.Fatalf("call %v: not consecutive", c)
			}
		}
	}
	if sink.mixedCalls() == 0 {
		t.Fatalf("no call carried the held messages together with newer ones: %v", calls)
	}
}

// While the rest of an early return is in flight, the cursor already
// stands before it; the rest is delivered once acknowledged, without
// waiting for a newer message.
func TestForwarderAcknowledgesBeforeTheRestInFlight(t *testing.T) {
	in := newIntake(t, buffer.Config{})
	postN(t, in, 10)
	sink := &windowSink{hold: 3, seen: map[uint64]bool{}, release: make(chan struct{})}
	runForwarder(t, in, ForwarderConfig{Batch: 10}, sink)
	waitCursor(t, in, 7)
	testutil.WaitFor(t, 10*time.Second, "the rest handed back to the sink", func() bool { _, _, waiting := sink.snapshot(); return waiting })
	close(sink.release)
	waitCursor(t, in, 10)
	sent, calls, _ := sink.snapshot()
	if want := []uint64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}; !slices.Equal(sent, want) {
		t.Fatalf("sent %v, want %v", sent, want)
	}
	if len(calls) != 2 || !slices.Equal(calls[1], []uint64{8, 9, 10}) {
		t.Fatalf("calls %v, want 1..10 then the rest 8..10", calls)
	}
}
