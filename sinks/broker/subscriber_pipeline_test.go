package broker

import (
	"context"
	"testing"

	"wittra-gateway/internal/testutil"
)

// Publish returns early once everything is written and something is
// acknowledged; handed back with newer messages behind it, the rest stays
// in flight (not sent again) while the newer ones go out at once.
func TestSubscriberReturnsEarlyAndKeepsTheRestInFlight(t *testing.T) {
	srv, dur := startDurable(t)
	rec := dialStalled(t, srv, 5, "wittra/#")
	msgs := deviceMsgs(2, 20) // 40 messages
	first, second := msgs[:20], msgs[20:]

	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	n, err := dur.Publish(ctx, first)
	if err != nil || n < 1 || n > 4 {
		// The client stalls on its 5th message: at most 4 acknowledged.
		t.Fatalf("Publish to a client stalled after 5 = %d, %v; want 1..4, nil (early return)", n, err)
	}
	if s := dur.Stats().Sent.Load(); s != 20 {
		t.Fatalf("sent %d publications, want all 20 before returning early", s)
	}

	errc := make(chan error, 1)
	go func() { errc <- forward(ctx, dur, append(first[n:len(first):len(first)], second...), 100) }()
	if !testutil.Poll(waitLong, func() bool { return dur.Stats().Sent.Load() >= 40 }) {
		t.Fatalf("sent %d of 40 while the client stalls", dur.Stats().Sent.Load())
	}
	close(rec.stall)
	if err := <-errc; err != nil {
		t.Fatalf("forward: %v", err)
	}
	rec.check(t, 2, 20)
	st := dur.Stats()
	if s, a, r := st.Sent.Load(), st.Acked.Load(), st.Resent.Load(); s != 40 || a != 40 || r != 0 {
		t.Fatalf("sent %d, acknowledged %d, resent %d; want 40, 40, 0", s, a, r)
	}
}
