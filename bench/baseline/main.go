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
	"os"

	"wittra-gateway/bench/internal/harness"
)

func main() {
	c := harness.NewCommand("baseline", 1)
	c.Parse(os.Args[1:])
	s, err := harness.Start(c.Options)
	c.Check("", err)
	harness.WaitSignal(c.MaxRun)
	c.Check("close: ", s.Close())
}
