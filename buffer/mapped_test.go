package buffer

import (
	"bytes"
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
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
