package buffer

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

// One acknowledgement that covers hundreds of leaf pages deletes them all
// in one commit, skipping none (the delete loop seeks past each deleted
// key) and touching nothing after the acknowledged sequence.
func TestLargeAcknowledgementDeletesExactlyWhatItCovers(t *testing.T) {
	q := openQueue(t, Config{})
	ctx := context.Background()
	const total, acked = 20000, 15000
	pad := strings.Repeat("x", 100)
	appendBatches(t, q, total, 1000, func(j int) Entry {
		return Entry{Data: fmt.Appendf(nil, "m%05d %s", j, pad), DedupKey: fmt.Sprintf("id%d", j)}
	})
	r, _ := q.Reader("a")
	if err := r.Ack(ctx, acked); err != nil {
		t.Fatal(err)
	}
	st, err := q.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Messages != total-acked || st.Head != acked+1 {
		t.Fatalf("after acknowledging %d of %d: %d stored from %d, want %d from %d", acked, total, st.Messages, st.Head, total-acked, acked+1)
	}
	recs := readAll(t, r, total-acked)
	for i, rec := range recs {
		if want := fmt.Sprintf("m%05d ", acked+i); rec.Seq != uint64(acked+i+1) || !strings.HasPrefix(string(rec.Data), want) {
			t.Fatalf("record %d: seq %d %.7q, want seq %d %q", i, rec.Seq, rec.Data, acked+i+1, want)
		}
	}
}
