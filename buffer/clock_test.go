package buffer

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"wittra-gateway/internal/clock"
)

// Ages are gateway time: these tests drive a fake clock through the steps
// of a box without a real-time clock and check what expires.

var (
	epoch1970 = time.Date(1970, 1, 1, 0, 0, 10, 0, time.UTC)
	realNow   = time.Date(2027, 3, 1, 12, 0, 0, 0, time.UTC)
	floor     = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
)

func openClocked(t *testing.T, path string, fc *clock.Fake, cfg Config) *Queue {
	t.Helper()
	cfg.Path, cfg.Clock, cfg.BuildFloor = path, fc, floor
	return openQueue(t, cfg)
}

func scanAll(t *testing.T, q *Queue) []Record {
	t.Helper()
	var out []Record
	if err := q.Scan(0, func(r Record) bool {
		r.Data = append([]byte(nil), r.Data...)
		out = append(out, r)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func sweep(t *testing.T, q *Queue) uint64 {
	t.Helper()
	before := q.Counters().Expired
	if err := q.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	return q.Counters().Expired - before
}

// appendKey appends one message with a dedup key and reports whether it
// was accepted (false: a duplicate).
func appendKey(t *testing.T, q *Queue, key string) bool {
	t.Helper()
	res, err := q.Append(context.Background(), []Entry{{Data: []byte(key), DedupKey: key}})
	if err != nil {
		t.Fatal(err)
	}
	return res.Accepted == 1
}

func TestBootAt1970ThenNTPStepExpiresNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	fc := clock.NewFake(epoch1970)
	cfg := Config{MaxAge: time.Hour, DedupWindow: time.Hour}
	q := openClocked(t, path, fc, cfg)
	if st := q.Clock(); st.Trusted {
		t.Fatalf("clock at 1970 reported trusted: %+v", st)
	}
	appendKey(t, q, "a")
	fc.Advance(10 * time.Minute)
	// Restart in a new boot, still at 1970 (no RTC, no fake-hwclock).
	q.Close()
	fc.Reboot(epoch1970)
	q = openClocked(t, path, fc, cfg)
	appendKey(t, q, "b")
	recs := scanAll(t, q)
	if len(recs) != 2 || !recs[0].TimeUnsure || !recs[1].TimeUnsure {
		t.Fatalf("records before NTP = %+v, want 2 with unsure times", recs)
	}
	fc.Advance(5 * time.Minute)
	fc.Set(realNow) // NTP syncs: a 57-year step
	if n := sweep(t, q); n != 0 {
		t.Fatalf("the step to now expired %d messages", n)
	}
	st := q.Clock()
	if !st.Trusted || st.Steps != 1 {
		t.Fatalf("after the step: %+v, want trusted with 1 step", st)
	}
	if appendKey(t, q, "a") || appendKey(t, q, "b") {
		t.Fatal("dedup forgot keys across the step")
	}
	// Receive times are corrected: now minus the age the queue measured.
	recs = scanAll(t, q)
	wantB := realNow.Add(-5 * time.Minute)
	wantA := wantB.Add(-10*time.Minute - time.Second) // the 1 s of the new boot's uptime
	if recs[0].TimeUnsure || !recs[0].Time.Equal(wantA) || !recs[1].Time.Equal(wantB) {
		t.Fatalf("corrected times = %v, %v (unsure %v); want %v, %v", recs[0].Time, recs[1].Time, recs[0].TimeUnsure, wantA, wantB)
	}
	// They expire when they really waited MaxAge.
	fc.Advance(40 * time.Minute)
	if n := sweep(t, q); n != 0 {
		t.Fatalf("expired %d before max_age", n)
	}
	fc.Advance(10 * time.Minute) // a waited 10m+1s+5m+50m > 1h, b 55m
	if n := sweep(t, q); n != 1 {
		t.Fatalf("expired %d after a waited max_age, want 1", n)
	}
	fc.Advance(6 * time.Minute)
	if n := sweep(t, q); n != 1 {
		t.Fatalf("expired %d after b waited max_age, want 1", n)
	}
	if !appendKey(t, q, "a") {
		t.Fatal("dedup key a still refused after its window")
	}
}

func TestForwardStepWhileRunningExpiresOnlyWhatWaited(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	fc := clock.NewFake(realNow)
	cfg := Config{MaxAge: 7 * 24 * time.Hour, DedupWindow: 7 * 24 * time.Hour}
	q := openClocked(t, path, fc, cfg)
	appendKey(t, q, "a")
	fc.Advance(time.Hour)
	fc.Step(10 * 24 * time.Hour)
	if n := sweep(t, q); n != 0 {
		t.Fatalf("a 10-day forward step expired %d messages", n)
	}
	if appendKey(t, q, "a") {
		t.Fatal("a 10-day forward step ended the dedup window")
	}
	appendKey(t, q, "b")
	// Restart in the same boot: the monotonic clock counts the down time.
	q.Close()
	fc.Advance(2 * time.Hour)
	q = openClocked(t, path, fc, cfg)
	fc.Advance(7*24*time.Hour - 3*time.Hour + time.Second) // a: 7d+1s, b: 7d−1h+1s
	if n := sweep(t, q); n != 1 {
		t.Fatalf("expired %d, want 1 (only a waited 7 days)", n)
	}
	if !appendKey(t, q, "a") || appendKey(t, q, "b") {
		t.Fatal("dedup window: a should be forgotten, b kept")
	}
	if recs := scanAll(t, q); len(recs) != 2 || string(recs[0].Data) != "b" {
		t.Fatalf("left after expiry: %d records", len(recs))
	}
	if st := q.Clock(); st.Steps != 0 || !st.Trusted {
		// This run's reading started after the step: it is its clock.
		t.Fatalf("clock status after restart = %+v", st)
	}
}

func TestBackwardStepDoesNotStall(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	fc := clock.NewFake(realNow)
	cfg := Config{MaxAge: time.Hour, DedupWindow: time.Hour}
	q := openClocked(t, path, fc, cfg)
	appendKey(t, q, "a")
	fc.Step(-10 * 24 * time.Hour)
	appendKey(t, q, "b")
	// Restart, new boot, the wall clock still 10 days back: 1 s of uptime
	// is all that can be vouched for.
	q.Close()
	fc.Reboot(fc.Now())
	q = openClocked(t, path, fc, cfg)
	fc.Advance(time.Hour)
	if n := sweep(t, q); n != 2 {
		t.Fatalf("expired %d an hour after a backward step, want 2 (nothing waits for the wall clock to catch up)", n)
	}
	if !appendKey(t, q, "a") || !appendKey(t, q, "b") {
		t.Fatal("dedup keys outlived their window after a backward step")
	}
	// Reading continues after the step: new messages are delivered.
	r, err := q.Reader("a")
	if err != nil {
		t.Fatal(err)
	}
	if recs := readAll(t, r, 2); string(recs[0].Data) != "a" {
		t.Fatalf("read after the step = %q", recs[0].Data)
	}
}

func TestRestartCreditsDownTimeOnlyWhenVouchedFor(t *testing.T) {
	cases := []struct {
		name    string
		down    func(fc *clock.Fake)
		maxAge  time.Duration
		expired uint64
	}{
		{"same boot", func(fc *clock.Fake) { fc.Advance(2 * time.Hour) }, time.Hour, 1},
		{"RTC box off two days", func(fc *clock.Fake) { fc.Reboot(fc.Now().Add(48 * time.Hour)) }, time.Hour, 1},
		{"reboot at 1970", func(fc *clock.Fake) { fc.Reboot(epoch1970) }, time.Hour, 0},
		{"fake-hwclock", func(fc *clock.Fake) { fc.Reboot(fc.Now()) }, time.Hour, 0},
		{"implausible year", func(fc *clock.Fake) { fc.Reboot(fc.Now().Add(365 * 24 * time.Hour)) }, 60 * 24 * time.Hour, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "q.db")
			fc := clock.NewFake(realNow)
			cfg := Config{MaxAge: c.maxAge}
			q := openClocked(t, path, fc, cfg)
			appendKey(t, q, "a")
			q.Close()
			c.down(fc)
			q = openClocked(t, path, fc, cfg)
			if n := sweep(t, q); n != c.expired {
				t.Fatalf("expired %d after restart, want %d", n, c.expired)
			}
		})
	}
}

func TestEpochsArePruned(t *testing.T) {
	fc := clock.NewFake(realNow)
	q := openClocked(t, filepath.Join(t.TempDir(), "q.db"), fc, Config{})
	for range 5 {
		appendKey(t, q, "")
		fc.Step(time.Hour)
	}
	q.mu.Lock()
	n := len(q.st.epochs)
	q.mu.Unlock()
	if n != 5 {
		t.Fatalf("epochs = %d after 4 steps, want 5", n)
	}
	r, _ := q.Reader("a")
	recs := readAll(t, r, 5)
	if err := r.Ack(context.Background(), recs[4].Seq); err != nil {
		t.Fatal(err)
	}
	q.mu.Lock()
	n = len(q.st.epochs)
	q.mu.Unlock()
	if n != 1 {
		t.Fatalf("epochs = %d with an empty queue, want 1 (the current)", n)
	}
}
