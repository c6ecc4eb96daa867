package broker

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/rs/zerolog"

	"wittra-gateway/internal/testpki"
	"wittra-gateway/internal/testutil"
	"wittra-gateway/sinks"
)

func TestCapabilities(t *testing.T) {
	srv := startServer(t, Config{})
	caps := srv.mochi.Options.Capabilities
	if caps.MaximumMessageExpiryInterval != 0 {
		t.Errorf("MaximumMessageExpiryInterval = %d, want 0 (no expiry)", caps.MaximumMessageExpiryInterval)
	}
	if caps.MaximumSessionExpiryInterval != DefaultSessionExpiry {
		t.Errorf("MaximumSessionExpiryInterval = %d, want %d", caps.MaximumSessionExpiryInterval, DefaultSessionExpiry)
	}
	if caps.MaximumClientWritesPending != 8192 || caps.MaximumQos != 2 || caps.MaximumInflight != 8192 {
		t.Errorf("defaults changed: writes pending %d, max qos %d, inflight %d",
			caps.MaximumClientWritesPending, caps.MaximumQos, caps.MaximumInflight)
	}
	if !srv.mochi.Options.InlineClient {
		t.Error("InlineClient off")
	}
	// Only the configured listeners: no $SYS HTTP stats or health check.
	if n := srv.mochi.Listeners.Len(); n != 1 {
		t.Errorf("mochi has %d listeners, want the 1 configured", n)
	}
}

func TestConnectAuth(t *testing.T) {
	users := []User{{Username: "reader", Password: "r-secret"}, {Username: "writer", Password: "w-secret", Publish: true}}
	tests := []struct {
		name       string
		anonymous  bool
		user, pass string
		will       string // will topic, if any
		ok         bool
	}{
		{name: "AnonymousAllowed", anonymous: true, ok: true},
		{name: "AnonymousRefused", anonymous: false},
		{name: "User", user: "reader", pass: "r-secret", ok: true},
		{name: "UserWhenAnonymousAllowed", anonymous: true, user: "writer", pass: "w-secret", ok: true},
		{name: "WrongPassword", anonymous: true, user: "reader", pass: "w-secret"},
		{name: "EmptyPassword", anonymous: true, user: "reader"},
		{name: "PasswordPrefix", user: "reader", pass: "r-secre"},
		{name: "UnknownUser", anonymous: true, user: "nobody", pass: "r-secret"},
		// Wills bypass mochi's ACL, so a will the client could not publish
		// itself refuses the connection.
		{name: "AnonymousWill", anonymous: true, will: "other/topic"},
		{name: "ReaderWill", user: "reader", pass: "r-secret", will: "site/will"},
		{name: "WriterWill", user: "writer", pass: "w-secret", will: "site/will", ok: true},
		{name: "WriterWillOnStatus", user: "writer", pass: "w-secret", will: statusTopic},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startServer(t, Config{AllowAnonymous: tt.anonymous, Users: users})
			newSink(t, srv, SinkConfig{})
			o := clientOpts{url: tcpURL(srv), user: tt.user, pass: tt.pass}
			if tt.will != "" {
				o.configure = func(po *paho.ClientOptions) { po.SetWill(tt.will, "gone", 1, true) }
			}
			_, err := dial(t, o)
			if ok := err == nil; ok != tt.ok {
				t.Fatalf("connect error = %v, want ok %v", err, tt.ok)
			}
		})
	}
}

