//go:build !linux

package clock

import "time"

// bootTime: no boot clock is read here; Mono then counts from the process.
func bootTime() (time.Duration, bool) { return 0, false }
