// Package testutil is the gateway's shared test harness: a goroutine-safe log
// buffer, free loopback ports, polling, Debian's mosquitto as a restartable
// external broker, MQTT subscribers, id sets and the gateway binary run as a
// subprocess. Only tests import it.
package testutil

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"wittra-gateway/internal/freeport"

	"github.com/rs/zerolog"
)

// LogBuffer is a goroutine-safe io.Writer that keeps what was written. It
// is the log sink of components whose goroutines may still write after a
// test ends, which a testing.T-backed writer would turn into a panic.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Logger returns a debug-level logger into a LogBuffer whose content the
// test log shows when t fails.
func Logger(t testing.TB) (zerolog.Logger, *LogBuffer) {
	b := new(LogBuffer)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", Tail(b.String(), 64<<10))
		}
	})
	return zerolog.New(b).Level(zerolog.DebugLevel), b
}

// Tail returns the last limit bytes of s.
func Tail(s string, limit int) string {
	if len(s) > limit {
		return "[...]\n" + s[len(s)-limit:]
	}
	return s
}

// FileTail returns the last limit bytes of the file at path (the error
// text when it cannot be read).
func FileTail(path string, limit int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return Tail(string(b), limit)
}

// ReadFile returns the file at the path joined from elem (fixtures,
// config examples); the test fails if it cannot be read.
func ReadFile(t testing.TB, elem ...string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(elem...))
	if err != nil {
		t.Fatalf("read %s: %v", filepath.Join(elem...), err)
	}
	return b
}

// FreePort returns a free loopback TCP port. The listener is closed before
// the caller binds it: another process could take it in between (a tiny
// race, accepted in tests).
func FreePort(t testing.TB) int {
	t.Helper()
	ports, err := freeport.Ports(1)
	if err != nil {
		t.Fatal(err)
	}
	return ports[0]
}

// FreeAddrs returns n distinct free loopback addresses (host:port), with
// FreePort's race.
func FreeAddrs(t testing.TB, n int) []string {
	t.Helper()
	var addrs []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("find a free port: %v", err)
		}
		defer ln.Close() // held until all are picked, so they differ
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs
}

// Dialable reports whether every addr accepts a TCP connection now.
func Dialable(addrs ...string) bool {
	for _, a := range addrs {
		c, err := net.DialTimeout("tcp", a, 200*time.Millisecond)
		if err != nil {
			return false
		}
		c.Close()
	}
	return true
}

// PollEvery is how often Poll and WaitFor check their condition.
const PollEvery = 20 * time.Millisecond

// Poll checks cond until it holds (true) or d has passed (false). Tests
// assert that something happens, not how fast: pick d generously (the
// machine may be loaded). A test that wants its own failure message uses
// it; else WaitFor.
func Poll(d time.Duration, cond func() bool) bool {
	for began := time.Now(); !cond(); time.Sleep(PollEvery) {
		if time.Since(began) > d {
			return cond()
		}
	}
	return true
}

// WaitFor polls cond until it holds and returns how long that took; the
// test fails after d.
func WaitFor(t testing.TB, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	began := time.Now()
	if !Poll(d, cond) {
		t.Fatalf("%s: not within %v", what, d)
	}
	return time.Since(began)
}
