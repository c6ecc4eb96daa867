package c8yfake

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"wittra-gateway/internal/testpki"
)

type certFake struct {
	s    *Server
	ca   *testpki.CA
	srv  *testpki.CA // issues the fake's server certificate
	now  atomic.Int64
	root *x509.CertPool
}

func startCertFake(t *testing.T) *certFake {
	t.Helper()
	f := &certFake{ca: testpki.NewCA(t, "tenant CA"), srv: testpki.NewCA(t, "server CA")}
	f.now.Store(time.Now().UnixNano())
	s, err := Start(Options{CertAuth: &CertAuth{
		ServerCert:    f.srv.Server(t).TLS(t),
		TrustedCAs:    f.ca.Pool(),
		TokenLifetime: time.Hour,
		Now:           func() time.Time { return time.Unix(0, f.now.Load()) },
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	f.s, f.root = s, f.srv.Pool()
	return f
}

func (f *certFake) clientTLS(t *testing.T, leaf testpki.Leaf) *tls.Config {
	return &tls.Config{RootCAs: f.root, Certificates: []tls.Certificate{leaf.TLS(t)}, MinVersion: tls.VersionTLS12}
}

func (f *certFake) mqttConnect(t *testing.T, clientID string, leaf testpki.Leaf) (paho.Client, error) {
	t.Helper()
	opts := paho.NewClientOptions().AddBroker(f.s.MQTTSURL()).SetClientID(clientID).SetTLSConfig(f.clientTLS(t, leaf)).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).SetConnectTimeout(wait).SetProtocolVersion(4)
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(wait) {
		t.Fatal("connect did not finish")
	}
	if tok.Error() == nil {
		t.Cleanup(func() { c.Disconnect(0) })
	}
	return c, tok.Error()
}

func valid() (time.Time, time.Time) {
	return time.Now().Add(-time.Hour), time.Now().Add(24 * time.Hour)
}

func TestCertMQTTIdentityFromCommonName(t *testing.T) {
	f := startCertFake(t)
	nb, na := valid()
	leaf := f.ca.Client(t, "gw01", nb, na)
	c, err := f.mqttConnect(t, "gw01", leaf)
	if err != nil {
		t.Fatalf("connect with a trusted certificate: %v", err)
	}
	if tok := c.Publish("s/us", 1, false, "100,GW,gwType"); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	mo, ok := f.s.DeviceBySerial("gw01")
	if !ok || mo.Name != "GW" {
		t.Fatalf("device gw01 not created from the certificate's connection: %+v", mo)
	}
	conns := f.s.Connections()
	if len(conns) != 1 || conns[0].CertCN != "gw01" || conns[0].User != "device_gw01" || conns[0].Username != "" || conns[0].PasswordSent {
		t.Fatalf("connection info %+v", conns)
	}

	// The client id must name the certificate's device; "d:" is allowed.
	if _, err := f.mqttConnect(t, "gw02", leaf); err == nil || !strings.Contains(err.Error(), "not Authorized") {
		t.Fatalf("client id other than the CN: err %v, want CONNACK 5", err)
	}
	if _, err := f.mqttConnect(t, "d:gw01", leaf); err != nil {
		t.Fatalf("d:<CN>: %v", err)
	}
}

func TestCertMQTTRefusesWrongCAAndExpired(t *testing.T) {
	f := startCertFake(t)
	nb, na := valid()
	other := testpki.NewCA(t, "someone else")
	if _, err := f.mqttConnect(t, "gw01", other.Client(t, "gw01", nb, na)); err == nil {
		t.Fatal("certificate from an untrusted CA accepted")
	}
	expired := f.ca.Client(t, "gw01", time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
	if _, err := f.mqttConnect(t, "gw01", expired); err == nil {
		t.Fatal("expired certificate accepted")
	}
	var texts []string
	for _, e := range f.s.Errors() {
		texts = append(texts, e.Text)
	}
	all := strings.Join(texts, "\n")
	if !strings.Contains(all, "unknown authority") || !strings.Contains(all, "expired") {
		t.Fatalf("refusals not recorded with their reason:\n%s", all)
	}
	if len(f.s.Connected()) != 0 {
		t.Fatal("a refused client counts as connected")
	}
	// The fake's clock decides validity: a valid certificate is refused
	// once the clock passes its end.
	f.now.Store(na.Add(time.Minute).UnixNano())
	if _, err := f.mqttConnect(t, "gw01", f.ca.Client(t, "gw01", nb, na)); err == nil {
		t.Fatal("certificate accepted after its NotAfter on the fake's clock")
	}
}

func TestCertDeviceAccessToken(t *testing.T) {
	f := startCertFake(t)
	nb, na := valid()
	leaf := f.ca.Client(t, "gw01", nb, na)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: f.clientTLS(t, leaf)}}
	t.Cleanup(hc.CloseIdleConnections)

	req, _ := http.NewRequest(http.MethodPost, f.s.TokenURL()+"/devicecontrol/deviceAccessToken", nil)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("X-Ssl-Cert-Chain", strings.ReplaceAll(string(leaf.CertPEM), "\n", " "))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var tok struct{ AccessToken string }
	_ = json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	if resp.StatusCode != 200 || tok.AccessToken == "" {
		t.Fatalf("token: %d %+v", resp.StatusCode, tok)
	}

	get := func() int {
		req, _ := http.NewRequest(http.MethodGet, f.s.URL()+"/identity/externalIds/c8y_Serial/gw01", nil)
		req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := get(); got != http.StatusNotFound {
		t.Fatalf("GET with the token: %d, want 404 (authenticated, unknown id)", got)
	}
	f.now.Add(int64(2 * time.Hour))
	if got := get(); got != http.StatusUnauthorized {
		t.Fatalf("GET with an expired token: %d, want 401", got)
	}

	// A chain header naming another certificate is refused.
	f.now.Store(time.Now().UnixNano())
	req, _ = http.NewRequest(http.MethodPost, f.s.TokenURL()+"/devicecontrol/deviceAccessToken", nil)
	req.Header.Set("X-Ssl-Cert-Chain", strings.ReplaceAll(string(f.ca.Client(t, "gw01", nb, na).CertPEM), "\n", " "))
	resp, err = hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("foreign chain header: %d, want 401", resp.StatusCode)
	}
	if f.s.TokensIssued() != 1 {
		t.Fatalf("tokens issued %d, want 1", f.s.TokensIssued())
	}
}
