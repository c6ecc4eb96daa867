package buffer

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// Tests on real queue files with real damage: pages overwritten with random
// bytes where the file's own tree says a bucket keeps them.

// damageFixture is a closed queue file with consumers "a" and "b".
type damageFixture struct {
	path    string
	data    map[uint64]string // every message appended, by sequence
	keys    map[uint64]string // its dedup key
	cursors map[string]uint64
	last    uint64
}

// undelivered is the sequences after the lowest cursor.
func (f *damageFixture) undelivered() []uint64 {
	var out []uint64
	for s := min(f.cursors["a"], f.cursors["b"]) + 1; s <= f.last; s++ {
		out = append(out, s)
	}
	return out
}

// newDamageFixture appends n messages in batches of batch (one commit
// each), acknowledges some for "a" and fewer for "b", and closes the file.
func newDamageFixture(t *testing.T, n, batch int) *damageFixture {
	t.Helper()
	f := &damageFixture{path: filepath.Join(t.TempDir(), "q.db"), data: map[uint64]string{}, keys: map[uint64]string{}}
	q, err := Open(Config{Path: f.path, Consumers: []string{"a", "b"}, DedupWindow: time.Hour}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	seq := uint64(0)
	for i := 0; i < n; i += batch {
		var entries []Entry
		for j := i; j < min(n, i+batch); j++ {
			entries = append(entries, Entry{Data: fmt.Appendf(nil, "message %05d %s", j, strings.Repeat("p", 60)), DedupKey: fmt.Sprintf("key-%05d", j)})
		}
		if _, err := q.Append(ctx, entries); err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			seq++
			f.data[seq], f.keys[seq] = string(e.Data), e.DedupKey
		}
	}
	f.last = seq
	f.cursors = map[string]uint64{"a": uint64(n / 5), "b": uint64(n / 10)}
	for name, c := range f.cursors {
		r, _ := q.Reader(name)
		if err := r.Ack(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	return f
}

// treePage is one page of a bucket's tree.
type treePage struct {
	id     uint64
	branch bool
	depth  int
	keys   [][]byte // leaf keys
}

// readPageFile opens a closed queue file with the page reader; its meta
// page must be valid.
func readPageFile(t *testing.T, path string) *pageFile {
	t.Helper()
	pf, err := openPageFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if pf.meta.err != nil {
		pf.Close()
		t.Fatal(pf.meta.err)
	}
	return pf
}

// bucketTree lists the pages of a top-level bucket, read with the page
// reader (the file is closed).
func bucketTree(t *testing.T, path string, bucket []byte) []treePage {
	t.Helper()
	pf := readPageFile(t, path)
	defer pf.Close()
	var root uint64
	rp, err := pf.page(pf.meta.root, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range int(le.Uint16(rp[10:])) {
		k, v, _, _, _ := element(rp, i)
		if bytes.Equal(k, bucket) {
			root = le.Uint64(v)
		}
	}
	if root == 0 {
		t.Fatalf("bucket %s is inline or missing", bucket)
	}
	var out []treePage
	var walk func(id uint64, depth int)
	walk = func(id uint64, depth int) {
		p, err := pf.page(id, 0)
		if err != nil {
			t.Fatal(err)
		}
		tp := treePage{id: id, depth: depth, branch: le.Uint16(p[8:]) == flagBranch}
		for i := range int(le.Uint16(p[10:])) {
			k, _, child, _, _ := element(p, i)
			if tp.branch {
				walk(child, depth+1)
			} else {
				tp.keys = append(tp.keys, slices.Clone(k))
			}
		}
		out = append(out, tp)
	}
	walk(root, 0)
	return out
}

func leaves(pages []treePage) []treePage {
	var out []treePage
	for _, p := range pages {
		if !p.branch {
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b treePage) int { return bytes.Compare(a.keys[0], b.keys[0]) })
	return out
}

// smash overwrites whole pages with random bytes, as a torn write or bit
// rot on an SD card would.
func smash(t *testing.T, path string, ids ...uint64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rng := rand.New(rand.NewPCG(uint64(len(ids)), ids[0]))
	junk := make([]byte, 4096)
	for _, id := range ids {
		for i := range junk {
			junk[i] = byte(rng.Uint32())
		}
		if _, err := f.WriteAt(junk, int64(id)*4096); err != nil {
			t.Fatal(err)
		}
	}
}

// openDamaged opens the damaged file and checks what every consumer reads:
// exactly the messages want after its cursor, with the right contents.
func openDamaged(t *testing.T, f *damageFixture, want []uint64) *Queue {
	t.Helper()
	began := time.Now()
	q, err := Open(Config{Path: f.path, Consumers: []string{"a", "b"}, DedupWindow: time.Hour}, zerolog.Nop())
	if err != nil {
		t.Fatalf("Open of the damaged file: %v", err)
	}
	t.Cleanup(func() { q.Close() })
	t.Logf("open with quarantine and salvage took %v", time.Since(began).Round(time.Millisecond))
	if aside, _ := filepath.Glob(f.path + ".corrupt-*"); len(aside) != 1 || q.Counters().Quarantined != 1 {
		t.Fatalf("quarantined files %v, counter %d", aside, q.Counters().Quarantined)
	}
	if got := q.Counters().Salvaged; got != uint64(len(want)) {
		t.Errorf("salvaged %d messages, want %d", got, len(want))
	}
	for _, name := range []string{"a", "b"} {
		r, _ := q.Reader(name)
		var exp []uint64
		for _, s := range want {
			if s > f.cursors[name] {
				exp = append(exp, s)
			}
		}
		recs := readAll(t, r, len(exp))
		if len(recs) != len(exp) {
			t.Fatalf("%s read %d, want %d", name, len(recs), len(exp))
		}
		for i, rec := range recs {
			if rec.Seq != exp[i] || string(rec.Data) != f.data[rec.Seq] {
				t.Fatalf("%s record %d: seq %d %.14q, want seq %d %.14q", name, i, rec.Seq, rec.Data, exp[i], f.data[exp[i]])
			}
		}
	}
	// Intake works and continues the sequence.
	res, err := q.Append(context.Background(), []Entry{{Data: []byte("after"), DedupKey: "after"}})
	if err != nil || res.Accepted != 1 {
		t.Fatalf("append after salvage: %+v %v", res, err)
	}
	if st, _ := q.Stats(); st.Last != f.last+1 {
		t.Fatalf("sequence after salvage %d, want %d", st.Last, f.last+1)
	}
	return q
}

func without(all []uint64, drop map[uint64]bool) []uint64 {
	var out []uint64
	for _, s := range all {
		if !drop[s] {
			out = append(out, s)
		}
	}
	return out
}

func TestDamagedMessagePagesAreSalvagedAroundTheHole(t *testing.T) {
	// One commit: no stale copies of the middle pages elsewhere in the
	// file, so what is lost is exactly what the smashed pages held.
	f := newDamageFixture(t, 3000, 3000)
	lv := leaves(bucketTree(t, f.path, bucketMsgs))
	if len(lv) < 8 {
		t.Fatalf("only %d leaf pages", len(lv))
	}
	victims := []treePage{lv[len(lv)/2], lv[len(lv)/2+2]}
	lost := map[uint64]bool{}
	for _, p := range victims {
		for _, k := range p.keys {
			lost[binary.BigEndian.Uint64(k)] = true
		}
	}
	smash(t, f.path, victims[0].id, victims[1].id)
	want := without(f.undelivered(), lost)
	q := openDamaged(t, f, want)
	if got := q.Counters().SalvageLost; got != uint64(len(lost)) {
		t.Errorf("lost %d, want %d", got, len(lost))
	}
	t.Logf("%d of %d undelivered salvaged, %d lost on 2 pages", len(want), len(f.undelivered()), len(lost))
}

// smashBranches destroys every branch page of bucket; it must have one.
func smashBranches(t *testing.T, path string, bucket []byte) {
	t.Helper()
	var branches []uint64
	for _, p := range bucketTree(t, path, bucket) {
		if p.branch {
			branches = append(branches, p.id)
		}
	}
	if len(branches) == 0 {
		t.Fatalf("%s has no branch page", bucket)
	}
	smash(t, path, branches...)
}

func TestDamagedBranchPageLosesNoMessage(t *testing.T) {
	f := newDamageFixture(t, 3000, 3000)
	smashBranches(t, f.path, bucketMsgs)
	// The leaves are found by scanning the file page by page.
	q := openDamaged(t, f, f.undelivered())
	if q.Counters().SalvageLost != 0 {
		t.Errorf("lost %d", q.Counters().SalvageLost)
	}
}

func TestDamagedDedupWindowKeepsRefusingDuplicates(t *testing.T) {
	f := newDamageFixture(t, 3000, 10) // 300 records: leaves under a branch
	smashBranches(t, f.path, bucketDedupW)
	q := openDamaged(t, f, f.undelivered())
	// The records' leaves are found by scanning the file page by page.
	for seq := uint64(1); seq <= f.last; seq += 97 {
		res, err := q.Append(context.Background(), []Entry{{Data: []byte("again"), DedupKey: f.keys[seq]}})
		if err != nil || res.Duplicates != 1 {
			t.Fatalf("key of message %d after salvage: %+v %v, want a duplicate", seq, res, err)
		}
	}
}

func TestBothMetaPagesDamagedIsSalvagedByScanning(t *testing.T) {
	f := newDamageFixture(t, 3000, 100)
	smash(t, f.path, 0, 1)
	q := openDamaged(t, f, f.undelivered())
	if q.Counters().SalvageLost != 0 {
		t.Errorf("lost %d", q.Counters().SalvageLost)
	}
}

// TestRandomPagesInTheMiddle is the report that started this: 20,000
// messages, three pages in the middle of the file overwritten. bbolt
// panicked at every open; now the open succeeds, and every message is
// either salvaged or counted lost, never more lost than the pages held.
func TestRandomPagesInTheMiddle(t *testing.T) {
	f := newDamageFixture(t, 20000, 400)
	pages := uint64(fileSize(t, f.path) / 4096)
	// Three message pages from the middle half of the file: pages with
	// nothing on them would prove nothing.
	var middle []treePage
	for _, p := range leaves(bucketTree(t, f.path, bucketMsgs)) {
		if p.id >= pages/4 && p.id < pages*3/4 && binary.BigEndian.Uint64(p.keys[0]) > f.cursors["b"] {
			middle = append(middle, p)
		}
	}
	if len(middle) < 3 {
		t.Fatalf("only %d message pages in the middle of %d", len(middle), pages)
	}
	rng := rand.New(rand.NewPCG(7, 20000))
	var victims []uint64
	var mayLose uint64
	for _, i := range rng.Perm(len(middle))[:3] {
		victims = append(victims, middle[i].id)
		mayLose += uint64(len(middle[i].keys))
	}
	smash(t, f.path, victims...)
	q, err := Open(Config{Path: f.path, Consumers: []string{"a", "b"}, DedupWindow: time.Hour}, zerolog.Nop())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer q.Close()
	c := q.Counters()
	total := uint64(len(f.undelivered()))
	// Older copies of a page (freed by later commits, not yet reused) may
	// hold some of its messages: at most what the pages held is lost.
	if c.Quarantined != 1 || c.Salvaged+c.SalvageLost != total || c.SalvageLost > mayLose {
		t.Fatalf("quarantined %d, salvaged %d + lost %d, want 1, %d in all with at most %d lost", c.Quarantined, c.Salvaged, c.SalvageLost, total, mayLose)
	}
	t.Logf("pages %v of %d smashed (holding %d messages): quarantined %d, salvaged %d, lost %d", victims, pages, mayLose, c.Quarantined, c.Salvaged, c.SalvageLost)
	st, _ := q.Stats()
	if st.Messages < c.Salvaged {
		t.Fatalf("queue holds %d messages, salvaged %d", st.Messages, c.Salvaged)
	}
}

// TestHealthyFileSalvageIsLossless quarantines a healthy file through the
// open marker (as after two opens died inside bbolt): everything comes
// across, dead letters and KV entries included.
func TestHealthyFileSalvageIsLossless(t *testing.T) {
	f := newDamageFixture(t, 500, 50)
	q, err := Open(Config{Path: f.path, Consumers: []string{"a", "b"}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	r, _ := q.Reader("b")
	recs := readAll(t, r, 1)
	if err := r.DeadLetter(ctx, recs[0], "refused"); err != nil {
		t.Fatal(err)
	}
	if err := q.KV("ns").Put(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	q.Close()
	if err := setOpenings(f.path, openMarkerLimit); err != nil {
		t.Fatal(err)
	}
	q = openDamaged(t, f, f.undelivered())
	if v, _ := q.KV("ns").Get("k"); string(v) != "v" {
		t.Fatalf("kv after salvage: %q", v)
	}
	if q.Counters().DeadLetters != 1 {
		t.Fatalf("dead letters after salvage: %d", q.Counters().DeadLetters)
	}
	if _, err := os.Stat(openingMarker(f.path)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("open marker left after a good open: %v", err)
	}
}

// TestDamageUnderALiveQueue overwrites pages while the queue is open: the
// panic inside bbolt becomes ErrDamaged, the file is marked, and the next
// Open quarantines and salvages it (one restart, no loop).
func TestDamageUnderALiveQueue(t *testing.T) {
	f := newDamageFixture(t, 3000, 3000)
	q, err := Open(Config{Path: f.path, Consumers: []string{"a", "b"}, DedupWindow: time.Hour}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	var branches []uint64
	for _, p := range bucketTree(t, f.path, bucketMsgs) {
		if p.branch {
			branches = append(branches, p.id)
		}
	}
	smash(t, f.path, branches...)
	r, _ := q.Reader("a")
	_, err = r.Read(context.Background(), 10, 1<<20)
	if !errors.Is(err, ErrDamaged) {
		t.Fatalf("read through a smashed branch page: %v, want ErrDamaged", err)
	}
	select {
	case <-q.Damaged():
	default:
		t.Fatal("Damaged() not closed")
	}
	if _, err := q.Append(context.Background(), []Entry{{Data: []byte("x")}}); !errors.Is(err, ErrDamaged) {
		t.Fatalf("append after damage: %v", err)
	}
	if _, err := os.Stat(damagedMarker(f.path)); err != nil {
		t.Fatalf("no damaged marker: %v", err)
	}
	q.Close()
	openDamaged(t, f, f.undelivered())
	if _, err := os.Stat(damagedMarker(f.path)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("damaged marker left after the salvage: %v", err)
	}
}

// BenchmarkCheckAndSalvage16MiB measures the check every open runs, and a
// salvage, on a file like the one in the damage report: 20,000 messages,
// about 16 MiB.
func BenchmarkCheckAndSalvage16MiB(b *testing.B) {
	path := filepath.Join(b.TempDir(), "q.db")
	q, err := Open(Config{Path: path, Consumers: []string{"a"}, DedupWindow: time.Hour}, zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	payload := strings.Repeat("x", 700)
	for i := 0; i < 20000; i += 500 {
		var entries []Entry
		for j := i; j < i+500; j++ {
			entries = append(entries, Entry{Data: []byte(payload), DedupKey: fmt.Sprint("k", j)})
		}
		if _, err := q.Append(context.Background(), entries); err != nil {
			b.Fatal(err)
		}
	}
	q.Close()
	if fi, err := os.Stat(path); err == nil {
		b.Logf("file %d MiB", fi.Size()>>20)
	}
	b.Run("check", func(b *testing.B) {
		for b.Loop() {
			if _, err := checkFile(path); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("salvage", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			dst := filepath.Join(b.TempDir(), fmt.Sprint("s", i))
			rep, err := Salvage(path, dst, zerolog.Nop())
			if err != nil || rep.Salvaged != 20000 {
				b.Fatalf("%+v %v", rep, err)
			}
		}
	})
}

// TestCheckNeverReadsALiveFile: a second Open while a queue writes must
// wait for the lock and fail with ErrLocked, never check (and so never
// quarantine) a file whose freed pages are being reused under it.
func TestCheckNeverReadsALiveFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	q := openQueue(t, Config{Path: path, DedupWindow: time.Hour})
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			q.Append(context.Background(), []Entry{{Data: make([]byte, 300), DedupKey: fmt.Sprint(i)}})
		}
	}()
	_, err := Open(Config{Path: path, Consumers: []string{"a"}, LockTimeout: 300 * time.Millisecond}, zerolog.Nop())
	close(stop)
	<-done
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	if aside, _ := filepath.Glob(path + ".*"); len(aside) != 0 {
		t.Fatalf("files beside the live queue: %v", aside)
	}
}
