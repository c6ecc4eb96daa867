package clock

import (
	"testing"
	"time"
)

func TestBuildFloor(t *testing.T) {
	if got := BuildFloor(""); got.Before(sourceFloor) {
		t.Fatalf("floor without a stamp = %v, before the source date %v", got, sourceFloor)
	}
	later := sourceFloor.Add(400 * 24 * time.Hour)
	if got := BuildFloor(later.Format(time.RFC3339)); !got.Equal(later) {
		t.Fatalf("floor with stamp %v = %v", later, got)
	}
	// git log --format=%cI writes +00:00 offsets.
	if got := BuildFloor("2030-01-02T03:04:05+00:00"); got.Year() != 2030 {
		t.Fatalf("floor from a %%cI stamp = %v", got)
	}
	if got := BuildFloor("not a time"); got.Before(sourceFloor) {
		t.Fatalf("a bad stamp lowered the floor to %v", got)
	}
}

func TestSystemClock(t *testing.T) {
	c := System()
	m1 := c.Mono()
	time.Sleep(10 * time.Millisecond)
	if m2 := c.Mono(); m2 <= m1 {
		t.Fatalf("Mono did not advance: %v then %v", m1, m2)
	}
	if c.BootID() == "" || c.BootID() != System().BootID() {
		t.Fatalf("boot id %q not stable", c.BootID())
	}
}

// Mono reads the boot clock through Go's monotonic clock: it agrees with
// the boot clock (no suspend here), also across a re-read, and never goes
// back.
func TestSystemMonoFollowsTheBootClock(t *testing.T) {
	b, ok := newBootClock()
	if !ok {
		t.Skip("no boot clock on this system")
	}
	var last time.Duration
	deadline := time.Now().Add(suspendRecheck + 200*time.Millisecond)
	for time.Now().Before(deadline) {
		before, _ := bootTime()
		m := b.since()
		after, _ := bootTime()
		if m < last {
			t.Fatalf("Mono went back: %v after %v", m, last)
		}
		last = m
		// Between the two boot-clock reads, give or take the jitter of
		// reading two clocks one after the other.
		if m < before-time.Millisecond || m > after+time.Millisecond {
			t.Fatalf("Mono %v outside the boot clock's %v..%v", m, before, after)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestFake(t *testing.T) {
	start := time.Unix(10, 0)
	f := NewFake(start)
	f.Advance(time.Minute)
	f.Step(time.Hour)
	if !f.Now().Equal(start.Add(time.Minute+time.Hour)) || f.Mono() != time.Second+time.Minute {
		t.Fatalf("after Advance and Step: wall %v mono %v", f.Now(), f.Mono())
	}
	boot := f.BootID()
	f.Reboot(start)
	if f.BootID() == boot || f.Mono() != time.Second || !f.Now().Equal(start) {
		t.Fatalf("after Reboot: boot %q mono %v wall %v", f.BootID(), f.Mono(), f.Now())
	}
}
