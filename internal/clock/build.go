package clock

import (
	"runtime/debug"
	"time"
)

// sourceFloor is a date this source cannot have been built before: the
// floor when a build carries no stamp (go test, go run). Move it forward
// now and then; it only needs to be in the past.
var sourceFloor = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)

// BuildFloor is the earliest wall time this binary can run at: the newest
// of the -ldflags stamp (stamp, RFC 3339; "" when not set), the commit time
// Go records for `go build` in a checkout (vcs.time), and sourceFloor. A
// wall clock before it is certainly wrong.
func BuildFloor(stamp string) time.Time {
	floor := sourceFloor
	if t, err := time.Parse(time.RFC3339, stamp); err == nil && t.After(floor) {
		floor = t
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.time" {
				if t, err := time.Parse(time.RFC3339, s.Value); err == nil && t.After(floor) {
					floor = t
				}
			}
		}
	}
	return floor
}
