package broker

import (
	"context"
	"testing"
	"time"

	"wittra-gateway/internal/testutil"
)

// With backlog live_first the forwarder interleaves a durable subscriber's
// two streams: a call for the backlog returns early with publications in
// flight, a call for live messages runs, then the backlog's rest is handed
// back. Acknowledgements that arrive for the backlog during the live call
// must count for it then: nothing is sent twice.
func TestSubscriberInterleavedCallsKeepAcknowledgements(t *testing.T) {
	srv, dur := startDurable(t)
	rec := dialStalled(t, srv, 50, "wittra/+/+/data")
	testutil.WaitFor(t, 20*time.Second, "durable client connected", dur.Connected)

	backlog := deviceMsgs(2, 100)
	live := deviceMsgs(1, 10)
	for i := range live {
		live[i].Device = "live"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// The client handles 49, stalls on the 50th: the call returns early
	// with the rest written and unacknowledged.
	n, err := dur.Publish(ctx, backlog)
	if err != nil || n == 0 || n >= 50 {
		t.Fatalf("backlog call: %d delivered, %v; want an early return after 1..49", n, err)
	}
	liveDone := make(chan error, 1)
	go func() { liveDone <- forward(ctx, dur, live, len(live)) }()
	testutil.WaitFor(t, 20*time.Second, "live publications written", func() bool { return dur.Stats().Sent.Load() == uint64(len(backlog)+len(live)) })
	close(rec.stall)
	if err := <-liveDone; err != nil {
		t.Fatalf("live calls: %v", err)
	}
	if err := forward(ctx, dur, backlog[n:], len(backlog)); err != nil {
		t.Fatalf("backlog rest: %v", err)
	}
	if sent, resent := dur.Stats().Sent.Load(), dur.Stats().Resent.Load(); sent != uint64(len(backlog)+len(live)) || resent != 0 {
		t.Fatalf("sent %d (resent %d), want each of %d once", sent, resent, len(backlog)+len(live))
	}
	testutil.WaitFor(t, 20*time.Second, "everything received", func() bool { return rec.count() == len(backlog)+len(live) })
	rec.mu.Lock()
	defer rec.mu.Unlock()
	seen := map[string]bool{}
	for _, g := range rec.got {
		if seen[g] {
			t.Fatalf("%q received twice", g)
		}
		seen[g] = true
	}
}
