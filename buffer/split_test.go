package buffer

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
)

func reader(t *testing.T, q *Queue, name string) *Reader {
	t.Helper()
	r, err := q.Reader(name)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func seqs(recs []Record) []uint64 {
	out := make([]uint64, len(recs))
	for i, r := range recs {
		out[i] = r.Seq
	}
	return out
}

func wantSeqs(t *testing.T, what string, recs []Record, from, to uint64) {
	t.Helper()
	got := seqs(recs)
	if len(got) != int(to-from+1) {
		t.Fatalf("%s: got %v, want %d..%d", what, got, from, to)
	}
	for i, s := range got {
		if s != from+uint64(i) {
			t.Fatalf("%s: got %v, want %d..%d", what, got, from, to)
		}
	}
}

// splitWith fills q with backlog messages, splits name's stream (which
// must make a split) and appends live more.
func splitWith(t *testing.T, q *Queue, name string, backlog, live int) *Reader {
	t.Helper()
	appendN(t, q, 0, backlog)
	r := reader(t, q, name)
	if made, err := r.Split(context.Background()); err != nil || !made {
		t.Fatalf("Split = %v, %v", made, err)
	}
	appendN(t, q, backlog, live)
	return r
}

// readRun reads up to n records of r's live run (else its backlog) and
// wants them to be from..to.
func readRun(t *testing.T, r *Reader, live bool, n int, what string, from, to uint64) {
	t.Helper()
	read := r.ReadBacklog
	if live {
		read = r.ReadLive
	}
	recs, err := read(n, 1<<20)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	wantSeqs(t, what, recs, from, to)
}

// readAck is readRun, then acknowledges to.
func readAck(t *testing.T, r *Reader, live bool, n int, from, to uint64) {
	t.Helper()
	what := "backlog"
	if live {
		what = "live"
	}
	readRun(t, r, live, n, what, from, to)
	if err := r.Ack(context.Background(), to); err != nil {
		t.Fatal(err)
	}
}

// wantSplit wants r's split state to be want.
func wantSplit(t *testing.T, r *Reader, what string, want SplitState) {
	t.Helper()
	if got := r.SplitState(); got != want {
		t.Fatalf("split state %s: %+v, want %+v", what, got, want)
	}
}

func metaValue(t *testing.T, q *Queue, key string) []byte {
	t.Helper()
	var v []byte
	if err := q.view(func(tx *bolt.Tx) error {
		v = append([]byte(nil), tx.Bucket(bucketMeta).Get([]byte(key))...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(v) == 0 {
		return nil
	}
	return v
}

// TestSplitSurvivesRestartAndJoins: a backlog of 100, 30 live messages of
// which 20 acknowledged, the backlog half acknowledged; after a reopen each
// stream resumes after its own acknowledged part, and draining the backlog
// joins the runs and deletes what everybody has.
func TestSplitSurvivesRestartAndJoins(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "queue.db")
	q := openQueue(t, Config{Path: path, Consumers: []string{"a", "b"}})
	r := splitWith(t, q, "a", 100, 0)
	if made, _ := r.Split(ctx); made {
		t.Fatal("a second split was made while one exists")
	}
	appendN(t, q, 100, 30)
	readAck(t, r, true, 20, 101, 120)
	readAck(t, r, false, 50, 1, 50)
	wantSplit(t, r, "split state", SplitState{Active: true, Cursor: 50, At: 100, Live: 120})
	// The cursor key keeps its meaning: everything up to it is acknowledged.
	if v := metaValue(t, q, cursorPrefix+"a"); len(v) != 8 || v[7] != 50 {
		t.Fatalf("cursor/a = %v, want 50", v)
	}
	st, err := q.Stats()
	if err != nil {
		t.Fatal(err)
	}
	a := st.Consumers[0]
	if a.Backlog != 50 || a.Live != 10 || a.Depth != 60 || a.OldestAge < 0 || a.Oldest.IsZero() {
		t.Fatalf("stats of a: %+v", a)
	}
	if b := st.Consumers[1]; b.Backlog != 130 || b.Live != 0 || b.Depth != 130 {
		t.Fatalf("stats of b: %+v", b)
	}
	q.Close()

	q = openQueue(t, Config{Path: path, Consumers: []string{"a", "b"}})
	r = reader(t, q, "a")
	wantSplit(t, r, "split state after reopen", SplitState{Active: true, Cursor: 50, At: 100, Live: 120})
	readRun(t, r, true, 100, "live after reopen", 121, 130)
	readRun(t, r, false, 100, "backlog after reopen", 51, 100)
	if more, _ := r.ReadBacklog(100, 1<<20); len(more) != 0 {
		t.Fatalf("backlog read past the split: %v", seqs(more))
	}
	if err := r.Ack(ctx, 100); err != nil {
		t.Fatal(err)
	}
	if got := r.SplitState(); got != (SplitState{Cursor: 120}) {
		t.Fatalf("after the backlog drained: %+v, want joined at 120", got)
	}
	if v := metaValue(t, q, splitPrefix+"a"); v != nil {
		t.Fatalf("split key left after the join: %v", v)
	}
	if err := r.Ack(ctx, 130); err != nil {
		t.Fatal(err)
	}
	// b still holds everything; once it has all, the file is emptied.
	rb := reader(t, q, "b")
	readAll(t, rb, 130)
	if err := rb.Ack(ctx, 130); err != nil {
		t.Fatal(err)
	}
	if st, _ := q.Stats(); st.Messages != 0 {
		t.Fatalf("%d messages left after both consumers had all", st.Messages)
	}
}

// TestSplitIgnoredOnlyResends: a binary that knows nothing of split keys
// (simulated by deleting the key) reads from the backlog cursor: the live
// messages already delivered come again, nothing is skipped.
func TestSplitIgnoredOnlyResends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "queue.db")
	q := openQueue(t, Config{Path: path})
	r := splitWith(t, q, "a", 10, 5)
	readAck(t, r, true, 100, 11, 15)
	readAck(t, r, false, 3, 1, 3)
	q.Close()

	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Delete([]byte(splitPrefix + "a")) }); err != nil {
		t.Fatal(err)
	}
	db.Close()
	q = openQueue(t, Config{Path: path})
	recs := readAll(t, reader(t, q, "a"), 12)
	wantSeqs(t, "without the split key", recs, 4, 15)
}

