// Package clock is the time source of the components that measure ages:
// the wall clock (what a receive time is written with) and a monotonic
// clock (what ages are measured with). On site boxes without a battery-backed
// clock the wall clock starts at 1970 or at the last shutdown and steps
// when NTP syncs; the monotonic clock never steps.
package clock

import (
	"fmt"
	"sync"
	"time"
)

// Clock gives both notions of time. Tests inject a Fake.
type Clock interface {
	// Now is the wall clock. It may step in either direction.
	Now() time.Time
	// Mono is time since the start of the current boot (Linux
	// CLOCK_BOOTTIME: it counts suspend and never steps). Its origin is
	// only fixed within one BootID.
	Mono() time.Duration
	// BootID identifies the boot Mono counts from; when it differs from a
	// stored one, Mono readings cannot be compared across the two.
	BootID() string
}

// Fake is a Clock tests drive by hand. Its zero value is not usable: use
// NewFake.
type Fake struct {
	mu   sync.Mutex
	wall time.Time
	mono time.Duration
	boot int
}

// NewFake starts a fake clock at wall, with Mono at one second into a boot.
func NewFake(wall time.Time) *Fake { return &Fake{wall: wall, mono: time.Second, boot: 1} }

func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.wall
}

func (f *Fake) Mono() time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mono
}

func (f *Fake) BootID() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fmt.Sprintf("fake-boot-%d", f.boot)
}

// Advance lets d pass: both clocks move.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.wall = f.wall.Add(d)
	f.mono += d
}

// Step moves the wall clock only, as settimeofday or an NTP step does.
func (f *Fake) Step(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.wall = f.wall.Add(d)
}

// Set sets the wall clock only.
func (f *Fake) Set(wall time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.wall = wall
}

// Reboot starts a new boot: Mono restarts near zero and the wall clock is
// set to wall (1970 on a box without a real-time clock, the last shutdown
// time with fake-hwclock).
func (f *Fake) Reboot(wall time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.boot++
	f.mono = time.Second
	f.wall = wall
}
