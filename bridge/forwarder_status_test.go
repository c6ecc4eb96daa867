package bridge

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"wittra-gateway/buffer"
	"wittra-gateway/sinks"
)

// The status page shows a sink's last error and whether it is older than
// the last success.
func TestForwarderKeepsLastErrorForTheStatusPage(t *testing.T) {
	in := newIntake(t, buffer.Config{})
	if got := in.post(t, "POST", "/wittra", "application/json", `{"deviceId":"D1","payloadId":"x"}`, nil); got.code != 200 {
		t.Fatalf("post: %+v", got)
	}
	sink := &fakeSink{got: make(chan sinks.Message, 10), failures: 1}
	r, err := in.q.Reader("s")
	if err != nil {
		t.Fatal(err)
	}
	f := NewForwarder(ForwarderConfig{MinBackoff: time.Millisecond}, r, sink, zerolog.Nop())
	if f.Stats().LastError() != "" || f.Stats().LastFailure.Load() != 0 {
		t.Fatal("a fresh forwarder has an error")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.Run(ctx) }()
	select {
	case <-sink.got:
	case <-time.After(10 * time.Second):
		t.Fatal("not delivered")
	}
	cancel()
	<-done
	st := f.Stats()
	if st.LastError() != "unexpected EOF" || st.LastFailure.Load() == 0 || st.LastSuccess.Load() < st.LastFailure.Load() {
		t.Fatalf("last error %q at %d, last success %d", st.LastError(), st.LastFailure.Load(), st.LastSuccess.Load())
	}
}
