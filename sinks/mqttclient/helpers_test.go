//go:build unix

package mqttclient

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/zerolog"

	"wittra-gateway/sinks"
)

const (
	testProject = "P1"
	testGateway = "gw1"
	waitLong    = 15 * time.Second
)

// syncBuf is a goroutine-safe log sink: paho handlers may log after a test
// ends, which a testing.T-backed writer would turn into a panic.
type syncBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testLogger returns a logger whose output the test log shows on failure.
func testLogger(t testing.TB) (zerolog.Logger, *syncBuf) {
	b := new(syncBuf)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sink log:\n%s", b.String())
		}
	})
	return zerolog.New(b).Level(zerolog.DebugLevel), b
}

// ---------------------------------------------------------------------------
// mosquitto

// mosqOpts adds to the default configuration of a test mosquitto.
type mosqOpts struct {
	passwordFile string
	persistence  bool   // persist sessions across a restart (stop with SIGTERM)
	tls          bool   // also listen with TLS on tlsPort
	ca, cert     string // TLS files
	key          string
	nodelay      bool // set_tcp_nodelay: mosquitto's default is Nagle on
}

// mosquitto is one mosquitto process under test, restartable on its ports.
type mosquitto struct {
	t       testing.TB
	bin     string
	conf    string
	port    int
	tlsPort int
	out     *syncBuf

	mu   sync.Mutex
	cmd  *exec.Cmd
	exit chan struct{}
}

func mosquittoBinary(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/mosquitto"); err == nil {
		return "/usr/sbin/mosquitto"
	}
	if os.Getenv("CI") != "" {
		t.Fatal("mosquitto is not installed; CI must install it")
	}
	t.Skip("mosquitto is not installed")
	return ""
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// newMosquitto writes the configuration of a mosquitto on port (0: a free
// one) without starting it.
func newMosquitto(t testing.TB, port int, o mosqOpts) *mosquitto {
	t.Helper()
	bin := mosquittoBinary(t)
	if port == 0 {
		port = freePort(t)
	}
	dir := t.TempDir()
	m := &mosquitto{t: t, bin: bin, conf: filepath.Join(dir, "m.conf"), port: port, out: new(syncBuf)}
	var c strings.Builder
	if os.Getuid() == 0 {
		c.WriteString("user root\n") // else it drops to user mosquitto, which cannot read the temp dir
	}
	fmt.Fprintf(&c, "per_listener_settings false\n")
	if o.passwordFile != "" {
		fmt.Fprintf(&c, "allow_anonymous false\npassword_file %s\n", o.passwordFile)
	} else {
		c.WriteString("allow_anonymous true\n")
	}
	if o.persistence {
		fmt.Fprintf(&c, "persistence true\npersistence_location %s/\nautosave_interval 0\n", dir)
	} else {
		c.WriteString("persistence false\n")
	}
	if o.nodelay {
		c.WriteString("set_tcp_nodelay true\n")
	}
	c.WriteString("max_queued_messages 0\nlog_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n")
	fmt.Fprintf(&c, "listener %d 127.0.0.1\n", port)
	if o.tls {
		m.tlsPort = freePort(t)
		fmt.Fprintf(&c, "listener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\n", m.tlsPort, o.ca, o.cert, o.key)
	}
	if err := os.WriteFile(m.conf, []byte(c.String()), 0o600); err != nil {
		t.Fatalf("write mosquitto config: %v", err)
	}
	t.Cleanup(func() {
		m.stop(syscall.SIGKILL)
		if t.Failed() {
			t.Logf("mosquitto output:\n%s", m.out.String())
		}
	})
	return m
}

// startMosquitto starts a mosquitto on a free loopback port.
func startMosquitto(t testing.TB, o mosqOpts) *mosquitto {
	t.Helper()
	m := newMosquitto(t, 0, o)
	m.start()
	return m
}

func (m *mosquitto) url() string { return fmt.Sprintf("tcp://127.0.0.1:%d", m.port) }

