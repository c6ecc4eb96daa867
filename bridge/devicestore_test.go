package bridge

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"wittra-gateway/buffer"
	"wittra-gateway/sinks"
)

type seenTable struct {
	mu   sync.Mutex
	devs []SeenDevice
}

func (s *seenTable) set(d ...SeenDevice) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.devs = d
}

func (s *seenTable) get() []SeenDevice {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]SeenDevice(nil), s.devs...)
}

func openStoreQueue(t testing.TB, path string) *buffer.Queue {
	t.Helper()
	q, err := buffer.Open(buffer.Config{Path: path, MaxBytes: 1 << 20, MaxAge: time.Hour, Consumers: []string{"s"}}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func seen(project, id string, at time.Time, body string) SeenDevice {
	return SeenDevice{Project: project, ID: id, Kind: sinks.KindData, LastSeen: at, Body: []byte(body), BodyLen: len(body)}
}

// Devices seen are kept with the latest value of every key (a message
// without a key keeps the older value), survive a reopen, and are bounded:
// the least recently seen go first.
func TestDeviceStoreKeepsLatestValuesBounded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "queue.db")
	q := openStoreQueue(t, path)
	table := &seenTable{}
	ds, err := OpenDeviceStore(q.KV("devices_seen"), table.get, 2)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	table.set(seen("P1", "D1", t0, `{"deviceId":"D1","timestamp":"2026-01-01T00:00:00Z","payload":{"temperature":21.5,"battery":{"percentage":80}}}`))
	if err := ds.Save(ctx); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", 500)
	table.set(seen("P1", "D1", t0.Add(time.Minute), `{"deviceId":"D1","payload":{"battery":{"percentage":79},"label":"`+long+`"}}`))
	if err := ds.Save(ctx); err != nil {
		t.Fatal(err)
	}
	st, _ := q.Stats()
	if err := ds.Save(ctx); err != nil { // nothing new: no commit
		t.Fatal(err)
	}
	if st2, _ := q.Stats(); st2.Commits != st.Commits {
		t.Fatalf("an unchanged table was written again (%d → %d commits)", st.Commits, st2.Commits)
	}
	got := ds.Devices()
	if len(got) != 1 {
		t.Fatalf("devices = %+v", got)
	}
	vals := map[string]string{}
	for _, v := range got[0].Values {
		vals[v.Path] = v.Value
	}
	if vals["temperature"] != "21.5" || vals["battery/percentage"] != "79" || len(vals["label"]) != MaxSavedValueLen || got[0].Values[0].Path != "battery/percentage" {
		t.Fatalf("values = %+v", got[0].Values)
	}
	if got[0].MeasuredAt == nil || !got[0].MeasuredAt.Equal(t0) {
		t.Fatalf("measured_at = %v (the second message had no timestamp: the first one's stays)", got[0].MeasuredAt)
	}

	// Bound 2: a third device drops the least recently seen.
	table.set(
		seen("P1", "D1", t0.Add(time.Minute), ""),
		seen("P%2F2", "D2", t0.Add(2*time.Minute), `{"deviceId":"D2","payload":{"t":1}}`),
		seen(DefaultProject, "D3", t0.Add(3*time.Minute), `{"deviceId":"D3","payload":{"t":2}}`),
	)
	table.devs[0].Body = nil // unchanged LastSeen: not rewritten
	if err := ds.Save(ctx); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q = openStoreQueue(t, path)
	defer q.Close()
	again, err := OpenDeviceStore(q.KV("devices_seen"), nil, 2)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, d := range again.Devices() {
		ids = append(ids, d.ID)
	}
	if strings.Join(ids, ",") != "D3,D2" {
		t.Fatalf("kept after reopen: %v, want D3,D2 (most recent first; D1 dropped)", ids)
	}
	keys, _ := q.KV("devices_seen").Keys()
	if len(keys) != 2 {
		t.Fatalf("KV keys = %v", keys)
	}
	if p := again.Projects(); strings.Join(p, ",") != "P/2" {
		t.Fatalf("projects = %v (unescaped, without %q)", p, DefaultProject)
	}
	if err := again.Save(ctx); err == nil {
		t.Fatal("an offline store saved")
	}
}

// Run saves once more when it stops, so the last minutes before a stop
// are kept.
func TestDeviceStoreRunSavesAtStop(t *testing.T) {
	q := openStoreQueue(t, filepath.Join(t.TempDir(), "queue.db"))
	defer q.Close()
	table := &seenTable{}
	ds, err := OpenDeviceStore(q.KV("devices_seen"), table.get, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ds.Run(ctx, time.Hour, func(err error) { t.Error(err) }); close(done) }()
	table.set(seen("P1", "D1", time.Now(), `{"deviceId":"D1","payload":{"t":1}}`))
	cancel()
	<-done
	if keys, _ := q.KV("devices_seen").Keys(); len(keys) != 1 || keys[0] != "P1/D1" {
		t.Fatalf("keys after stop = %v", keys)
	}
}
