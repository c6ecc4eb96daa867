// Command wittra-gateway receives Wittra webhooks, keeps every accepted
// message in a durable queue and delivers it to MQTT and Cumulocity.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"

	"wittra-gateway/buffer"
)

// Set at build time: -ldflags "-X main.Version=... -X main.Commit=...".
var (
	Version = "dev"
	Commit  = ""
)

// DefaultConfigPath is where a packaged install keeps the config.
const DefaultConfigPath = "/etc/wittra-gateway/config.yaml"

// Exit codes (docs/contract.md#command-line).
const (
	exitOK      = 0
	exitRuntime = 1
	exitUsage   = 2
	// exitQueueDamaged: bbolt panicked on the queue file at run time. The
	// file is marked; the next start quarantines and salvages it.
	exitQueueDamaged = 3
)

// usageError marks bad usage or bad config: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// SIGHUP (systemctl reload) re-reads the config instead of killing.
	reload := make(chan os.Signal, 1)
	signal.Notify(reload, syscall.SIGHUP)
	err := (&Main{Stdout: os.Stdout, Stderr: os.Stderr, Reload: reload}).Run(ctx, os.Args[1:])
	stop()
	os.Exit(exitCode(err))
}

func exitCode(err error) int {
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		return exitUsage
	case errors.Is(err, buffer.ErrDamaged):
		return exitQueueDamaged
	default:
		return exitRuntime
	}
}

// Main picks the subcommand.
type Main struct {
	Stdout, Stderr io.Writer
	Reload         <-chan os.Signal // for run: re-read the config
}

// Run runs the subcommand named by args[0]; no subcommand means run.
func (m *Main) Run(ctx context.Context, args []string) error {
	cmd, rest := "run", args
	if len(args) > 0 && len(args[0]) > 0 {
		switch a := args[0]; {
		case a[0] != '-', a == "-h", a == "-help", a == "--help", a == "-version", a == "--version":
			cmd, rest = a, args[1:]
		}
	}
	var err error
	switch cmd {
	case "run":
		err = (&RunCommand{Stderr: m.Stderr, Reload: m.Reload}).Run(ctx, rest)
	case "check-config":
		err = (&CheckConfigCommand{Stdout: m.Stdout}).Run(ctx, rest)
	case "queue":
		err = (&QueueCommand{Stdout: m.Stdout, Stderr: m.Stderr}).Run(ctx, rest)
	case "devices":
		err = (&DevicesCommand{Stdout: m.Stdout, Stderr: m.Stderr}).Run(ctx, rest) // devices.go
	case "version", "-version", "--version":
		fmt.Fprintln(m.Stdout, versionString())
	case "help", "-h", "-help", "--help":
		fmt.Fprint(m.Stdout, usage)
	default:
		err = usageError{fmt.Errorf("unknown command %q\n%s", cmd, usage)}
	}
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(m.Stderr, "wittra-gateway:", err)
	}
	return err
}

const usage = `usage: wittra-gateway <command> [-config PATH]

commands:
  run            run the gateway (the default)
  check-config   validate the config; print every problem with its line
  queue          inspect the queue offline: stats | peek | export | purge | salvage
  devices        the devices seen: id, Wittra name and type, project, last seen,
                 latest values (-json for JSON)
  version        print version, commit and Go version (also --version)
  help           this text; "<command> -h" lists a command's flags

flags:
  -config PATH   the YAML config (default ` + DefaultConfigPath + `)
`

func versionString() string {
	commit := commitString()
	// git describe already names the commit (v1.2-3-gabc1234, or abc1234).
	if len(commit) >= 7 && strings.Contains(Version, commit[:7]) {
		return fmt.Sprintf("wittra-gateway %s (%s, %s/%s)", Version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	}
	return fmt.Sprintf("wittra-gateway %s (commit %s, %s, %s/%s)", Version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

// commitString is the build's commit: from -ldflags, else from the Go
// build info, else "unknown".
func commitString() string {
	commit := Commit
	if commit == "" {
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" {
					commit = s.Value
				}
			}
		}
	}
	if commit == "" {
		commit = "unknown"
	}
	return commit
}

// newFlagSet makes a subcommand's flag set with the shared -config flag.
func newFlagSet(name string, out io.Writer, configPath *string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: wittra-gateway %s [flags]\n\nflags:\n", name)
		fs.PrintDefaults()
	}
	fs.StringVar(configPath, "config", DefaultConfigPath, "path of the YAML config")
	return fs
}

// parseFlags parses args, mapping flag errors to usage errors.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected arguments: %v", fs.Args())}
	}
	return nil
}

// CheckConfigCommand validates a config file.
type CheckConfigCommand struct{ Stdout io.Writer }

func (c *CheckConfigCommand) Run(_ context.Context, args []string) error {
	var path string
	fs := newFlagSet("check-config", c.Stdout, &path)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if _, err := LoadConfig(path); err != nil {
		return usageError{err}
	}
	fmt.Fprintf(c.Stdout, "%s: ok\n", path)
	return nil
}