func TestPublishACL(t *testing.T) {
	users := []User{{Username: "reader", Password: "r-secret"}, {Username: "writer", Password: "w-secret", Publish: true}}
	tests := []struct {
		name       string
		user, pass string
		topic      string
		qos        byte
		delivered  bool
	}{
		{name: "AnonymousGatewayTopic", topic: "wittra/x/y/data"},
		{name: "AnonymousOther", topic: "other/topic"},
		{name: "AnonymousQoS1", topic: "other/topic", qos: 1},
		{name: "ReaderOther", user: "reader", pass: "r-secret", topic: "site/foo"},
		{name: "ReaderQoS2", user: "reader", pass: "r-secret", topic: "site/foo", qos: 2},
		{name: "Writer", user: "writer", pass: "w-secret", topic: "site/foo", delivered: true},
		{name: "WriterQoS1", user: "writer", pass: "w-secret", topic: "site/foo", qos: 1, delivered: true},
		{name: "WriterPrefixLookalike", user: "writer", pass: "w-secret", topic: "wittra2/x", delivered: true},
		{name: "WriterGatewayData", user: "writer", pass: "w-secret", topic: "wittra/x/y/data"},
		{name: "WriterGatewayDataQoS1", user: "writer", pass: "w-secret", topic: "wittra/x/y/data", qos: 1},
		{name: "WriterPrefixItself", user: "writer", pass: "w-secret", topic: "wittra"},
		{name: "WriterStatus", user: "writer", pass: "w-secret", topic: statusTopic},
		{name: "WriterOtherSinkPrefix", user: "writer", pass: "w-secret", topic: "site/b/x/y/data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startServer(t, Config{AllowAnonymous: true, Users: users})
			s, _ := newSink(t, srv, SinkConfig{})
			newSink(t, srv, SinkConfig{Name: "b", TopicPrefix: "site/b"})
			sub := subscribe(t, mustDial(t, clientOpts{url: tcpURL(srv)}), "#", 2)
			sub.Until(t, "site/b/gateway/"+testGateway+"/status", waitLong)

			pub := mustDial(t, clientOpts{url: tcpURL(srv), user: tt.user, pass: tt.pass})
			tok := pub.Publish(tt.topic, tt.qos, true, "intruder")
			tok.WaitTimeout(waitLong) // a refused QoS>0 publish ends in a disconnect
			roundTrip(t, pub)         // the broker has handled the publish

			// The gateway still publishes, and a routed intruder message
			// would be queued to the subscriber before it.
			publish(t, s, msg("p", "marker", sinks.KindData, `{"m":1}`))
			got := sub.Until(t, "wittra/p/marker/data", waitLong)
			var intruder bool
			for _, r := range got {
				if r.Payload == "intruder" {
					intruder = true
				}
			}
			if intruder != tt.delivered {
				t.Fatalf("intruder delivered = %v, want %v (got %v)", intruder, tt.delivered, got)
			}

			// Nothing retained from a refused publish, and the status stands.
			late := subscribe(t, mustDial(t, clientOpts{url: tcpURL(srv)}), tt.topic, 0)
			if tt.topic == statusTopic {
				if r := late.Next(t, waitLong); r.Payload != "online" {
					t.Fatalf("status = %q, want online", r.Payload)
				}
			} else if !tt.delivered {
				late.Quiet(t, 100*time.Millisecond)
			}
		})
	}
}

