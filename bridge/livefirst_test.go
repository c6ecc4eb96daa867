package bridge

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"wittra-gateway/buffer"
	"wittra-gateway/internal/testutil"
	"wittra-gateway/sinks"
)

// gatedSink is down until opened, then takes perCall for each Publish.
type gatedSink struct {
	mu      sync.Mutex
	up      bool
	perCall time.Duration
	calls   int
	got     []sinks.Message // bodies copied
}

func (g *gatedSink) Name() string                { return "gated" }
func (g *gatedSink) Close(context.Context) error { return nil }
func (g *gatedSink) open()                       { g.mu.Lock(); g.up = true; g.mu.Unlock() }
func (g *gatedSink) Publish(ctx context.Context, msgs []sinks.Message) (int, error) {
	g.mu.Lock()
	up := g.up
	g.calls++
	g.mu.Unlock()
	if !up {
		return 0, errors.New("down")
	}
	time.Sleep(g.perCall)
	for _, m := range msgs {
		m.Body = append([]byte(nil), m.Body...)
		g.mu.Lock()
		g.got = append(g.got, m)
		g.mu.Unlock()
	}
	return len(msgs), nil
}

func (g *gatedSink) delivered() []sinks.Message {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]sinks.Message(nil), g.got...)
}

func appendMsgs(t *testing.T, q *buffer.Queue, tag string, from, n, devices int) {
	t.Helper()
	var entries []buffer.Entry
	for i := from; i < from+n; i++ {
		body := fmt.Appendf(nil, `{"deviceId":"D%d","tag":%q,"n":%d}`, i%devices, tag, i)
		entries = append(entries, buffer.Entry{Data: appendEnvelope(nil, sinks.KindData, "p", fmt.Sprintf("D%d", i%devices), body)})
	}
	if _, err := q.Append(context.Background(), entries); err != nil {
		t.Fatal(err)
	}
}

// TestLiveFirstDeliversLiveWhileTheBacklogDrains: 1,500 messages queue while
// the sink is down; once it is back, messages posted from then on go out
// ahead of that backlog, the backlog still drains while live messages keep
// coming, every message arrives, and each stream keeps its order.
func TestLiveFirstDeliversLiveWhileTheBacklogDrains(t *testing.T) {
	q, err := buffer.Open(buffer.Config{Path: filepath.Join(t.TempDir(), "q.db"), Consumers: []string{"s"}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	r, _ := q.Reader("s")
	sink := &gatedSink{perCall: 5 * time.Millisecond}
	f := NewForwarder(ForwarderConfig{Batch: 100, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, Backlog: LiveFirst}, r, sink, zerolog.Nop())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	const devices, backlogN = 10, 1500
	appendMsgs(t, q, "backlog", 0, 1, devices)
	testutil.WaitFor(t, 60*time.Second, "the forwarder to hold a batch", func() bool { sink.mu.Lock(); defer sink.mu.Unlock(); return sink.calls > 0 })
	for i := 1; i < backlogN; i += 100 {
		appendMsgs(t, q, "backlog", i, min(100, backlogN-i), devices)
	}
	sink.open()
	testutil.WaitFor(t, 60*time.Second, "the split", func() bool { return r.SplitState().Active })
	at := r.SplitState().At

	// Live messages keep coming until the backlog has drained.
	liveN := 0
	backlogLeftAtFirstLive := -1
	for {
		appendMsgs(t, q, "live", backlogN+liveN, devices, devices)
		liveN += devices
		time.Sleep(2 * time.Millisecond)
		got := sink.delivered()
		old := 0
		for _, m := range got {
			if m.Seq <= at {
				old++
			} else if backlogLeftAtFirstLive < 0 {
				backlogLeftAtFirstLive = int(at) - old
			}
		}
		if old >= int(at) {
			break
		}
		if liveN > 200_000 {
			t.Fatal("the backlog was starved")
		}
	}
	if backlogLeftAtFirstLive <= 0 {
		t.Fatalf("the first live message went out after the backlog (%d backlog messages left then)", backlogLeftAtFirstLive)
	}
	total := uint64(backlogN + liveN)
	testutil.WaitFor(t, 60*time.Second, "every message delivered", func() bool { return len(sink.delivered()) >= int(total) })
	testutil.WaitFor(t, 60*time.Second, "the split joined and everything acknowledged", func() bool {
		st := r.SplitState()
		return !st.Active && st.Cursor == total
	})

	seen := map[uint64]bool{}
	var lastBacklog, lastLive uint64
	for _, m := range sink.delivered() {
		if seen[m.Seq] {
			t.Fatalf("seq %d delivered twice", m.Seq)
		}
		seen[m.Seq] = true
		last := &lastLive
		if m.Seq <= at {
			last = &lastBacklog
		}
		if m.Seq < *last {
			t.Fatalf("seq %d after %d in the same stream (split at %d)", m.Seq, *last, at)
		}
		*last = m.Seq
	}
	for s := uint64(1); s <= total; s++ {
		if !seen[s] {
			t.Fatalf("seq %d never delivered", s)
		}
	}
	t.Logf("split at %d; first live message delivered with %d backlog messages still to go; %d live messages during the drain", at, backlogLeftAtFirstLive, liveN)
}

// TestParseBacklog: the config spellings, and a clear error otherwise.
func TestParseBacklog(t *testing.T) {
	for in, want := range map[string]Backlog{"in_order": InOrder, "live_first": LiveFirst} {
		got, err := ParseBacklog(in)
		if err != nil || got != want || got.String() != in {
			t.Fatalf("ParseBacklog(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseBacklog("newest"); err == nil {
		t.Fatal("ParseBacklog accepted newest")
	}
}
