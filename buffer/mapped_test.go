package buffer

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"wittra-gateway/internal/testutil"
)

// Releasing the mapped pages while commits grow the file (and bbolt remaps
// it elsewhere) must never touch memory that is not the mapping: the old
// range may already hold Go heap objects, and MADV_DONTNEED would zero
// them. The test grows the file under constant releases and checks that
// heap data written meanwhile is still intact (a corrupted heap also tends
// to crash the runtime, which fails the test as well).
func TestReleaseMappedWhileTheFileGrows(t *testing.T) {
	q := openQueue(t, Config{})
	ctx := context.Background()
	var stop atomic.Bool
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			q.releaseMapped()
			runtime.Gosched()
		}
	}()
	// Heap objects allocated while mappings come and go, checked at the end.
	var kept [][]byte
	body := bytes.Repeat([]byte("x"), 64<<10)
	// A fixed number of appends, however slow the machine: the file must
	// grow past several remaps (25 MiB), whatever the time it takes.
	for i := 0; i < 400; i++ {
		if _, err := q.Append(ctx, []Entry{{Data: body}}); err != nil {
			t.Fatal(err)
		}
		b := bytes.Repeat([]byte{byte(i) | 1}, 4096)
		kept = append(kept, b)
	}
	stop.Store(true)
	wg.Wait()
	for i, b := range kept {
		want := byte(i) | 1
		for j, c := range b {
			if c != want {
				t.Fatalf("heap object %d byte %d is %d, want %d: memory outside the mapping was released", i, j, c, want)
			}
		}
	}
	if fi := q.FileSize(); fi < 8<<20 {
		t.Fatalf("file grew to %d bytes only; the test needs remaps", fi)
	}
}

// mappedRSS is how much of the file at path this process has resident
// through its mappings (/proc/self/smaps).
func mappedRSS(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Skipf("no smaps: %v", err)
	}
	defer f.Close()
	var total int64
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		switch {
		case len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":"):
			in = len(fields) >= 6 && fields[5] == path
		case in && len(fields) == 3 && fields[0] == "Rss:":
			kb, _ := strconv.ParseInt(fields[1], 10, 64)
			total += kb << 10
		}
	}
	return total
}

// Deleting acknowledged messages reads their pages through the mapping
// again; a commit that deletes more than releaseEvery releases it, as
// reads do, or the pages of a drain's last deletes stayed resident.
func TestDeletesReleaseTheMappedFile(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the mapping is released on Linux only")
	}
	q := openQueue(t, Config{SweepInterval: time.Hour}) // no periodic release
	body := bytes.Repeat([]byte("d"), 1000)
	appendBatches(t, q, 3000, 500, func(int) Entry { return Entry{Data: body} })
	// Scan reads every record without counting toward a release.
	var last uint64
	if err := q.Scan(1, func(r Record) bool { last = r.Seq; return true }); err != nil {
		t.Fatal(err)
	}
	if rss := mappedRSS(t, q.Path()); rss < 2<<20 {
		t.Fatalf("%d bytes of the file resident after reading 3 MB: the test cannot tell a release", rss)
	}
	r, err := q.Reader("a")
	if err != nil {
		t.Fatal(err)
	}
	// The appends' commits counted toward a release too: only the deletes
	// may bring this one about.
	q.touchedSinceRelease.Store(0)
	if err := r.Ack(context.Background(), last); err != nil {
		t.Fatal(err)
	}
	// The committer releases after it has answered the writers (a reply
	// never waits for it), so Ack may return just before the release. No
	// sweep runs in this test (SweepInterval), so nothing else releases.
	var rss int64
	if !testutil.Poll(10*time.Second, func() bool { rss = mappedRSS(t, q.Path()); return rss <= 512<<10 }) {
		t.Errorf("%d bytes of the file still resident after deleting 3 MB", rss)
	}
}

// After a drain, live messages come in small commits: each writes its
// pages to free pages anywhere in the file, and the next transaction reads
// them back through the mapping. Those pages count toward a release as
// reads do: without that, 11-12 MiB stay resident here, and 10-20 MiB
// after the bench's 1M drain.
func TestCommitsReleaseTheMappedFile(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the mapping is released on Linux only")
	}
	q := openQueue(t, Config{SweepInterval: time.Hour}) // no sweep, no compaction
	body := bytes.Repeat([]byte("f"), 1000)
	appendBatches(t, q, 20000, 500, func(int) Entry { return Entry{Data: body} })
	r, err := q.Reader("a")
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Ack(context.Background(), 20000); err != nil { // a drained 20 MB file
		t.Fatal(err)
	}
	q.releaseMapped()
	const commits, perCommit = 500, 16
	appendBatches(t, q, commits*perCommit, perCommit, func(int) Entry { return Entry{Data: body} })
	if rss := mappedRSS(t, q.Path()); rss > 1536<<10 {
		t.Errorf("%d bytes of the file resident after %d commits of %d KB", rss, commits, perCommit)
	}
}
