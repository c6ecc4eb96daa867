package clock

import (
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// System is the real clock.
func System() Clock { return sys }

type system struct {
	id    string
	since func() time.Duration
}

var processStart = time.Now()

// sys is set up once: the boot cannot change while the process lives.
var sys = func() system {
	if b, err := os.ReadFile("/proc/sys/kernel/random/boot_id"); err == nil {
		if id := strings.TrimSpace(string(b)); id != "" {
			if b, ok := newBootClock(); ok {
				return system{id: id, since: b.since}
			}
		}
	}
	// Without a boot id and boot clock, Mono counts from this process and
	// the id names the process: a later run never mistakes the machine's
	// uptime for time it was down.
	return system{id: "process-" + processStart.Format(time.RFC3339Nano), since: func() time.Duration { return time.Since(processStart) }}
}()

func (system) Now() time.Time        { return time.Now() }
func (s system) Mono() time.Duration { return s.since() }
func (s system) BootID() string      { return s.id }

// bootClock reads the boot clock without a system call per reading (the
// queue reads it for every request: 3 % of intake CPU as a system call):
// Go's monotonic clock, read through the vDSO, plus the time the machine
// spent suspended, which it re-reads from the boot clock at most every
// suspendRecheck. After a resume Mono lags by up to that long and then
// catches up; it never goes back.
type bootClock struct {
	start   time.Time    // Go monotonic reference
	offset  atomic.Int64 // boot clock minus time since start, ns
	checked atomic.Int64 // time since start at the last re-read, ns
}

const suspendRecheck = time.Second

func newBootClock() (*bootClock, bool) {
	b := &bootClock{start: time.Now()}
	d, ok := bootTime()
	if !ok {
		return nil, false
	}
	m := time.Since(b.start)
	b.offset.Store(int64(d - m))
	b.checked.Store(int64(m))
	return b, true
}

func (b *bootClock) since() time.Duration {
	m := time.Since(b.start)
	if m-time.Duration(b.checked.Load()) >= suspendRecheck {
		if d, ok := bootTime(); ok {
			m = time.Since(b.start)
			// Suspended time only grows; a smaller difference is the
			// jitter between the two reads.
			for off := int64(d - m); ; {
				old := b.offset.Load()
				if off <= old || b.offset.CompareAndSwap(old, off) {
					break
				}
			}
			b.checked.Store(int64(m))
		}
	}
	return m + time.Duration(b.offset.Load())
}
