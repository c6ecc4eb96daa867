package testutil

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

var build struct {
	once sync.Once
	bin  string
	err  string
	dir  string
}

// BuildGateway builds the gateway binary once per test binary and returns
// its path. Its directory goes away in RemoveBuilds (call it from
// TestMain).
func BuildGateway(t testing.TB) string {
	t.Helper()
	build.once.Do(func() {
		// `go test` puts its own GOROOT/bin first in PATH, so this is the
		// toolchain running the test.
		goBin, err := exec.LookPath("go")
		if err != nil {
			build.err = "no go command in PATH to build the gateway: " + err.Error()
			return
		}
		dir, err := os.MkdirTemp("", "wittra-gateway-test-bin-")
		if err != nil {
			build.err = err.Error()
			return
		}
		build.dir = dir
		out := filepath.Join(dir, "wittra-gateway")
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if b, err := exec.CommandContext(ctx, goBin, "build", "-o", out, "wittra-gateway/cmd/gateway").CombinedOutput(); err != nil {
			build.err = "go build: " + err.Error() + "\n" + string(b)
			return
		}
		build.bin = out
	})
	if build.bin == "" {
		t.Fatal(build.err)
	}
	return build.bin
}

// RemoveBuilds removes what BuildGateway built.
func RemoveBuilds() {
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
}

// CheckConfig runs the binary's check-config on the file at path and fails
// the test if it refuses it.
func CheckConfig(t testing.TB, bin, path string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, bin, "check-config", "-config", path).CombinedOutput(); err != nil {
		cfg, _ := os.ReadFile(path)
		t.Fatalf("check-config: %v\n%s\nconfig:\n%s", err, out, cfg)
	}
}

// Process is one run of the gateway binary.
type Process struct {
	Cmd    *exec.Cmd
	Err    error // cmd.Wait's result; set before Done closes
	done   chan struct{}
	exited atomic.Bool // set with done
	log    string
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Exited reports whether the process has exited.
func (p *Process) Exited() bool { return p.exited.Load() }

// WaitExit waits up to d for the process to exit.
func (p *Process) WaitExit(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// Kill kills the process if it runs and waits for it (at most 10 s).
func (p *Process) Kill() {
	if !p.Exited() {
		p.Cmd.Process.Kill()
	}
	p.WaitExit(10 * time.Second)
}

// Kill9 sends SIGKILL; WaitKilled checks that it took.
func (p *Process) Kill9(t testing.TB) {
	t.Helper()
	if err := p.Cmd.Process.Kill(); err != nil {
		t.Fatalf("kill -9: %v", err)
	}
}

// WaitKilled waits up to d for the process to end and fails the test
// unless SIGKILL ended it.
func (p *Process) WaitKilled(t testing.TB, d time.Duration) {
	t.Helper()
	if !p.WaitExit(d) {
		t.Fatalf("gateway still running %v after SIGKILL", d)
	}
	if ws, ok := p.Cmd.ProcessState.Sys().(syscall.WaitStatus); ok && !(ws.Signaled() && ws.Signal() == syscall.SIGKILL) {
		t.Fatalf("gateway ended by itself (%v), not by the SIGKILL", p.Cmd.ProcessState)
	}
}

// StopClean sends SIGTERM and wants exit code 0 within d; it returns how
// long the exit took.
func (p *Process) StopClean(t testing.TB, d time.Duration) time.Duration {
	t.Helper()
	sent := time.Now()
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("send SIGTERM: %v", err)
	}
	if !p.WaitExit(d) {
		t.Fatalf("gateway did not exit within %v of SIGTERM", d)
	}
	if code := p.Cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d (%v), want 0\n%s", code, p.Err, FileTail(p.log, 24<<10))
	}
	return time.Since(sent)
}

// StartGateway starts the binary bin on cfgPath (in cfgPath's directory),
// appending its output to logPath, and waits until every addr accepts
// connections. It is killed at cleanup.
func StartGateway(t testing.TB, bin, cfgPath, logPath string, addrs ...string) *Process {
	t.Helper()
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(logf, "=== test: start at %s ===\n", time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(bin, "run", "-config", cfgPath)
	cmd.Dir = filepath.Dir(cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start gateway: %v", err)
	}
	p := &Process{Cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() {
		p.Err = cmd.Wait()
		logf.Close()
		p.exited.Store(true)
		close(p.done)
	}()
	t.Cleanup(p.Kill)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if p.Exited() {
			t.Fatalf("gateway exited during start: %v\n%s", p.Err, FileTail(logPath, 24<<10))
		}
		if Dialable(addrs...) {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway not listening on %v after 10 s\n%s", addrs, FileTail(logPath, 24<<10))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
