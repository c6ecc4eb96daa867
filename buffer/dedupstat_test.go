package buffer

import (
	"context"
	"testing"
	"time"
)

func TestDedupKeysCountsRememberedIDs(t *testing.T) {
	q := openQueue(t, Config{DedupWindow: time.Hour})
	if n, err := q.DedupKeys(); err != nil || n != 0 {
		t.Fatalf("empty queue: DedupKeys = %d, %v; want 0", n, err)
	}
	appendN(t, q, 0, 5)
	// A resent id and a message without one add no key.
	res, err := q.Append(context.Background(), []Entry{{Data: []byte("again"), DedupKey: "id3"}, {Data: []byte("nokey")}})
	if err != nil || res.Duplicates != 1 || res.Accepted != 1 {
		t.Fatalf("append = %+v, %v; want 1 accepted 1 duplicate", res, err)
	}
	if n, err := q.DedupKeys(); err != nil || n != 5 {
		t.Fatalf("DedupKeys = %d, %v; want 5", n, err)
	}
}
