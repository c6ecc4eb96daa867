package buffer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

func TestCompactionShrinksADrainedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	q := openQueue(t, Config{Path: path, CompactMinSize: 1 << 20, DedupWindow: 0})
	data := make([]byte, 4000)
	for i := range 2000 {
		if _, err := q.Append(context.Background(), []Entry{{Data: data}}); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	r, _ := q.Reader("a")
	recs := readAll(t, r, 2000)
	if err := r.Ack(context.Background(), recs[len(recs)-1].Seq); err != nil {
		t.Fatal(err)
	}
	big := fileSize(t, path)
	if ok, _ := q.needsCompaction(); !ok {
		t.Fatalf("a drained %d-byte file does not ask for compaction", big)
	}
	if err := q.Compact(); err != nil {
		t.Fatal(err)
	}
	small := fileSize(t, path)
	if small*4 > big {
		t.Fatalf("file %d bytes after compaction, was %d: want at least 4x smaller", small, big)
	}
	t.Logf("compaction: %d -> %d bytes", big, small)
	// The sequence survives: nothing restarts at 1 and skips a cursor.
	appendN(t, q, 0, 1)
	if recs := readAll(t, r, 1); recs[0].Seq != 2001 {
		t.Fatalf("seq after compaction = %d, want 2001", recs[0].Seq)
	}
	if got := q.Counters().Compactions; got != 1 {
		t.Fatalf("compactions = %d, want 1", got)
	}
}

func TestCorruptFileIsMovedAsideAndAFreshQueueStarts(t *testing.T) {
	for _, tc := range []struct {
		name     string
		salvaged int
		damage   func(t *testing.T, path string)
	}{
		{"garbage", 0, func(t *testing.T, path string) {
			os.WriteFile(path, []byte(strings.Repeat("not a bbolt file ", 1000)), 0o600)
		}},
		{"both meta pages overwritten", 10, func(t *testing.T, path string) {
			f, err := os.OpenFile(path, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			// Pages 0 and 1 are the two meta pages; page size is 4096 here.
			f.WriteAt([]byte(strings.Repeat("\xff", 2*4096)), 0)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "q.db")
			q := openQueue(t, Config{Path: path})
			appendN(t, q, 0, 10)
			q.Close()
			tc.damage(t, path)

			q = openQueue(t, Config{Path: path})
			if got := q.Counters().Quarantined; got != 1 {
				t.Fatalf("quarantined = %d, want 1", got)
			}
			aside, _ := filepath.Glob(path + ".corrupt-*")
			if len(aside) != 1 {
				t.Fatalf("files moved aside: %v, want one", aside)
			}
			appendN(t, q, 100, 1)
			r, _ := q.Reader("a")
			// What could be salvaged comes first (with both meta pages
			// gone the pages are still found by scanning the file).
			want := tc.salvaged + 1
			recs := readAll(t, r, want)
			if len(recs) != want || string(recs[want-1].Data) != "m100" || q.Counters().Salvaged != uint64(tc.salvaged) {
				t.Fatalf("fresh queue reads %d records, last %q; salvaged %d, want %d", len(recs), recs[len(recs)-1].Data, q.Counters().Salvaged, tc.salvaged)
			}
		})
	}
}

func TestOtherOpenErrorsAreNotTreatedAsCorruption(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root ignores file permissions")
	}
	path := filepath.Join(t.TempDir(), "q.db")
	q := openQueue(t, Config{Path: path})
	q.Close()
	os.Chmod(path, 0)
	if _, err := Open(Config{Path: path, Consumers: []string{"a"}}, zerolog.Nop()); err == nil {
		t.Fatal("Open of an unreadable file succeeded")
	}
	if aside, _ := filepath.Glob(path + ".corrupt-*"); len(aside) != 0 {
		t.Fatalf("a permission error moved the file aside: %v", aside)
	}
}

// TestFileSizeBoundFailsCommitsThenRecovers uses bbolt's MaxSize as the
// "disk": commits beyond it fail, nothing is corrupted, and once the
// consumer frees pages appends work again.
func TestFileSizeBoundFailsCommitsThenRecovers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	testDiskFull(t, path, Config{Path: path, MaxFileSize: 1 << 20})
}

// TestRealDiskFull runs the same on a 4 MiB tmpfs, where the kernel
// answers ENOSPC. It needs root (mount); CI runs as root.
func TestRealDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	path := filepath.Join(dir, "q.db")
	testDiskFull(t, path, Config{Path: path})
}

func testDiskFull(t *testing.T, path string, cfg Config) {
	q := openQueue(t, cfg)
	data := make([]byte, 2000)
	accepted := 0
	var fullErr error
	for i := range 100000 {
		_, err := q.Append(context.Background(), []Entry{{Data: data, DedupKey: fmt.Sprint(i)}})
		if err != nil {
			fullErr = err
			break
		}
		accepted++
	}
	if fullErr == nil {
		t.Fatal("the disk never filled")
	}
	if errors.Is(fullErr, ErrFull) {
		t.Fatalf("disk full reported as the queue policy ErrFull: %v", fullErr)
	}
	t.Logf("accepted %d messages, then: %v", accepted, fullErr)
	// Still full: refused again, nothing half-written.
	if _, err := q.Append(context.Background(), []Entry{{Data: data}}); err == nil {
		t.Fatal("append succeeded on a full disk")
	}
	st, err := q.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Messages != uint64(accepted) {
		t.Fatalf("messages = %d, want the %d accepted", st.Messages, accepted)
	}
	// The consumer drains half: freed pages are reused, appends recover.
	r, _ := q.Reader("a")
	recs := readAll(t, r, accepted)
	if err := r.Ack(context.Background(), recs[accepted/2].Seq); err != nil {
		t.Fatalf("ack on a full disk: %v", err)
	}
	if _, err := q.Append(context.Background(), []Entry{{Data: data, DedupKey: "after"}}); err != nil {
		t.Fatalf("append after space was freed: %v", err)
	}
	q.Close()
	q = openQueue(t, cfg)
	st, _ = q.Stats()
	if want := uint64(accepted - accepted/2); st.Messages != want {
		t.Fatalf("after reopen: %d messages, want %d", st.Messages, want)
	}
}
