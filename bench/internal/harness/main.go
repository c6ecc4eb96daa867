package harness

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// Command is the command line every harness server shares: the options
// its flags fill and how long to serve at most.
type Command struct {
	Options
	MaxRun time.Duration
	name   string
	fs     *flag.FlagSet
	level  string
}

// NewCommand registers the shared flags of the harness server name; its
// own flags go on Flags() before Parse.
func NewCommand(name string, defaultMaxBatch int) *Command {
	c := &Command{name: name, fs: flag.NewFlagSet(name, flag.ExitOnError)}
	fs, o := c.fs, &c.Options
	fs.StringVar(&o.Webhook, "webhook", "127.0.0.1:18081", "webhook listen address (route "+RoutePath+")")
	fs.StringVar(&o.Broker, "broker", "127.0.0.1:11884", "embedded broker listen address")
	fs.StringVar(&o.Admin, "admin", "127.0.0.1:19311", "admin listen address: /readyz /stats /start (and /debug/pprof when enabled)")
	fs.StringVar(&o.QueuePath, "queue", "", "queue file (required)")
	fs.IntVar(&o.MaxBatch, "maxbatch", defaultMaxBatch, "queue writes per commit (1 = one fsync per message; 0 = product default)")
	fs.BoolVar(&o.Values, "values", true, "sink values: topics (product default true)")
	fs.BoolVar(&o.Retain, "retain", true, "sink retain (product default true)")
	fs.StringVar(&c.level, "log", "warn", "log level")
	fs.DurationVar(&c.MaxRun, "max-run", 30*time.Minute, "stop after this long even without a signal")
	return c
}

// Flags is the command's flag set.
func (c *Command) Flags() *flag.FlagSet { return c.fs }

// Parse reads args, refuses a missing -queue (exit 2) and sets the logger.
func (c *Command) Parse(args []string) {
	c.fs.Parse(args)
	if c.QueuePath == "" {
		fmt.Fprintf(os.Stderr, "%s: -queue is required\n", c.name)
		os.Exit(2)
	}
	c.Log = Logger(c.level)
}

// Check exits 1 with err, after the command's name and what, unless err
// is nil.
func (c *Command) Check(what string, err error) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %s%v\n", c.name, what, err)
		os.Exit(1)
	}
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
