package cumulocity

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"wittra-gateway/sinks"
	"wittra-gateway/sinks/cumulocity/c8yfake"
)

// testDirectory is a sinks.Directory a test edits.
type testDirectory struct {
	mu sync.Mutex
	m  map[string]sinks.DeviceInfo // "project/device"
}

func (d *testDirectory) Device(project, device string) (sinks.DeviceInfo, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	info, ok := d.m[project+"/"+device]
	return info, ok
}

func (d *testDirectory) set(project, device, name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.m == nil {
		d.m = map[string]sinks.DeviceInfo{}
	}
	d.m[project+"/"+device] = sinks.DeviceInfo{Name: name, Type: "tag"}
}

func childNameOf(t *testing.T, f *c8yfake.Server, device string) string {
	t.Helper()
	mo, ok := f.DeviceBySerial(device)
	if !ok {
		t.Fatalf("child %s not in the fake's inventory", device)
	}
	return mo.Name
}

func msgFor(t *testing.T, device string, temp string) sinks.Message {
	m := message(t, []byte(`{"deviceId":"`+device+`","payload":{"temperature":`+temp+`}}`))
	m.Project = "P1"
	return m
}

// Children are registered under their Wittra name (unknown devices under
// "Wittra <id>"), renamed once when the name changes, and not renamed again
// after a restart: the name given is kept in the queue file.
func TestChildDevicesGetWittraNames(t *testing.T) {
	for _, mode := range []string{ModeMQTT, ModeREST} {
		t.Run(mode, func(t *testing.T) {
			f := startFake(t)
			dir := &testDirectory{}
			dir.set("P1", "D1", "Freezer 2")
			dir.set("P2", "D2", "other project, same id") // never used for P1/D2
			q, kv := openKV(t, t.TempDir())
			defer q.Close()
			cfg := func(c *Config) { c.Directory = dir; c.State = kv }
			s := newSink(t, f, mode, cfg)
			deliverAll(t, s, []sinks.Message{msgFor(t, "D1", "1"), msgFor(t, "D2", "2")}, 30*time.Second)
			if got := childNameOf(t, f, "D1"); got != "Freezer 2" {
				t.Fatalf("D1 registered as %q", got)
			}
			if got := childNameOf(t, f, "D2"); got != "Wittra D2" {
				t.Fatalf("D2 (no name) registered as %q", got)
			}

			dir.set("P1", "D1", "Freezer 3, left")
			dir.set("P1", "D2", "Dock door")
			deliverAll(t, s, []sinks.Message{msgFor(t, "D1", "3"), msgFor(t, "D2", "4")}, 30*time.Second)
			if got := childNameOf(t, f, "D1"); got != "Freezer 3, left" {
				t.Fatalf("D1 after the rename: %q", got)
			}
			if got := childNameOf(t, f, "D2"); got != "Dock door" {
				t.Fatalf("D2 after its name became known: %q", got)
			}
			if n := len(f.Measurements()); n != 4 {
				t.Fatalf("measurements = %d, want 4", n)
			}
			if mode == ModeMQTT {
				var updates []string
				for _, p := range f.Publishes() {
					if strings.HasPrefix(p.Topic, "inventory/") {
						updates = append(updates, p.Topic+" "+p.Payload)
					}
				}
				want := []string{
					`inventory/managedObjects/update/D1 {"name":"Freezer 3, left"}`,
					`inventory/managedObjects/update/D2 {"name":"Dock door"}`,
				}
				if strings.Join(updates, "\n") != strings.Join(want, "\n") {
					t.Fatalf("inventory updates:\n%s\nwant:\n%s", strings.Join(updates, "\n"), strings.Join(want, "\n"))
				}
				if errs := f.Errors(); len(errs) != 0 {
					t.Fatalf("the fake reported errors: %+v", errs)
				}
			}
			s.Close(context.Background())

			// Restart on the same state: nothing is renamed again.
			before := len(f.Publishes())
			s2 := newSink(t, f, mode, cfg)
			deliverAll(t, s2, []sinks.Message{msgFor(t, "D1", "5")}, 30*time.Second)
			for _, p := range f.Publishes()[before:] {
				if !strings.HasPrefix(p.Topic, "s/us") {
					t.Fatalf("after a restart the sink published %s %s", p.Topic, p.Payload)
				}
			}
			if got := childNameOf(t, f, "D1"); got != "Freezer 3, left" {
				t.Fatalf("D1 after restart: %q", got)
			}
		})
	}
}

