package broker

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/zerolog"

	"wittra-gateway/internal/testutil"
	"wittra-gateway/sinks"
)

// fixture returns a webhook body from the wittra package's test fixtures
// (copies of the shared example bodies).
func fixture(t *testing.T, name string) string {
	return string(testutil.ReadFile(t, "..", "..", "wittra", "testdata", name))
}

const (
	testProject = "P4nB8vQ2wE6rT1yU3iOa"
	testGateway = "gw1"
	waitLong    = 5 * time.Second
)

var seq atomic.Uint64

func msg(project, device string, kind sinks.Kind, body string) sinks.Message {
	return sinks.Message{
		Seq:      seq.Add(1),
		Received: time.Now(),
		Project:  project,
		Device:   device,
		Kind:     kind,
		Body:     []byte(body),
	}
}

// testLogger logs into a buffer that is safe for goroutines which outlive
// the test (mochi may log after it ends).
func testLogger() (zerolog.Logger, *testutil.LogBuffer) {
	b := new(testutil.LogBuffer)
	return zerolog.New(b).Level(zerolog.DebugLevel), b
}

// startServer starts a broker on a loopback port chosen by the system,
// unless cfg names listeners, and closes it at cleanup.
func startServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	if len(cfg.Listeners) == 0 {
		cfg.Listeners = []Listener{{Type: TypeTCP, Address: "127.0.0.1:0"}}
	}
	log, _ := testLogger()
	srv, err := New(cfg, log)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	if err := srv.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return srv
}

func newSink(t *testing.T, srv *Server, cfg SinkConfig) (*Sink, *testutil.LogBuffer) {
	t.Helper()
	if cfg.GatewayID == "" {
		cfg.GatewayID = testGateway
	}
	return build(t, "NewSink", srv, cfg, NewSink)
}

// build makes a sink of srv with newS (NewSink, NewSubscriber) and a debug
// log, closed when the test ends.
func build[S interface{ Close(context.Context) error }, C any](t *testing.T, what string, srv *Server, cfg C,
	newS func(*Server, C, zerolog.Logger) (S, error)) (S, *testutil.LogBuffer) {
	t.Helper()
	log, buf := testLogger()
	s, err := newS(srv, cfg, log)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s, buf
}

func publish(t *testing.T, s *Sink, msgs ...sinks.Message) {
	t.Helper()
	n, err := s.Publish(context.Background(), msgs)
	if err != nil || n != len(msgs) {
		t.Fatalf("Publish = %d, %v; want %d, nil", n, err, len(msgs))
	}
}

var clientSeq atomic.Int64

type clientOpts struct {
	url, user, pass string
	configure       func(*paho.ClientOptions)
}

// dial connects a paho client; the caller checks the error.
func dial(t *testing.T, o clientOpts) (paho.Client, error) {
	t.Helper()
	opts := paho.NewClientOptions().
		AddBroker(o.url).
		SetClientID(fmt.Sprintf("test-%d", clientSeq.Add(1))).
		SetUsername(o.user).
		SetPassword(o.pass).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(waitLong).
		SetWriteTimeout(waitLong).
		SetCleanSession(true)
	if o.configure != nil {
		o.configure(opts)
	}
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(waitLong) {
		c.Disconnect(0)
		return nil, fmt.Errorf("connect timed out")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c, nil
}

func mustDial(t *testing.T, o clientOpts) paho.Client {
	t.Helper()
	c, err := dial(t, o)
	if err != nil {
		t.Fatalf("connect %s as %q: %v", o.url, o.user, err)
	}
	return c
}

func tcpURL(srv *Server) string { return "tcp://" + srv.Addrs()[0] }

// subscriber records what one subscription receives.
type subscriber struct{ *testutil.Subscriber }

// subscribe subscribes c to filter at qos.
func subscribe(t *testing.T, c paho.Client, filter string, qos byte) *subscriber {
	t.Helper()
	return &subscriber{testutil.SubscribeClient(t, c, filter, qos)}
}

// roundTrip returns once the broker has processed every packet c sent
// before it (mochi handles one client's packets in order and answers the
// SUBSCRIBE only after them). It returns false if c is not connected.
func roundTrip(t *testing.T, c paho.Client) bool {
	t.Helper()
	if !c.IsConnectionOpen() {
		return false
	}
	tok := c.Subscribe("sync/"+fmt.Sprint(clientSeq.Add(1)), 0, nil)
	return tok.WaitTimeout(waitLong) && tok.Error() == nil
}
