package cumulocity

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"wittra-gateway/internal/testpki"
	"wittra-gateway/internal/testutil"
	"wittra-gateway/sinks"
	"wittra-gateway/sinks/cumulocity/c8yfake"
)

// pki is a tenant CA trusted by a fake with certificate login, the fake's
// server CA (written to caFile for the sink) and a directory for the
// device's certificate files.
type pki struct {
	f      *c8yfake.Server
	tenant *testpki.CA
	caFile string
	dir    string
	now    atomic.Int64        // the fake's clock
	log    *testutil.LogBuffer // log of certSink's sinks
}

func startCertFake(t *testing.T) *pki {
	t.Helper()
	p := &pki{tenant: testpki.NewCA(t, "tenant CA"), dir: t.TempDir(), log: new(testutil.LogBuffer)}
	p.now.Store(time.Now().UnixNano())
	server := testpki.NewCA(t, "server CA")
	p.caFile = filepath.Join(p.dir, "server-ca.pem")
	testpki.WriteFile(t, p.caFile, server.PEM)
	f, err := c8yfake.Start(c8yfake.Options{CertAuth: &c8yfake.CertAuth{
		ServerCert: server.Server(t).TLS(t),
		TrustedCAs: p.tenant.Pool(),
		Now:        func() time.Time { return time.Unix(0, p.now.Load()) },
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	p.f = f
	return p
}

// validFor is a validity window from an hour ago for d.
func validFor(d time.Duration) [2]time.Time {
	return [2]time.Time{time.Now().Add(-time.Hour), time.Now().Add(d)}
}

// device writes a device certificate to the sink's files.
func (p *pki) device(t *testing.T, ca *testpki.CA, cn string, valid [2]time.Time) testpki.Leaf {
	t.Helper()
	l := ca.Client(t, cn, valid[0], valid[1])
	// key first: the reloader retries a pair that does not match yet
	testpki.WriteFile(t, filepath.Join(p.dir, "device.key"), l.KeyPEM)
	testpki.WriteFile(t, filepath.Join(p.dir, "device.crt"), l.CertPEM)
	return l
}

// deliverOn delivers msgs through s and checks that all arrived over one
// connection (the fake's only one now) made with certificate leaf.
func (p *pki) deliverOn(t *testing.T, s *Sink, msgs []sinks.Message, leaf testpki.Leaf) {
	t.Helper()
	deliverAll(t, s, msgs, 20*time.Second)
	checkAllThere(t, p.f, len(msgs))
	if conns := p.f.Connections(); len(conns) != 1 || conns[0].CertSerial != leaf.Cert.SerialNumber.String() {
		t.Errorf("connected with %+v, want certificate serial %v", conns, leaf.Cert.SerialNumber)
	}
}

// certSink is a sink logging in with the device certificate only; its
// log goes to p.log.
func (p *pki) certSink(t *testing.T, mode string, mod func(*Config)) *Sink {
	t.Helper()
	cfg := Config{
		Name:                 "c8y",
		Mode:                 mode,
		URL:                  p.f.MQTTSURL(),
		GatewayID:            testGateway,
		TLS:                  TLSConfig{CAFile: p.caFile, CertFile: filepath.Join(p.dir, "device.crt"), KeyFile: filepath.Join(p.dir, "device.key")},
		RequestTimeout:       3 * time.Second,
		connectRetryInterval: 200 * time.Millisecond,
	}
	if mode == ModeREST {
		cfg.URL, cfg.TokenURL = p.f.URL(), p.f.TokenURL()
	}
	if mod != nil {
		mod(&cfg)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sink log:\n%s", p.log.String())
		}
	})
	s, err := New(cfg, zerolog.New(p.log))
	if err != nil {
		t.Fatalf("new sink: %v", err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	return s
}

func TestCertMQTTConnectsAsCommonName(t *testing.T) {
	p := startCertFake(t)
	leaf := p.device(t, p.tenant, testGateway, validFor(90*24*time.Hour))
	s := p.certSink(t, ModeMQTT, nil)
	msgs := dataMessages(t, 6)
	deliverAll(t, s, msgs, 20*time.Second)
	checkAllThere(t, p.f, len(msgs))
	if !s.Connected() {
		t.Error("Connected() false after delivering")
	}
	conns := p.f.Connections()
	if len(conns) != 1 {
		t.Fatalf("connections %+v", conns)
	}
	c := conns[0]
	if c.ClientID != testGateway || c.CertCN != testGateway || c.Username != "" || c.PasswordSent {
		t.Errorf("connected as %+v; want client id = CN = %s, no username or password", c, testGateway)
	}
	if exp, ok := s.CertificateExpiry(); !ok || !exp.Equal(leaf.Cert.NotAfter) {
		t.Errorf("CertificateExpiry = %v, %v; want %v", exp, ok, leaf.Cert.NotAfter)
	}
}

// A certificate the tenant refuses (other CA, expired) leaves the sink
// unconnected and failing transiently; once a good certificate is written
// to the same files it connects without a restart and everything arrives.
func TestCertMQTTRefusedThenRotated(t *testing.T) {
	for _, tc := range []struct {
		name   string
		reason string
		bad    func(p *pki, t *testing.T)
	}{
		{"WrongCA", "unknown authority", func(p *pki, t *testing.T) {
			p.device(t, testpki.NewCA(t, "not the tenant's"), testGateway, validFor(90*24*time.Hour))
		}},
		{"Expired", "expired", func(p *pki, t *testing.T) {
			p.device(t, p.tenant, testGateway, [2]time.Time{time.Now().Add(-48 * time.Hour), time.Now().Add(-time.Hour)})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startCertFake(t)
			tc.bad(p, t)
			s := p.certSink(t, ModeMQTT, func(c *Config) { c.RequestTimeout = 500 * time.Millisecond })
			msgs := dataMessages(t, 4)
			n, err := s.Publish(context.Background(), msgs)
			if n != 0 || err == nil || errors.Is(err, sinks.ErrPermanent) {
				t.Fatalf("Publish with a refused certificate = %d, %v; want 0 and a transient error", n, err)
			}
			if s.Connected() {
				t.Error("Connected() with a refused certificate")
			}
			if len(p.f.Measurements()) != 0 {
				t.Fatal("data stored without a valid certificate")
			}
			testutil.WaitFor(t, 10*time.Second, "the fake's record of the refusal ("+tc.reason+")", func() bool {
				for _, e := range p.f.Errors() {
					if strings.Contains(e.Text, tc.reason) {
						return true
					}
				}
				return false
			})
			testutil.WaitFor(t, 10*time.Second, "the sink's log of why it cannot connect", func() bool {
				return strings.Contains(p.log.String(), "cannot connect to Cumulocity")
			})

			p.deliverOn(t, s, msgs, p.device(t, p.tenant, testGateway, validFor(90*24*time.Hour)))
		})
	}
}

// A renewed certificate is used on the next connection without a restart,
// and /metrics' expiry follows it.
func TestCertMQTTRotationWhileConnected(t *testing.T) {
	p := startCertFake(t)
	p.device(t, p.tenant, testGateway, validFor(20*24*time.Hour))
	s := p.certSink(t, ModeMQTT, nil)
	deliverAll(t, s, dataMessages(t, 2), 20*time.Second)

	renewed := p.device(t, p.tenant, testGateway, validFor(400*24*time.Hour))
	testutil.WaitFor(t, 10*time.Second, "expiry of the renewed certificate", func() bool {
		exp, _ := s.CertificateExpiry()
		return exp.Equal(renewed.Cert.NotAfter)
	})
	p.f.DropConnections()
	p.deliverOn(t, s, dataMessages(t, 3), renewed)
}

func TestCertIdentityChecks(t *testing.T) {
	p := startCertFake(t)
	p.device(t, p.tenant, "other-device", validFor(90*24*time.Hour))
	build := func(mode string, mod func(*Config)) error {
		cfg := Config{Name: "c8y", Mode: mode, URL: p.f.MQTTSURL(), GatewayID: testGateway,
			TLS: TLSConfig{CAFile: p.caFile, CertFile: filepath.Join(p.dir, "device.crt"), KeyFile: filepath.Join(p.dir, "device.key")}}
		if mode == ModeREST {
			cfg.URL = p.f.URL()
		}
		if mod != nil {
			mod(&cfg)
		}
		s, err := New(cfg, zerolog.Nop())
		if err == nil {
			_ = s.Close(context.Background())
		}
		return err
	}
	for _, tc := range []struct {
		name, mode string
		mod        func(*Config)
		want       string // "" = accepted
	}{
		{"CNIsNotGatewayID", ModeMQTT, nil, `set gateway.id: "other-device", or (mode mqtt) client_id: "other-device"`},
		{"ClientIDOverrides", ModeMQTT, func(c *Config) { c.ClientID = "other-device" }, ""},
		{"ClientIDWithType", ModeMQTT, func(c *Config) { c.ClientID = "d:other-device" }, ""},
		{"ClientIDNotCN", ModeMQTT, func(c *Config) { c.ClientID = "gw-x" }, "Cumulocity refuses a client id other than the common name"},
		{"PlainTCP", ModeMQTT, func(c *Config) { c.ClientID = "other-device"; c.URL = p.f.MQTTURL() }, "certificate login needs TLS"},
		{"ClientIDWithPassword", ModeMQTT, func(c *Config) {
			c.ClientID, c.Tenant, c.Username, c.Password = "other-device", "t", "u", "p"
		}, "client_id: only used with certificate login"},
		{"RESTCNIsNotGatewayID", ModeREST, nil, "is not gateway.id"},
		{"RESTTokenURLNotHTTPS", ModeREST, func(c *Config) { c.GatewayID = "other-device"; c.TokenURL = "http://x" }, "token_url"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := build(tc.mode, tc.mod)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}

	// With client_id the device is the certificate's common name.
	s := p.certSink(t, ModeMQTT, func(c *Config) { c.ClientID = "other-device" })
	deliverAll(t, s, dataMessages(t, 1), 20*time.Second)
	if _, ok := p.f.DeviceBySerial("other-device"); !ok {
		t.Error("device other-device not announced")
	}
}

func TestCertExpiryWarning(t *testing.T) {
	p := startCertFake(t)
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	newWatched := func(t *testing.T, days int) (*Sink, *testutil.LogBuffer) {
		p.device(t, p.tenant, testGateway, validFor(time.Duration(days)*24*time.Hour))
		buf := new(testutil.LogBuffer)
		cfg := Config{Name: "c8y", URL: "mqtts://127.0.0.1:1", GatewayID: testGateway,
			TLS: TLSConfig{CAFile: p.caFile, CertFile: filepath.Join(p.dir, "device.crt"), KeyFile: filepath.Join(p.dir, "device.key")},
			now: func() time.Time { return time.Unix(0, clock.Load()) }}
		s, err := New(cfg, zerolog.New(buf))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close(context.Background()) })
		return s, buf
	}
	warnings := func(b *testutil.LogBuffer) int { return strings.Count(b.String(), "client certificate expires soon") }

	t.Run("AtStart", func(t *testing.T) {
		_, buf := newWatched(t, 10)
		// NotAfter is whole seconds: 9 or 10 days left, depending on rounding.
		if warnings(buf) != 1 || !(strings.Contains(buf.String(), `"days_left":9`) || strings.Contains(buf.String(), `"days_left":10`)) {
			t.Fatalf("no warning at start for a certificate ending in 10 days:\n%s", buf.String())
		}
	})
	t.Run("ThirtyDaysBefore", func(t *testing.T) {
		clock.Store(time.Now().UnixNano())
		s, buf := newWatched(t, 60)
		if warnings(buf) != 0 {
			t.Fatalf("warning 60 days ahead:\n%s", buf.String())
		}
		clock.Add(int64(29 * 24 * time.Hour))
		s.checkExpiry()
		if warnings(buf) != 0 {
			t.Fatalf("warning 31 days ahead:\n%s", buf.String())
		}
		clock.Add(int64(2 * 24 * time.Hour))
		s.checkExpiry()
		s.checkExpiry()
		if warnings(buf) != 1 {
			t.Fatalf("want one warning 29 days ahead, got %d:\n%s", warnings(buf), buf.String())
		}
		clock.Add(int64(25 * time.Hour))
		s.checkExpiry()
		if warnings(buf) != 2 {
			t.Fatalf("want the warning repeated a day later, got %d", warnings(buf))
		}
		clock.Add(int64(40 * 24 * time.Hour))
		s.checkExpiry()
		if !strings.Contains(buf.String(), "client certificate has expired") {
			t.Fatalf("no error once expired:\n%s", buf.String())
		}
	})
}

func TestCertRESTDeviceToken(t *testing.T) {
	p := startCertFake(t)
	p.device(t, p.tenant, testGateway, validFor(90*24*time.Hour))
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	s := p.certSink(t, ModeREST, func(c *Config) { c.now = func() time.Time { return time.Unix(0, clock.Load()) } })

	deliverAll(t, s, dataMessages(t, 3), 20*time.Second)
	if got := p.f.TokensIssued(); got != 1 {
		t.Fatalf("tokens issued %d, want 1", got)
	}
	if !s.Connected() {
		t.Error("Connected() false after delivering")
	}
	unauthorized := func() int {
		n := 0
		for _, e := range p.f.Errors() {
			if strings.HasPrefix(e.Text, "401 ") {
				n++
			}
		}
		return n
	}

	// The platform drops the token: the 401 renews it and the request is
	// repeated, so the batch still goes through in one Publish.
	p.f.RevokeTokens()
	if n, err := s.Publish(context.Background(), dataMessages(t, 4)[3:]); n != 1 || err != nil {
		t.Fatalf("Publish after revocation = %d, %v", n, err)
	}
	if got := p.f.TokensIssued(); got != 2 || unauthorized() != 1 {
		t.Fatalf("tokens issued %d (want 2), 401s %d (want 1)", got, unauthorized())
	}

	// Shortly before the token's exp the sink renews it unasked.
	clock.Add(int64(time.Hour))
	if n, err := s.Publish(context.Background(), dataMessages(t, 5)[4:]); n != 1 || err != nil {
		t.Fatalf("Publish near token expiry = %d, %v", n, err)
	}
	if got := p.f.TokensIssued(); got != 3 || unauthorized() != 1 {
		t.Fatalf("tokens issued %d (want 3), 401s %d (want still 1)", got, unauthorized())
	}
	checkAllThere(t, p.f, 5)
	for _, mo := range p.f.Devices() {
		if mo.Owner != "device_"+testGateway {
			t.Errorf("%s owned by %q, want the certificate's device user", mo.Name, mo.Owner)
		}
	}
}

func TestCertRESTRefusedCertificate(t *testing.T) {
	p := startCertFake(t)
	p.device(t, testpki.NewCA(t, "not the tenant's"), testGateway, validFor(90*24*time.Hour))
	s := p.certSink(t, ModeREST, func(c *Config) { c.RequestTimeout = time.Second })
	n, err := s.Publish(context.Background(), dataMessages(t, 2))
	if n != 0 || err == nil || errors.Is(err, sinks.ErrPermanent) {
		t.Fatalf("Publish = %d, %v; want 0 and a transient error", n, err)
	}
	if s.Connected() || len(p.f.Measurements()) != 0 || p.f.TokensIssued() != 0 {
		t.Fatal("refused certificate got through")
	}
	p.device(t, p.tenant, testGateway, validFor(90*24*time.Hour))
	deliverAll(t, s, dataMessages(t, 2), 20*time.Second)
	checkAllThere(t, p.f, 2)
}
