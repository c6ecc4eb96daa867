package bridge

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"wittra-gateway/internal/testutil"
)

// The acknowledger commits in the background, one commit at a time with
// the newest sequence, and holds delivery back only when it runs more than
// lag ahead of the last commit.
func TestAckerCoalescesAndBoundsItsLag(t *testing.T) {
	var mu sync.Mutex
	var committed []uint64
	hold := make(chan struct{})
	a := &acker{log: zerolog.Nop(), lag: 100, commit: func(seq uint64) error {
		<-hold
		mu.Lock()
		committed = append(committed, seq)
		mu.Unlock()
		return nil
	}}

	a.ack(10) // starts a commit of 10, held
	a.ack(50)
	a.ack(109) // 99 ahead of the first acknowledgement: within the lag

	blocked := make(chan struct{})
	go func() {
		a.ack(200) // 191 ahead of what is committed: waits
		close(blocked)
	}()
	time.Sleep(50 * time.Millisecond)
	select {
	case <-blocked:
		t.Fatal("delivery ran more than the lag ahead of the last commit without waiting")
	default:
	}
	close(hold)
	<-blocked
	a.wait()

	mu.Lock()
	defer mu.Unlock()
	// One commit was under way (with whatever was newest when it began)
	// while the others came: they coalesce into one more, the newest.
	if len(committed) > 2 || committed[len(committed)-1] != 200 || !slices.IsSorted(committed) {
		t.Fatalf("commits %v, want at most one before the newest, 200", committed)
	}
}

// A failed commit is logged and costs only duplicates after a restart: the
// acknowledger goes on with the next one.
func TestAckerLogsAFailedCommitAndGoesOn(t *testing.T) {
	var logs testutil.LogBuffer
	var mu sync.Mutex
	var tried []uint64
	a := &acker{log: zerolog.New(&logs), lag: 100, commit: func(seq uint64) error {
		mu.Lock()
		defer mu.Unlock()
		tried = append(tried, seq)
		if len(tried) == 1 {
			return errors.New("disk on fire")
		}
		return nil
	}}
	a.ack(5)
	a.wait()
	a.ack(9)
	a.wait()
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(tried, []uint64{5, 9}) {
		t.Fatalf("commits tried %v, want [5 9]", tried)
	}
	if !strings.Contains(logs.String(), "disk on fire") || !strings.Contains(logs.String(), "acknowledge delivered messages") {
		t.Fatalf("failed commit not logged: %s", logs.String())
	}
}
