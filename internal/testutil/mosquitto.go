package testutil

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// MosquittoOptions adds to the default configuration of a test mosquitto
// (anonymous access, no persistence, one plain listener on loopback).
type MosquittoOptions struct {
	PasswordFile string // mosquitto_passwd file: anonymous access off
	// Persistence keeps sessions and queued messages across a restart in
	// the broker's temp dir, saved when it stops on SIGTERM.
	Persistence bool
	// TLS adds a listener on TLSPort with these files.
	TLS           bool
	CA, Cert, Key string
	NoDelay       bool // set_tcp_nodelay: mosquitto's default is Nagle on
	// MaxInflight is max_inflight_messages (per client); 0: mosquitto's
	// default (20).
	MaxInflight int
}

// Mosquitto is one Debian mosquitto process under test, restartable on its
// ports; it is killed at cleanup, and its output is logged if the test
// failed.
type Mosquitto struct {
	Port    int
	TLSPort int // 0 without TLS

	t    testing.TB
	bin  string
	conf string
	out  *LogBuffer

	mu   sync.Mutex
	cmd  *exec.Cmd
	exit chan struct{}
}

// MosquittoBinary returns the path of Debian's mosquitto, with Command's
// skip or failure when it is not installed.
func MosquittoBinary(t testing.TB) string {
	t.Helper()
	return Command(t, "mosquitto", "mosquitto", "/usr/sbin/mosquitto")
}

// Command returns the first of names found (in PATH, or as an absolute
// path). Without one the test skips on a developer machine and fails in CI
// (CI set), which must install the Debian package pkg.
func Command(t testing.TB, pkg string, names ...string) string {
	t.Helper()
	for _, name := range names {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is not installed; CI must install it (apt-get install -y %s)", names[0], pkg)
	}
	t.Skipf("%s is not installed (apt-get install %s)", names[0], pkg)
	return ""
}

// NewMosquitto writes the configuration of a mosquitto on a free loopback
// port without starting it.
func NewMosquitto(t testing.TB, o MosquittoOptions) *Mosquitto {
	t.Helper()
	bin := MosquittoBinary(t)
	dir := t.TempDir()
	m := &Mosquitto{t: t, bin: bin, conf: filepath.Join(dir, "mosquitto.conf"), Port: FreePort(t), out: new(LogBuffer)}
	var c strings.Builder
	if os.Getuid() == 0 {
		c.WriteString("user root\n") // else it drops to user mosquitto, which cannot use the temp dir
	}
	c.WriteString("per_listener_settings false\n")
	if o.PasswordFile != "" {
		fmt.Fprintf(&c, "allow_anonymous false\npassword_file %s\n", o.PasswordFile)
	} else {
		c.WriteString("allow_anonymous true\n")
	}
	if o.Persistence {
		fmt.Fprintf(&c, "persistence true\npersistence_location %s/\nautosave_interval 0\n", dir)
	} else {
		c.WriteString("persistence false\n")
	}
	if o.NoDelay {
		c.WriteString("set_tcp_nodelay true\n")
	}
	if o.MaxInflight > 0 {
		fmt.Fprintf(&c, "max_inflight_messages %d\n", o.MaxInflight)
	}
	c.WriteString("max_queued_messages 0\nmax_queued_bytes 0\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n")
	fmt.Fprintf(&c, "listener %d 127.0.0.1\n", m.Port)
	if o.TLS {
		m.TLSPort = FreePort(t)
		fmt.Fprintf(&c, "listener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\n", m.TLSPort, o.CA, o.Cert, o.Key)
	}
	if err := os.WriteFile(m.conf, []byte(c.String()), 0o600); err != nil {
		t.Fatalf("write mosquitto config: %v", err)
	}
	t.Cleanup(func() {
		m.Stop(syscall.SIGKILL)
		if t.Failed() {
			t.Logf("mosquitto output:\n%s", Tail(m.out.String(), 16<<10))
		}
	})
	return m
}

// StartMosquitto starts a mosquitto on a free loopback port.
func StartMosquitto(t testing.TB, o MosquittoOptions) *Mosquitto {
	t.Helper()
	m := NewMosquitto(t, o)
	m.Start()
	return m
}

// URL is the plain listener's tcp:// URL.
func (m *Mosquitto) URL() string { return fmt.Sprintf("tcp://127.0.0.1:%d", m.Port) }

// Output is what mosquitto logged so far.
func (m *Mosquitto) Output() string { return m.out.String() }

// Start runs mosquitto and waits until its ports accept connections.
func (m *Mosquitto) Start() {
	m.t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd != nil {
		m.t.Fatal("mosquitto already running")
	}
	cmd := exec.Command(m.bin, "-c", m.conf)
	cmd.Stdout, cmd.Stderr = m.out, m.out
	if err := cmd.Start(); err != nil {
		m.t.Fatalf("start mosquitto: %v", err)
	}
	exit := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exit)
	}()
	m.cmd, m.exit = cmd, exit
	deadline := time.Now().Add(10 * time.Second)
	for _, port := range []int{m.Port, m.TLSPort} {
		if port == 0 {
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		for {
			conn, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				conn.Close()
				break
			}
			select {
			case <-exit:
				m.cmd = nil
				m.t.Fatalf("mosquitto exited at start:\n%s", m.out.String())
			default:
			}
			if time.Now().After(deadline) {
				m.t.Fatalf("mosquitto not listening on %s: %v\n%s", addr, err, m.out.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// Stop ends mosquitto with sig (SIGTERM makes it save its persistence) and
// waits for it; SIGKILL follows after 5 s. It reports whether sig alone
// ended it.
func (m *Mosquitto) Stop(sig syscall.Signal) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return true
	}
	_ = m.cmd.Process.Signal(sig)
	clean := true
	select {
	case <-m.exit:
	case <-time.After(5 * time.Second):
		clean = false
		_ = m.cmd.Process.Kill()
		<-m.exit
	}
	m.cmd = nil
	return clean
}

// Signal sends sig to the running mosquitto (SIGSTOP, SIGCONT).
func (m *Mosquitto) Signal(sig syscall.Signal) {
	m.t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		m.t.Fatal("signal mosquitto: not running")
	}
	if err := m.cmd.Process.Signal(sig); err != nil {
		m.t.Fatalf("signal mosquitto: %v", err)
	}
}