// TestInOrderReaderHonoursALeftoverSplit: a sink switched back to in_order
// with a split on file reads the backlog, then what follows the live
// cursor, without sending the acknowledged live messages again.
func TestInOrderReaderHonoursALeftoverSplit(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "queue.db")
	q := openQueue(t, Config{Path: path})
	readAck(t, splitWith(t, q, "a", 10, 10), true, 5, 11, 15)
	q.Close()

	q = openQueue(t, Config{Path: path})
	r := reader(t, q, "a")
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	batch := func(what string, from, to uint64) { // one Read, exactly from..to, then its Ack
		t.Helper()
		recs, err := r.Read(cctx, 1000, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		wantSeqs(t, what, recs, from, to)
		if err := r.Ack(ctx, to); err != nil {
			t.Fatal(err)
		}
	}
	batch("first batch (the backlog, alone)", 1, 10)
	batch("second batch", 16, 20)
	wantSplit(t, r, "state", SplitState{Cursor: 20})
}

// TestExpiryOfTheWholeBacklogJoins: max_age deleting the whole backlog
// joins the runs; a live message is never read twice or skipped.
func TestExpiryOfTheWholeBacklogJoins(t *testing.T) {
	ctx := context.Background()
	q := openQueue(t, Config{MaxBytes: 1 << 20, WhenFull: DropOldest})
	r := splitWith(t, q, "a", 10, 10)
	readAck(t, r, true, 4, 11, 14)
	n, err := q.Purge(ctx)
	if err != nil || n != 20 {
		t.Fatalf("Purge = %d, %v", n, err)
	}
	if got := r.SplitState(); got.Active || got.Cursor != 20 {
		t.Fatalf("after purge: %+v", got)
	}
	appendN(t, q, 20, 3)
	recs, _ := r.ReadLive(100, 1<<20)
	wantSeqs(t, "after the join", recs, 21, 23)
}

// TestSalvageKeepsTheSplit: a salvaged file keeps split points read with
// the cursors, so nothing delivered live is sent again and nothing is lost.
func TestSalvageKeepsTheSplit(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "queue.db")
	q := openQueue(t, Config{Path: src})
	r := splitWith(t, q, "a", 20, 10)
	readAck(t, r, true, 5, 21, 25)
	readAck(t, r, false, 5, 1, 5)
	q.Close()

	dst := filepath.Join(dir, "salvaged.db")
	if _, err := Salvage(src, dst, zerolog.Nop()); err != nil {
		t.Fatal(err)
	}
	q = openQueue(t, Config{Path: dst})
	r = reader(t, q, "a")
	wantSplit(t, r, "after salvage", SplitState{Active: true, Cursor: 5, At: 20, Live: 25})
	readRun(t, r, false, 100, "backlog", 6, 20)
	readRun(t, r, true, 100, "live", 26, 30)
}

// TestCompactionKeepsTheSplit: the meta bucket is copied whole.
func TestCompactionKeepsTheSplit(t *testing.T) {
	q := openQueue(t, Config{})
	r := splitWith(t, q, "a", 20, 5)
	readAck(t, r, true, 100, 21, 25)
	if err := q.Compact(); err != nil {
		t.Fatal(err)
	}
	if v := metaValue(t, q, splitPrefix+"a"); len(v) != 16 {
		t.Fatalf("split key after compaction: %v", v)
	}
	wantSplit(t, r, "after compaction", SplitState{Active: true, At: 20, Live: 25})
}

// TestRemovedConsumerLosesItsSplit: a split of a consumer no longer
// configured goes with its cursor.
func TestRemovedConsumerLosesItsSplit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "queue.db")
	q := openQueue(t, Config{Path: path, Consumers: []string{"a", "b"}})
	splitWith(t, q, "b", 5, 0)
	q.Close()
	q = openQueue(t, Config{Path: path, Consumers: []string{"a"}})
	if v := metaValue(t, q, splitPrefix+"b"); v != nil {
		t.Fatalf("split of a removed consumer kept: %v", v)
	}
	q.Close()
	q = openQueue(t, Config{Path: path, Consumers: []string{"a", "b"}})
	if got := reader(t, q, "b").SplitState(); got.Active {
		t.Fatalf("re-added consumer inherited a split: %+v", got)
	}
}
