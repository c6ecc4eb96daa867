package cumulocity

import (
	"context"
	"errors"
	"testing"
	"time"

	"wittra-gateway/internal/testutil"
	"wittra-gateway/sinks"
)

// A message without a timestamp of its own, received while the gateway's
// clock was known to be wrong (1970), is never sent with that time: the
// sink refuses it as retryable until the queue hands it a corrected time.
func TestUnsureReceiveTimeIsNeverSent(t *testing.T) {
	for _, mode := range []string{ModeMQTT, ModeREST} {
		t.Run(mode, func(t *testing.T) {
			f := startFake(t)
			s := newSink(t, f, mode, nil)
			m := message(t, []byte(`{"deviceId":"D1","payload":{"temperature":21.5}}`))
			m.Received = time.Unix(600, 0)
			m.ReceivedUnsure = true
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			n, err := s.Publish(ctx, []sinks.Message{m})
			if n != 0 || err == nil || errors.Is(err, sinks.ErrPermanent) || !errors.Is(err, errClockUnsure) {
				t.Fatalf("Publish with an unsure receive time = %d, %v; want 0 and a retryable clock error", n, err)
			}
			if got := len(f.Measurements()); got != 0 {
				t.Fatalf("the fake got %d measurements with an unsure time", got)
			}
			// The forwarder's retry brings the corrected time.
			corrected := time.Date(2027, 3, 1, 11, 45, 0, 0, time.UTC)
			m.Received, m.ReceivedUnsure = corrected, false
			deliverAll(t, s, []sinks.Message{m}, 20*time.Second)
			testutil.WaitFor(t, 10*time.Second, "the measurement", func() bool { return len(f.Measurements()) == 1 })
			if got := f.Measurements()[0].Time; !got.Equal(corrected) {
				t.Fatalf("measurement time = %v, want the corrected receive time %v", got, corrected)
			}
		})
	}
}
