package buffer

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"wittra-gateway/internal/clock"
)

// windowKeys counts the keys the file's dedup records hold.
func windowKeys(t testing.TB, q *Queue) int {
	t.Helper()
	n := 0
	err := q.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDedupW).ForEach(func(k, v []byte) error {
			return forEachDedupID(v, func([]byte) { n++ })
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestDedupIDEncodingIsExact(t *testing.T) {
	ids := []string{
		"a1B2c3D4e5F6g7H8i9J0", "3f0c9a7e-5b1d-4e2a-9c44-0d1e2f3a4b5c", "3F0C9A7E-5B1D-4E2A-9C44-0D1E2F3A4B5C",
		"3f0c9a7e-5b1d-4e2a-9c44-0d1e2f3a4b5g", "x", "with space", "ünïcode", string(make([]byte, 128)),
		"12345678901-abcdefgh", "12345678901-abcdefgi", "_-", "-_", "A", "B", "AB", "BA", "a1B2c3D4e5F6g7H8i9J", "a1B2c3D4e5F6g7H8i9J00",
	}
	seen := map[string]string{}
	var rec []byte
	for _, id := range ids {
		enc := appendDedupID(nil, []byte(id))
		if other, ok := seen[string(enc)]; ok {
			t.Fatalf("%q and %q encode alike: %x", id, other, enc)
		}
		seen[string(enc)] = id
		rec = append(rec, enc...)
	}
	var back []string
	if err := forEachDedupID(rec, func(e []byte) { back = append(back, seen[string(e)]) }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(back) != fmt.Sprint(ids) {
		t.Fatalf("record splits into %q, want %q", back, ids)
	}
	if n := len(appendDedupID(nil, []byte("a1B2c3D4e5F6g7H8i9J0"))); n != 16 {
		t.Errorf("a 20-character Wittra id takes %d bytes, want 16", n)
	}
	if n := len(appendDedupID(nil, []byte("3f0c9a7e-5b1d-4e2a-9c44-0d1e2f3a4b5c"))); n != 17 {
		t.Errorf("a UUID takes %d bytes, want 17", n)
	}
	for _, bad := range [][]byte{{0x05, 'a'}, {0x80, 1, 2}, {0x00}, {0x00, 0xFF}, {0x94}} {
		if err := forEachDedupID(bad, func([]byte) {}); err == nil {
			t.Errorf("record %x: no error", bad)
		}
	}
}

// Every key hashes alike: the index holds nothing but collisions, and
// still no new key is taken for a duplicate, across commits, restarts
// and the window's edge.
func TestDedupHashCollisionIsNoDuplicate(t *testing.T) {
	fc := clock.NewFake(time.Now())
	path := filepath.Join(t.TempDir(), "q.db")
	collide := func([]byte) uint64 { return 0xDEADBEEF_00000001 }
	cfg := Config{Path: path, DedupWindow: time.Hour, Clock: fc, dedupHash: collide}
	q := openQueue(t, cfg)
	ctx := context.Background()
	var want []string
	for i := range 50 {
		k := fmt.Sprintf("key-%d", i)
		res, err := q.Append(ctx, []Entry{{Data: []byte(k), DedupKey: k}, {Data: []byte(k), DedupKey: k + "-b"}})
		if err != nil || res.Accepted != 2 || res.Duplicates != 0 {
			t.Fatalf("new keys %s: %+v %v, want both accepted", k, res, err)
		}
		want = append(want, k, k+"-b")
	}
	// One request with colliding new keys and a repeat among them.
	res, err := q.Append(ctx, []Entry{{Data: []byte("n1"), DedupKey: "n1"}, {Data: []byte("n2"), DedupKey: "n2"}, {Data: []byte("n1"), DedupKey: "n1"}})
	if err != nil || res.Accepted != 2 || res.Duplicates != 1 {
		t.Fatalf("request with colliding keys: %+v %v, want 2 accepted 1 duplicate", res, err)
	}
	check := func(q *Queue, when string) {
		t.Helper()
		for _, k := range want {
			res, err := q.Append(ctx, []Entry{{Data: []byte("again"), DedupKey: k}})
			if err != nil || res.Duplicates != 1 {
				t.Fatalf("%s: %s again: %+v %v, want a duplicate", when, k, res, err)
			}
		}
		k := fmt.Sprintf("fresh-%s-%d", when, rand.IntN(1e9))
		res, err := q.Append(ctx, []Entry{{Data: []byte(k), DedupKey: k}})
		if err != nil || res.Accepted != 1 {
			t.Fatalf("%s: new key %s: %+v %v, want accepted", when, k, res, err)
		}
		want = append(want, k)
	}
	check(q, "running")
	q.Close()
	q = openQueue(t, cfg)
	check(q, "restarted")
	// Just before the window's end the first keys are still refused; at
	// it they are not (without a sweep: the record's time decides).
	fc.Advance(time.Hour - time.Millisecond)
	res, err = q.Append(ctx, []Entry{{Data: []byte("x"), DedupKey: "key-0"}})
	if err != nil || res.Duplicates != 1 {
		t.Fatalf("key-0 1 ms before its window ends: %+v %v, want a duplicate", res, err)
	}
	fc.Advance(time.Millisecond)
	res, err = q.Append(ctx, []Entry{{Data: []byte("x"), DedupKey: "key-0"}})
	if err != nil || res.Accepted != 1 {
		t.Fatalf("key-0 at its window's end: %+v %v, want accepted", res, err)
	}
	res, err = q.Append(ctx, []Entry{{Data: []byte("x"), DedupKey: "key-0"}})
	if err != nil || res.Duplicates != 1 {
		t.Fatalf("key-0 accepted again, then again: %+v %v, want a duplicate", res, err)
	}
}

// The in-memory index follows the records: a sweep removes both, a
// rolled-back commit leaves neither, a restart rebuilds the same.
func TestDedupIndexFollowsRecords(t *testing.T) {
	fc := clock.NewFake(time.Now())
	path := filepath.Join(t.TempDir(), "q.db")
	cfg := Config{Path: path, DedupWindow: time.Minute, Clock: fc}
	q := openQueue(t, cfg)
	ctx := context.Background()
	for i := range 10 {
		var es []Entry
		for j := range 100 {
			k := fmt.Sprintf("k%d-%d", i, j)
			es = append(es, Entry{Data: []byte(k), DedupKey: k})
		}
		if _, err := q.Append(ctx, es); err != nil {
			t.Fatal(err)
		}
		fc.Advance(10 * time.Second)
	}
	if n, _ := q.DedupKeys(); n != 1000 || windowKeys(t, q) != 1000 {
		t.Fatalf("keys: %d in memory, %d on disk, want 1000", n, windowKeys(t, q))
	}
	// A commit that fails after adding keys leaves no trace.
	boom := fmt.Errorf("boom")
	err := q.submit(ctx, &op{apply: func(tx *bolt.Tx, st *state, c *Counters) error {
		id := appendDedupID(nil, []byte("ghost"))
		if err := q.dx.add(tx, id, q.dx.hash(id), q.tl.now().g); err != nil {
			return err
		}
		return boom
	}})
	if err == nil {
		t.Fatal("failing op committed")
	}
	res, err := q.Append(ctx, []Entry{{Data: []byte("ghost"), DedupKey: "ghost"}})
	if err != nil || res.Accepted != 1 {
		t.Fatalf("key of a rolled-back commit: %+v %v, want accepted", res, err)
	}
	// 100 s after the first: records of the first 5 batches (0..40 s) are
	// out of the window, as are their keys.
	if err := q.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if n, _ := q.DedupKeys(); n != 501 || windowKeys(t, q) != 501 {
		t.Fatalf("after the sweep: %d in memory, %d on disk, want 501", n, windowKeys(t, q))
	}
	q.Close()
	q = openQueue(t, cfg)
	if n, _ := q.DedupKeys(); n != 501 {
		t.Fatalf("after a restart: %d keys in memory, want 501", n)
	}
	for _, k := range []string{"k5-0", "k9-99", "ghost"} {
		if res, _ := q.Append(ctx, []Entry{{Data: []byte(k), DedupKey: k}}); res.Duplicates != 1 {
			t.Fatalf("%s after restart: %+v, want a duplicate", k, res)
		}
	}
	if res, _ := q.Append(ctx, []Entry{{Data: []byte("k4-0"), DedupKey: "k4-0"}}); res.Accepted != 1 {
		t.Fatalf("swept key: %+v, want accepted", res)
	}
}

func TestDedupTableDeleteKeepsProbeRuns(t *testing.T) {
	d := newDedupIndex(nil)
	rng := rand.New(rand.NewPCG(1, 2))
	live := map[uint64]int{}
	var order []uint64
	for i := range 20000 {
		// Few distinct fingerprints: long runs that wrap around.
		s := uint64(rng.IntN(300)+1)<<32 | uint64(i)
		d.insert(s)
		live[s]++
		order = append(order, s)
		if i%3 == 2 {
			v := order[rng.IntN(len(order))]
			if live[v] > 0 {
				d.delete(v)
				live[v]--
			}
		}
	}
	n := 0
	for s, c := range live {
		n += c
		found := 0
		for _, x := range d.slots {
			if x == s {
				found++
			}
		}
		if found != c {
			t.Fatalf("slot %x: %d in the table, want %d", s, found, c)
		}
		// Reachable from its home without crossing an empty slot.
		if c > 0 {
			i := d.home(s >> 32)
			for d.slots[i] != s {
				if d.slots[i] == 0 {
					t.Fatalf("slot %x unreachable from its home", s)
				}
				i = (i + 1) % len(d.slots)
			}
		}
	}
	if n != d.used {
		t.Fatalf("used %d, want %d", d.used, n)
	}
	for s, c := range live {
		for range c {
			d.delete(s)
		}
	}
	if d.used != 0 || len(d.slots) != dedupMinSlots {
		t.Fatalf("after deleting all: used %d, %d slots", d.used, len(d.slots))
	}
}

// The table is kept off the Go heap (see allocSlots): the collector would
// otherwise let the heap grow to twice the table before it ran, and old
// tables would stay resident after a resize. What a table holds is
// unchanged by where it lives (TestDedupTableDeleteKeepsProbeRuns).
func TestDedupTableLivesOutsideTheHeap(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the table is mapped outside the heap on Linux only")
	}
	d := newDedupIndex(nil)
	defer d.free()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const slots = 1 << 20 // 8 MiB
	d.resize(slots)
	for i := range slots / 2 {
		d.insert(dedupFP(uint64(i)*0x9E3779B97F4A7C15)<<32 | uint64(i))
	}
	runtime.ReadMemStats(&after)
	if len(d.mem) != 8*len(d.slots) {
		t.Fatalf("table of %d slots in a mapping of %d bytes", len(d.slots), len(d.mem))
	}
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 2<<20 {
		t.Fatalf("heap grew by %d bytes for an 8 MiB table: the table is on the heap", grew)
	}
	d.free()
	if d.slots != nil || d.mem != nil || d.used != 0 {
		t.Fatalf("after free: %d slots, %d mapped bytes, %d used", len(d.slots), len(d.mem), d.used)
	}
}