// A child registered before names were kept (by an older version, as
// "Wittra <id>") is renamed when a name is known.
func TestChildRegisteredBeforeNamesIsRenamed(t *testing.T) {
	f := startFake(t)
	q, kv := openKV(t, t.TempDir())
	defer q.Close()
	old := newSink(t, f, ModeMQTT, func(c *Config) { c.State = kv })
	deliverAll(t, old, []sinks.Message{msgFor(t, "D1", "1")}, 30*time.Second)
	old.Close(context.Background())
	if err := kv.Update(context.Background(), map[string][]byte{old.nameKey("D1"): nil}); err != nil {
		t.Fatal(err) // as an older version left it: registered, no name kept
	}
	dir := &testDirectory{}
	dir.set("P1", "D1", "Freezer 2")
	s := newSink(t, f, ModeMQTT, func(c *Config) { c.State = kv; c.Directory = dir })
	deliverAll(t, s, []sinks.Message{msgFor(t, "D1", "2")}, 30*time.Second)
	if got := childNameOf(t, f, "D1"); got != "Freezer 2" {
		t.Fatalf("D1 = %q", got)
	}
}

// A rename Cumulocity refuses never holds up data; it is tried again after
// renameRetry.
func TestRefusedRenameDoesNotBlockData(t *testing.T) {
	f := startFake(t)
	dir := &testDirectory{}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var clockMu sync.Mutex
	s := newSink(t, f, ModeREST, func(c *Config) {
		c.Directory = dir
		c.now = func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return now }
	})
	deliverAll(t, s, []sinks.Message{msgFor(t, "D1", "1")}, 30*time.Second)
	f.InjectHTTP(c8yfake.HTTPFault{Method: http.MethodPut, PathPrefix: "/inventory/managedObjects/", Status: http.StatusForbidden}, -1)
	dir.set("P1", "D1", "Freezer 2")
	d := deliverAll(t, s, []sinks.Message{msgFor(t, "D1", "2"), msgFor(t, "D1", "3")}, 30*time.Second)
	if len(d.failures) != 0 || len(f.Measurements()) != 3 {
		t.Fatalf("data held up by a refused rename: failures %q, measurements %d", d.failures, len(f.Measurements()))
	}
	if got := childNameOf(t, f, "D1"); got != "Wittra D1" {
		t.Fatalf("D1 = %q although the rename was refused", got)
	}
	puts := f.FaultsFired()
	fired := 0
	for _, n := range puts {
		fired += n
	}
	if fired != 1 {
		t.Fatalf("refused renames = %v, want exactly one try before renameRetry", puts)
	}
	f.ClearFaults()
	deliverAll(t, s, []sinks.Message{msgFor(t, "D1", "4")}, 30*time.Second)
	if got := childNameOf(t, f, "D1"); got != "Wittra D1" {
		t.Fatalf("renamed again before renameRetry (%q); faults fired %v", got, puts)
	}
	clockMu.Lock()
	now = now.Add(renameRetry)
	clockMu.Unlock()
	deliverAll(t, s, []sinks.Message{msgFor(t, "D1", "5")}, 30*time.Second)
	if got := childNameOf(t, f, "D1"); got != "Freezer 2" {
		t.Fatalf("D1 = %q after renameRetry", got)
	}
}
