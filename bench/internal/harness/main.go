package harness

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// Flags registers the flags every harness server shares and returns the
// options they fill, plus the log level.
func Flags(fs *flag.FlagSet, defaultMaxBatch int) (*Options, *string) {
	o := &Options{}
	fs.StringVar(&o.Webhook, "webhook", "127.0.0.1:18081", "webhook listen address (route "+RoutePath+")")
	fs.StringVar(&o.Broker, "broker", "127.0.0.1:11884", "embedded broker listen address")
	fs.StringVar(&o.Admin, "admin", "127.0.0.1:19311", "admin listen address: /readyz /stats /start (and /debug/pprof when enabled)")
	fs.StringVar(&o.QueuePath, "queue", "", "queue file (required)")
	fs.IntVar(&o.MaxBatch, "maxbatch", defaultMaxBatch, "queue writes per commit (1 = one fsync per message; 0 = product default)")
	fs.BoolVar(&o.Values, "values", true, "sink values: topics (product default true)")
	fs.BoolVar(&o.Retain, "retain", true, "sink retain (product default true)")
	level := fs.String("log", "warn", "log level")
	return o, level
}

// WaitSignal blocks until SIGINT or SIGTERM, or max.
func WaitSignal(max time.Duration) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sig)
	select {
	case <-sig:
	case <-time.After(max):
		fmt.Fprintln(os.Stderr, "harness: -max-run elapsed, stopping")
	}
}