// start runs mosquitto and waits until its ports accept connections.
func (m *mosquitto) start() {
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
	for _, port := range []int{m.port, m.tlsPort} {
		if port == 0 {
			continue
		}
		for {
			conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
			if err == nil {
				conn.Close()
				break
			}
			select {
			case <-exit:
				m.t.Fatalf("mosquitto exited at start:\n%s", m.out.String())
			default:
			}
			if time.Now().After(deadline) {
				m.t.Fatalf("mosquitto not listening on %d: %v\n%s", port, err, m.out.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// stop ends mosquitto with sig (SIGTERM lets it save its persistence) and
// waits for it; SIGKILL follows if it takes longer than 5 s.
func (m *mosquitto) stop(sig syscall.Signal) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Signal(sig)
	select {
	case <-m.exit:
	case <-time.After(5 * time.Second):
		_ = m.cmd.Process.Kill()
		<-m.exit
	}
	m.cmd = nil
}

// signal sends sig to the running mosquitto (SIGSTOP, SIGCONT).
func (m *mosquitto) signal(sig syscall.Signal) {
	m.t.Helper()
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.cmd.Process.Signal(sig); err != nil {
		m.t.Fatalf("signal mosquitto: %v", err)
	}
}

// ---------------------------------------------------------------------------
// sink and messages

// newSink creates a sink with test defaults and closes it at cleanup.
func newSink(t testing.TB, cfg Config) (*Sink, *syncBuf) {
	t.Helper()
	if cfg.GatewayID == "" {
		cfg.GatewayID = testGateway
	}
	if cfg.MaxReconnectInterval == 0 {
		cfg.MaxReconnectInterval = time.Second
	}
	log, buf := testLogger(t)
	s, err := New(cfg, log)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Close(ctx)
	})
	return s, buf
}

func waitConnected(t testing.TB, s *Sink) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for !s.Connected() {
		if time.Now().After(deadline) {
			t.Fatal("sink did not connect")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var seq atomic.Uint64

// message returns a data message of device whose body names its sequence
// number, padded with spaces to at least size bytes.
func message(device string, size int) sinks.Message {
	n := seq.Add(1)
	body := fmt.Sprintf(`{"deviceId":%q,"payloadId":"p%08d","payloadType":"DATA","timestamp":"2024-03-12T08:15:42.517Z","payload":{"temperature":21.75,"counter":%d}}`, device, n, n)
	if len(body) < size {
		body = body[:len(body)-1] + strings.Repeat(" ", size-len(body)) + "}"
	}
	return sinks.Message{Seq: n, Received: time.Now(), Project: testProject, Device: device, Kind: sinks.KindData, Body: []byte(body)}
}

// messages returns n messages alternating over devices.
func messages(n int, devices ...string) []sinks.Message {
	msgs := make([]sinks.Message, n)
	for i := range msgs {
		msgs[i] = message(devices[i%len(devices)], 0)
	}
	return msgs
}

func publishAll(t testing.TB, s *Sink, msgs []sinks.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	n, err := s.Publish(ctx, msgs)
	if err != nil || n != len(msgs) {
		t.Fatalf("Publish = %d, %v; want %d, nil", n, err, len(msgs))
	}
}

// ---------------------------------------------------------------------------
// subscriber

type received struct {
	topic   string
	payload string
	retain  bool
}

// collector gathers what a subscription receives, in arrival order.
type collector struct {
	mu   sync.Mutex
	msgs []received
}

func (c *collector) handle(_ paho.Client, m paho.Message) {
	c.mu.Lock()
	c.msgs = append(c.msgs, received{topic: m.Topic(), payload: string(m.Payload()), retain: m.Retained()})
	c.mu.Unlock()
}

func (c *collector) snapshot() []received {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]received(nil), c.msgs...)
}

// waitFor polls until ok holds for what arrived, failing after d.
func (c *collector) waitFor(t testing.TB, d time.Duration, what string, ok func([]received) bool) []received {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		got := c.snapshot()
		if ok(got) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v (%d messages arrived)", what, d, len(got))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type subOpts struct {
	user, pass string
	clientID   string // with persistent: a stable id
	persistent bool   // clean session false, auto reconnect: survives a broker restart
}

var subSeq atomic.Int64

// subscribe connects a paho client to url and subscribes it to filter.
// OrderMatters is true so that the collector sees arrival order.
func subscribe(t testing.TB, url, filter string, qos byte, o subOpts) *collector {
	t.Helper()
	if o.clientID == "" {
		o.clientID = fmt.Sprintf("test-sub-%d", subSeq.Add(1))
	}
	col := new(collector)
	opts := paho.NewClientOptions().
		AddBroker(url).
		SetClientID(o.clientID).
		SetUsername(o.user).
		SetPassword(o.pass).
		SetOrderMatters(true).
		SetCleanSession(!o.persistent).
		SetAutoReconnect(o.persistent).
		SetConnectRetry(false).
		SetMaxReconnectInterval(500 * time.Millisecond).
		SetConnectTimeout(5 * time.Second).
		SetWriteTimeout(5 * time.Second).
		SetDefaultPublishHandler(col.handle) // messages resent by a persistent session
	c := paho.NewClient(opts)
	if tok := c.Connect(); !tok.WaitTimeout(waitLong) || tok.Error() != nil {
		t.Fatalf("subscriber connect %s: %v", url, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(50) })
	tok := c.Subscribe(filter, qos, col.handle)
	if !tok.WaitTimeout(waitLong) || tok.Error() != nil {
		t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
	if code := tok.(*paho.SubscribeToken).Result()[filter]; code > 2 {
		t.Fatalf("subscribe %s: refused, code %#x", filter, code)
	}
	return col
}

func dataTopic(device string) string {
	return DefaultTopicPrefix + "/" + testProject + "/" + device + "/data"
}

// ---------------------------------------------------------------------------
// proxy

// proxy forwards loopback TCP connections to a backend and can cut them
// abruptly, which the broker sees as an unclean disconnect.
type proxy struct {
	l       net.Listener
	backend string
	mu      sync.Mutex
	conns   []net.Conn
	wg      sync.WaitGroup
}

func startProxy(t testing.TB, backend string) *proxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &proxy{l: l, backend: backend}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		l.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *proxy) url() string { return "tcp://" + p.l.Addr().String() }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.l.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.backend)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, in, out)
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(in, out)
		go p.pipe(out, in)
	}
}

func (p *proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	_, _ = io.Copy(dst, src)
	dst.Close()
	src.Close()
}

// cut closes every forwarded connection (both sides) without a word.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // RST, not FIN
		}
		c.Close()
	}
	p.conns = nil
}
