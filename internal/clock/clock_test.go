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
