package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"
)

// Helpers shared by the test files that run the gateway as a subprocess
// (crash_test.go, outage_test.go) or read its metrics.

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  string
	buildDir  string
)

// buildGateway builds the gateway binary once per test run and returns its
// path. It lives in a directory removed by TestMain.
func buildGateway(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		// `go test` puts its own GOROOT/bin first in PATH, so this is the
		// toolchain running the test.
		goBin, err := exec.LookPath("go")
		if err != nil {
			buildErr = "no go command in PATH to build the gateway: " + err.Error()
			return
		}
		dir, err := os.MkdirTemp("", "wittra-gateway-test-bin-")
		if err != nil {
			buildErr = err.Error()
			return
		}
		buildDir = dir
		out := filepath.Join(dir, "wittra-gateway")
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if b, err := exec.CommandContext(ctx, goBin, "build", "-o", out, "wittra-gateway/cmd/gateway").CombinedOutput(); err != nil {
			buildErr = "go build: " + err.Error() + "\n" + string(b)
			return
		}
		builtBin = out
	})
	if builtBin == "" {
		t.Fatal(buildErr)
	}
	return builtBin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// freeAddrs returns n distinct free loopback addresses. The listeners are
// closed before the caller binds them: another process could take one in
// between (a tiny race, accepted in tests).
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	var addrs []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close() // held until all are picked, so they differ
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs
}

// yamlString quotes s as a YAML double-quoted scalar.
func yamlString(s string) string {
	b, _ := json.Marshal(s) // JSON strings are valid YAML double-quoted scalars
	return string(b)
}

// metricValue reads one sample (name with its labels, as exposed) from
// Prometheus text; -1 when absent.
func metricValue(text, name string) float64 {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`)
	m := re.FindStringSubmatch(text)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return -1
	}
	return v
}

// gatewayProc is one run of the gateway binary.
type gatewayProc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // cmd.Wait's result; set before done closes
}

func (p *gatewayProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// waitExit waits up to d for the process to exit.
func (p *gatewayProc) waitExit(d time.Duration) bool {
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		return false
	}
}

// kill kills the process if it runs and waits for it.
func (p *gatewayProc) kill() {
	if !p.exited() {
		p.cmd.Process.Kill()
	}
	p.waitExit(10 * time.Second)
}

// startGatewayProc starts the binary on cfgPath, appending its output to
// logPath, and waits until every addr accepts connections. It is killed at
// cleanup.
func startGatewayProc(t *testing.T, bin, cfgPath, logPath string, addrs ...string) *gatewayProc {
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
	p := &gatewayProc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	t.Cleanup(p.kill)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if p.exited() {
			t.Fatalf("gateway exited during start: %v\n%s", p.err, fileTail(logPath, 24<<10))
		}
		if allDialable(addrs) {
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway not listening on %v after 10 s\n%s", addrs, fileTail(logPath, 24<<10))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func allDialable(addrs []string) bool {
	for _, a := range addrs {
		c, err := net.DialTimeout("tcp", a, 200*time.Millisecond)
		if err != nil {
			return false
		}
		c.Close()
	}
	return true
}

// fileTail returns the last limit bytes of the file at path.
func fileTail(path string, limit int64) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if int64(len(b)) > limit {
		return "[...]\n" + string(b[int64(len(b))-limit:])
	}
	return string(b)
}
