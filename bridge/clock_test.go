package bridge

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"wittra-gateway/buffer"
	"wittra-gateway/internal/clock"
	"wittra-gateway/sinks"
)

// timeSink refuses, retryably, a message whose receive time is unsure (as
// the Cumulocity sink does) and records what it delivers.
type timeSink struct {
	got     chan sinks.Message
	refused chan struct{}
}

func (s *timeSink) Name() string                { return "time" }
func (s *timeSink) Close(context.Context) error { return nil }
func (s *timeSink) Publish(ctx context.Context, msgs []sinks.Message) (int, error) {
	for i, m := range msgs {
		if m.ReceivedUnsure {
			select {
			case s.refused <- struct{}{}:
			default:
			}
			return i, errors.New("clock not trusted")
		}
		s.got <- m
	}
	return len(msgs), nil
}

// Boot at 1970, accept messages, NTP steps to now: the messages are
// delivered with their receipt on the corrected clock, never 1970.
func TestReceiveTimesCorrectedOnceTheClockIsSet(t *testing.T) {
	fc := clock.NewFake(time.Date(1970, 1, 1, 0, 1, 0, 0, time.UTC))
	in := newIntake(t, buffer.Config{Clock: fc, BuildFloor: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC), MaxAge: time.Hour})
	for _, id := range []string{"p1", "p2"} {
		if got := in.post(t, "POST", "/wittra", "application/json", `{"deviceId":"D1","payloadId":"`+id+`"}`, nil); got.code != 200 {
			t.Fatalf("post: %d %s", got.code, got.body)
		}
	}
	fc.Advance(3 * time.Minute)
	sink := &timeSink{got: make(chan sinks.Message, 10), refused: make(chan struct{}, 1)}
	r, err := in.q.Reader("s")
	if err != nil {
		t.Fatal(err)
	}
	f := NewForwarder(ForwarderConfig{MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond}, r, sink, zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	select {
	case <-sink.refused:
	case <-time.After(10 * time.Second):
		t.Fatal("the sink was never offered the messages")
	}
	now := time.Date(2027, 3, 1, 12, 0, 0, 0, time.UTC)
	fc.Set(now)
	for range 2 {
		select {
		case m := <-sink.got:
			if want := now.Add(-3 * time.Minute); !m.Received.Equal(want) || m.ReceivedUnsure {
				t.Fatalf("delivered with receive time %v (unsure %v), want %v", m.Received, m.ReceivedUnsure, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("not delivered after the clock was set")
		}
	}
	if err := in.q.Sweep(context.Background()); err != nil || in.q.Counters().Expired != 0 {
		t.Fatalf("sweep after the step: expired %d, %v", in.q.Counters().Expired, err)
	}
}