func TestBindError(t *testing.T) {
	first := startServer(t, Config{Listeners: []Listener{
		{Type: TypeTCP, Address: "127.0.0.1:0"},
		{Type: TypeWebsocket, Address: "127.0.0.1:0"},
	}})
	for i, typ := range []string{TypeTCP, TypeWebsocket} {
		addr := first.Addrs()[i]
		t.Run(typ, func(t *testing.T) {
			log, _ := testLogger()
			srv, err := New(Config{Listeners: []Listener{
				{Type: TypeTCP, Address: "127.0.0.1:0"}, // bound, then released on the error
				{Type: typ, Address: addr},
			}}, log)
			if err == nil {
				_ = srv.Close()
				t.Fatalf("second New on %s succeeded", addr)
			}
			if !strings.Contains(err.Error(), addr) {
				t.Fatalf("error %q does not name %s", err, addr)
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, _ := selfSigned(t)
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"UnknownType", Config{Listeners: []Listener{{Type: "quic", Address: "127.0.0.1:0"}}}, "listeners[0].type: must be tcp, tls or websocket"},
		{"TLSWithoutCert", Config{Listeners: []Listener{{Type: TypeTLS, Address: "127.0.0.1:0"}}}, "cert_file"},
		{"TLSMissingFiles", Config{Listeners: []Listener{{Type: TypeTLS, Address: "127.0.0.1:0",
			CertFile: filepath.Join(dir, "none.pem"), KeyFile: filepath.Join(dir, "none.key")}}}, "load certificate"},
		{"CertOnTCP", Config{Listeners: []Listener{{Type: TypeTCP, Address: "127.0.0.1:0", CertFile: "c", KeyFile: "k"}}}, "type tls"},
		{"EmptyUsername", Config{Users: []User{{Password: "x"}}}, "users[0].username: required"},
		{"DuplicateUser", Config{Users: []User{{Username: "a", Password: "x"}, {Username: "a", Password: "y"}}}, "duplicate"},
		{"EmptyPassword", Config{Users: []User{{Username: "a"}}}, "users[0].password: required"},
		{"BadBcrypt", Config{Users: []User{{Username: "a", Password: "$2y$10$short"}}}, "bcrypt"},
		{"BadSubscribeFilter", Config{Users: []User{{Username: "a", Password: "x", Subscribe: []string{"a/#/b"}}}}, "subscribe"},
		{"BadPublishFilter", Config{Users: []User{{Username: "a", Password: "x", Publish: true, PublishTopics: []string{"a+"}}}}, "publish_topics"},
		{"PublishTopicsWithoutPublish", Config{Users: []User{{Username: "a", Password: "x", PublishTopics: []string{"a"}}}}, "publish_topics: needs publish: true"},
		{"ClientCAOnTCP", Config{Listeners: []Listener{{Type: TypeTCP, Address: "127.0.0.1:0", ClientCAFile: "ca.pem"}}}, "client_ca_file"},
		{"ClientCAOnPlainWebsocket", Config{Listeners: []Listener{{Type: TypeWebsocket, Address: "127.0.0.1:0", ClientCAFile: "ca.pem"}}}, "client_ca_file"},
		{"OriginsOnTCP", Config{Listeners: []Listener{{Type: TypeTCP, Address: "127.0.0.1:0", AllowedOrigins: []string{"https://a"}}}}, "allowed_origins"},
		{"ClientCAMissing", Config{Listeners: []Listener{{Type: TypeTLS, Address: "127.0.0.1:0", CertFile: certFile, KeyFile: keyFile,
			ClientCAFile: filepath.Join(dir, "none.pem")}}}, "client_ca_file"},
		{"ClientCANotPEM", Config{Listeners: []Listener{{Type: TypeTLS, Address: "127.0.0.1:0", CertFile: certFile, KeyFile: keyFile,
			ClientCAFile: keyFile}}}, "no PEM certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log, _ := testLogger()
			srv, err := New(tt.cfg, log)
			if err == nil {
				_ = srv.Close()
				t.Fatal("New succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestServerLifecycle(t *testing.T) {
	srv := startServer(t, Config{AllowAnonymous: true, Listeners: []Listener{
		{Type: TypeTCP, Address: "127.0.0.1:0"},
		{Type: TypeWebsocket, Address: "127.0.0.1:0"},
		{Type: TypeTCP, Address: "127.0.0.1:0"},
	}})
	addrs := srv.Addrs()
	if len(addrs) != 3 {
		t.Fatalf("Addrs = %v, want 3", addrs)
	}
	for _, a := range addrs {
		if strings.HasSuffix(a, ":0") {
			t.Fatalf("Addrs = %v: port 0 not resolved", addrs)
		}
	}
	if err := srv.Start(); err == nil {
		t.Fatal("second Start succeeded")
	}

	mustDial(t, clientOpts{url: "tcp://" + addrs[0]})
	mustDial(t, clientOpts{url: "ws://" + addrs[1]})
	mustDial(t, clientOpts{url: "tcp://" + addrs[2]})
	waitClients(t, srv, 3)

	if err := srv.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	waitClients(t, srv, 0)
	for _, a := range addrs {
		if c, err := net.DialTimeout("tcp", a, time.Second); err == nil {
			c.Close()
			t.Fatalf("%s still accepts after Close", a)
		}
	}
	if err := srv.Start(); err == nil {
		t.Fatal("Start after Close succeeded")
	}
	log, _ := testLogger()
	if _, err := NewSink(srv, SinkConfig{GatewayID: "gw"}, log); err == nil {
		t.Fatal("NewSink on a closed server succeeded")
	}
}

func waitClients(t *testing.T, srv *Server, want int64) {
	t.Helper()
	if !testutil.Poll(waitLong, func() bool { return srv.ClientsConnected() == want }) {
		t.Fatalf("ClientsConnected = %d, want %d", srv.ClientsConnected(), want)
	}
}

func TestWebsocket(t *testing.T) {
	srv := startServer(t, Config{AllowAnonymous: true, Listeners: []Listener{{Type: TypeWebsocket, Address: "127.0.0.1:0"}}})
	s, _ := newSink(t, srv, SinkConfig{})
	url := "ws://" + srv.Addrs()[0] + "/"

	sub := subscribe(t, mustDial(t, clientOpts{url: url}), "wittra/p/#", 1)
	body := `{"deviceId":"D1","big":"` + strings.Repeat("x", 100_000) + `"}`
	publish(t, s, msg("p", "D1", sinks.KindData, body))
	if r := sub.Next(t, waitLong); r.Topic != "wittra/p/D1/data" || r.Payload != body {
		t.Fatalf("got %s (%d bytes)", r.Topic, len(r.Payload))
	}

	tests := []struct {
		name   string
		origin string
		ok     bool
	}{
		{"SameOrigin", "http://" + srv.Addrs()[0], true},
		{"ForeignOrigin", "https://evil.example", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := dial(t, clientOpts{url: url, configure: func(o *paho.ClientOptions) {
				o.SetHTTPHeaders(http.Header{"Origin": {tt.origin}})
			}})
			if ok := err == nil; ok != tt.ok {
				t.Fatalf("connect with Origin %s: error %v, want ok %v", tt.origin, err, tt.ok)
			}
		})
	}
}

func TestTLS(t *testing.T) {
	certFile, keyFile, pool := selfSigned(t)
	srv := startServer(t, Config{AllowAnonymous: true, Listeners: []Listener{
		{Type: TypeTLS, Address: "127.0.0.1:0", CertFile: certFile, KeyFile: keyFile},
		{Type: TypeWebsocket, Address: "127.0.0.1:0", CertFile: certFile, KeyFile: keyFile},
	}})
	s, _ := newSink(t, srv, SinkConfig{})
	clientTLS := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}

	for i, scheme := range []string{"ssl", "wss"} {
		t.Run(scheme, func(t *testing.T) {
			c := mustDial(t, clientOpts{url: scheme + "://" + srv.Addrs()[i], configure: func(o *paho.ClientOptions) {
				o.SetTLSConfig(clientTLS)
			}})
			sub := subscribe(t, c, "wittra/p/#", 1)
			publish(t, s, msg("p", "d", sinks.KindData, `{"tls":true}`))
			if r := sub.Next(t, waitLong); r.Payload != `{"tls":true}` {
				t.Fatalf("got %+v", r)
			}
		})
	}

	t.Run("TLS1.1Refused", func(t *testing.T) {
		d := &net.Dialer{Timeout: waitLong}
		c, err := tls.DialWithDialer(d, "tcp", srv.Addrs()[0], &tls.Config{
			RootCAs: pool, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11,
		})
		if err == nil {
			c.Close()
			t.Fatal("TLS 1.1 handshake succeeded")
		}
	})
}

// selfSigned writes a certificate for 127.0.0.1 and its key into a temp
// dir, and returns the pool that trusts it.
func selfSigned(t *testing.T) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	ca := testpki.NewCA(t, "broker test CA")
	certFile, keyFile = ca.Server(t).Write(t, t.TempDir(), "broker")
	return certFile, keyFile, ca.Pool()
}

func TestMochiHandler(t *testing.T) {
	var buf bytes.Buffer
	zl := zerolog.New(&buf).Level(zerolog.InfoLevel)
	l := slog.New(newMochiHandler(zerolog.NewSlogHandler(zl))).With("listener", "tcp-0", "pk", "dropped")

	l.Warn("", "error", "EOF") // per-connection noise: demoted below info
	if buf.Len() != 0 {
		t.Fatalf("empty-message warning logged at info level: %s", buf.String())
	}
	l.Warn("error processing packet", "error", "x", "pk", `{"password":"hunter2"}`)
	out := buf.String()
	if !strings.Contains(out, `"level":"warn"`) || !strings.Contains(out, `"listener":"tcp-0"`) {
		t.Fatalf("warning lost: %s", out)
	}
	if strings.Contains(out, "hunter2") || strings.Contains(out, `"pk"`) {
		t.Fatalf("packet logged: %s", out)
	}

	buf.Reset()
	zd := zerolog.New(&buf).Level(zerolog.DebugLevel)
	slog.New(newMochiHandler(zerolog.NewSlogHandler(zd))).Warn("", "error", "EOF")
	if out := buf.String(); !strings.Contains(out, `"level":"debug"`) || !strings.Contains(out, "client connection ended") {
		t.Fatalf("demoted record = %s", out)
	}
}

// Refused logins are logged without the password.
func TestAuthLog(t *testing.T) {
	log, buf := testLogger()
	srv, err := New(Config{Listeners: []Listener{{Address: "127.0.0.1:0"}}, Users: []User{{Username: "u", Password: "right"}}}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := dial(t, clientOpts{url: tcpURL(srv), user: "u", pass: "wrong-pw-123"}); err == nil {
		t.Fatal("connect with a wrong password succeeded")
	}
	if !testutil.Poll(waitLong, func() bool { return strings.Contains(buf.String(), "broker connect refused") }) {
		t.Fatalf("no refusal logged: %s", buf.String())
	}
	if strings.Contains(buf.String(), "wrong-pw-123") {
		t.Fatalf("password logged: %s", buf.String())
	}
}

// A connection that never sends CONNECT is closed after the connect
// timeout; one that did is governed by its keepalive instead.
func TestConnectTimeout(t *testing.T) {
	const timeout = 300 * time.Millisecond
	for _, typ := range []string{TypeTCP, TypeWebsocket} {
		t.Run(typ, func(t *testing.T) {
			srv := startServer(t, Config{AllowAnonymous: true, connectTimeout: timeout,
				Listeners: []Listener{{Type: typ, Address: "127.0.0.1:0"}}})
			s, _ := newSink(t, srv, SinkConfig{})
			url := "tcp://" + srv.Addrs()[0]
			if typ == TypeWebsocket {
				url = "ws://" + srv.Addrs()[0]
			}
			sub := subscribe(t, mustDial(t, clientOpts{url: url}), "wittra/p/#", 1)

			if typ == TypeTCP {
				c, err := net.Dial("tcp", srv.Addrs()[0])
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				start := time.Now()
				_ = c.SetReadDeadline(time.Now().Add(waitLong))
				if _, err := c.Read(make([]byte, 1)); err == nil {
					t.Fatal("read data from a silent connection")
				} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatalf("silent connection still open after %v", waitLong)
				}
				if d := time.Since(start); d < timeout/2 {
					t.Fatalf("silent connection closed after %v, before the timeout", d)
				}
			} else {
				time.Sleep(2 * timeout)
			}

			publish(t, s, msg("p", "d", sinks.KindData, `{"still":"connected"}`))
			if r := sub.Next(t, waitLong); r.Payload != `{"still":"connected"}` {
				t.Fatalf("got %+v", r)
			}
		})
	}
}

// Listeners disconnect their clients with Server.closeListenerClients, not
// mochi's (which can deadlock, mochi-mqtt/server issue 488).
func TestListenerCloseClients(t *testing.T) {
	var got string
	l := &listener{Listener: listeners.NewMockListener("tcp-0", "127.0.0.1:0"), closeClients: func(id string) { got = id }}
	l.Close(func(string) { t.Error("mochi's closeListenerClients called") })
	if got != "tcp-0" {
		t.Fatalf("closeClients called with %q, want tcp-0", got)
	}

	// The replacement disconnects exactly the listener's clients.
	srv := startServer(t, Config{AllowAnonymous: true, Listeners: []Listener{
		{Type: TypeTCP, Address: "127.0.0.1:0"},
		{Type: TypeWebsocket, Address: "127.0.0.1:0"},
	}})
	tcp := mustDial(t, clientOpts{url: "tcp://" + srv.Addrs()[0]})
	ws := mustDial(t, clientOpts{url: "ws://" + srv.Addrs()[1]})
	waitClients(t, srv, 2)
	srv.closeListenerClients(srv.lns[1].ID())
	waitClients(t, srv, 1)
	if !tcp.IsConnectionOpen() {
		t.Fatal("tcp client disconnected with the websocket listener's")
	}
	if !testutil.Poll(waitLong, func() bool { return !ws.IsConnectionOpen() }) {
		t.Fatal("websocket client still connected")
	}
}
