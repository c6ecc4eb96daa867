package buffer

import (
	"context"
	"encoding/binary"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/rs/zerolog"
)

var (
	fuzzBaseOnce sync.Once
	fuzzBase     []byte
)

// fuzzBaseFile is a small valid queue file: messages with dedup keys (so
// msgs, dedup and dedupt have branch and leaf pages), cursors, a dead
// letter and a KV entry.
func fuzzBaseFile(t testing.TB) []byte {
	fuzzBaseOnce.Do(func() {
		dir, err := os.MkdirTemp("", "queue-fuzz-base-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(dir)
		path := filepath.Join(dir, "q.db")
		q, err := Open(Config{Path: path, Consumers: []string{"a", "b"}, DedupWindow: 1 << 50}, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		var entries []Entry
		for i := range 600 {
			entries = append(entries, Entry{Data: []byte("fuzz message payload payload payload"), DedupKey: string(rune('a'+i%26)) + string(rune(i))})
		}
		q.Append(ctx, entries[:300])
		q.Append(ctx, entries[300:])
		ra, _ := q.Reader("a")
		recs := readAll(t, ra, 1)
		ra.DeadLetter(ctx, recs[0], "no")
		ra.Ack(ctx, 250)
		q.KV("ns").Put(ctx, "k", []byte("v"))
		q.Close()
		fuzzBase, err = os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
	})
	return fuzzBase
}

// FuzzOpenDamagedFile flips bytes of a small valid queue file and opens
// it: Open must never panic (nor die in a bbolt goroutine) and must always
// return a working queue, either the file itself or, quarantined, a fresh
// one with what could be salvaged. The input is a list of (offset, value)
// pairs, 4 bytes each: a 3-byte offset into the file and the byte to write.
func FuzzOpenDamagedFile(f *testing.F) {
	base := fuzzBaseFile(f)
	flip := func(offsets ...int) []byte {
		var in []byte
		for _, o := range offsets {
			in = binary.BigEndian.AppendUint32(in, uint32(o)<<8|0xA5)
		}
		return in
	}
	pages := len(base) / 4096
	f.Add(flip())
	f.Add(flip(0, 4096))                   // both meta pages
	f.Add(flip(16 + 16))                   // meta 0's root pointer
	f.Add(flip(2*4096, 2*4096+8))          // a page id and its flags
	f.Add(flip(3*4096+10, 3*4096+16+4))    // a count and an element position
	f.Add(flip(pages/2*4096 + 100))        // a value in the middle
	f.Add(flip(4*4096+12, (pages-1)*4096)) // an overflow count; the last page
	for p := 2; p < pages; p++ {
		f.Add(flip(p*4096+17, p*4096+20)) // every page's first element
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		b := append([]byte(nil), base...)
		for i := 0; i+4 <= len(in) && i < 4*64; i += 4 {
			v := binary.BigEndian.Uint32(in[i:])
			b[int(v>>8)%len(b)] = byte(v)
		}
		path := filepath.Join(t.TempDir(), "q.db")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		q, err := Open(Config{Path: path, Consumers: []string{"a", "b"}, DedupWindow: 1 << 50}, zerolog.Nop())
		if err != nil {
			t.Fatalf("Open of a damaged file returned an error instead of a working queue: %v", err)
		}
		defer q.Close()
		ctx := context.Background()
		res, err := q.Append(ctx, []Entry{{Data: []byte("after"), DedupKey: "fuzz-after"}})
		if err != nil || res.Accepted != 1 {
			// A page damaged in a way only a commit touches: the queue
			// must say so (ErrDamaged), and the next open must recover.
			q.Close()
			q2, err2 := Open(Config{Path: path, Consumers: []string{"a", "b"}, DedupWindow: 1 << 50}, zerolog.Nop())
			if err2 != nil {
				t.Fatalf("append failed (%+v %v) and reopening failed: %v", res, err, err2)
			}
			defer q2.Close()
			if res, err := q2.Append(ctx, []Entry{{Data: []byte("after")}}); err != nil || res.Accepted != 1 {
				t.Fatalf("append after reopen: %+v %v", res, err)
			}
		}
	})
}
