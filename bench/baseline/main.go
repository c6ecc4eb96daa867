// Command baseline is the benchmark's per-message-fsync reference: the
// gateway's own packages (bridge.Receiver → buffer.Queue → bridge.Forwarder
// → embedded broker sink) wired as cmd/gateway wires them, with one
// difference: buffer.Config.MaxBatch = 1, so every message is its own
// commit (fsync) instead of sharing one with concurrent requests.
//
//	baseline -queue /tmp/b/queue.db -webhook 127.0.0.1:18081 -broker 127.0.0.1:11884 -admin 127.0.0.1:19311
//
// It serves until SIGINT/SIGTERM (or -max-run).
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"wittra-gateway/bench/internal/harness"
)

func main() {
	fs := flag.NewFlagSet("baseline", flag.ExitOnError)
	o, level := harness.Flags(fs, 1)
	maxRun := fs.Duration("max-run", 30*time.Minute, "stop after this long even without a signal")
	fs.Parse(os.Args[1:])
	if o.QueuePath == "" {
		fmt.Fprintln(os.Stderr, "baseline: -queue is required")
		os.Exit(2)
	}
	o.Log = harness.Logger(*level)
	s, err := harness.Start(*o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "baseline:", err)
		os.Exit(1)
	}
	harness.WaitSignal(*maxRun)
	if err := s.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "baseline: close:", err)
		os.Exit(1)
	}
}
