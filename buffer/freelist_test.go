package buffer

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// A clean close leaves the freelist in the file, so that the next open
// reads it instead of walking every page; the first commit after the open
// drops it again (commits leave it out), and a damaged one is quarantined
// and salvaged like any damaged page.

func freelistID(t *testing.T, path string) uint64 {
	t.Helper()
	pf := readPageFile(t, path)
	defer pf.Close()
	return pf.meta.freelist
}

func TestCleanCloseLeavesTheFreelistForTheNextOpen(t *testing.T) {
	f := newDamageFixture(t, 2000, 100)
	if id := freelistID(t, f.path); id == noFreelist {
		t.Fatal("no freelist after a clean close: the next open walks every page")
	}
	q, err := Open(Config{Path: f.path, Consumers: []string{"a", "b"}, DedupWindow: time.Hour}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.Append(context.Background(), []Entry{{Data: []byte("after"), DedupKey: "after"}}); err != nil {
		t.Fatal(err)
	}
	if id := freelistID(t, f.path); id != noFreelist {
		t.Errorf("freelist page %d still named after a commit: commits must not write it", id)
	}
	r, _ := q.Reader("b")
	if got := readAll(t, r, int(f.last-f.cursors["b"])+1); len(got) != int(f.last-f.cursors["b"])+1 {
		t.Fatalf("read %d after reopening, want %d", len(got), f.last-f.cursors["b"]+1)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if id := freelistID(t, f.path); id == noFreelist {
		t.Fatal("no freelist after the second clean close")
	}
}

func TestDamagedFreelistIsSalvagedLosingNothing(t *testing.T) {
	f := newDamageFixture(t, 2000, 100)
	id := freelistID(t, f.path)
	if id == noFreelist {
		t.Fatal("no freelist after a clean close")
	}
	smash(t, f.path, id)
	openDamaged(t, f, f.undelivered())
}
