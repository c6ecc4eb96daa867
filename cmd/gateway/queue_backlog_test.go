package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"wittra-gateway/buffer"
)

// TestQueueStatsShowsBacklogAndLive: `queue stats` splits a live_first
// sink's depth into its backlog and its live part.
func TestQueueStatsShowsBacklogAndLive(t *testing.T) {
	ctx := context.Background()
	q, err := buffer.Open(buffer.Config{Path: filepath.Join(t.TempDir(), "queue.db"), Consumers: []string{"plant"}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	add := func(n int) {
		for range n {
			if _, err := q.Append(ctx, []buffer.Entry{{Data: []byte("x")}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	add(10)
	r, _ := q.Reader("plant")
	if _, err := r.Split(ctx); err != nil {
		t.Fatal(err)
	}
	add(5)
	live, _ := r.ReadLive(2, 1<<20)
	if err := r.Ack(ctx, live[len(live)-1].Seq); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := queueStats(&out, q); err != nil {
		t.Fatal(err)
	}
	var row []string
	for _, line := range strings.Split(out.String(), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == "plant" {
			row = f
		}
	}
	if len(row) < 5 || row[1] != "13" || row[2] != "10" || row[3] != "3" || row[4] == "-" {
		t.Fatalf("queue stats row %q, want depth 13, backlog 10, live 3 and an age\n%s", row, out.String())
	}
}
