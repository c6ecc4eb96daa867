package clock

import (
	"os"
	"strings"
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
			if _, ok := bootTime(); ok {
				return system{id: id, since: func() time.Duration { d, _ := bootTime(); return d }}
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
