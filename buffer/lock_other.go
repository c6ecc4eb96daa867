//go:build !(linux || darwin || freebsd || netbsd || openbsd)

package buffer

import "time"

// lockFile: no flock here; bbolt's own lock still guards the open.
func lockFile(string, time.Duration) (func(), error) { return func() {}, nil }
