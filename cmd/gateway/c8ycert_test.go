package main

import (
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"wittra-gateway/internal/testpki"
	"wittra-gateway/internal/testutil"
	"wittra-gateway/sinks/cumulocity/c8yfake"
)

// writeDeviceCert writes a device certificate with common name cn and
// returns its files.
func writeDeviceCert(t *testing.T, dir, cn string) (certFile, keyFile string, leaf testpki.Leaf) {
	t.Helper()
	leaf = testpki.NewCA(t, "tenant CA").Client(t, cn, time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour))
	certFile, keyFile = leaf.Write(t, dir, "device")
	return certFile, keyFile, leaf
}

func TestC8YCertificateLoginConfig(t *testing.T) {
	dir := t.TempDir()
	crt, key, _ := writeDeviceCert(t, dir, "gw01")
	sinkURL := func(url, extra string) string {
		return yml("gateway: {id: gw01}", "sinks:",
			fmt.Sprintf("  - {name: c, type: cumulocity, url: %q, tls: {cert_file: %q, key_file: %q}%s}", url, crt, key, extra))
	}
	sink := func(extra string) string { return sinkURL("mqtts://c8y.example", extra) }
	cfg := mustParse(t, sink(""), dir)
	if s := cfg.Sinks[0]; s.Password != "" || s.Tenant != "" || s.TLS.CertFile != crt {
		t.Fatalf("certificate login parsed as %+v", s)
	}
	mustParse(t, sinkURL("https://t.example", ", mode: rest, token_url: 'https://t.example:8443'"), dir)

	wantProblems(t, []problemCase{
		{"CNIsNotGatewayID", yml("gateway: {id: other}", "sinks:",
			fmt.Sprintf("  - {name: c, type: cumulocity, url: 'mqtts://c8y.example', tls: {cert_file: %q, key_file: %q}}", crt, key)),
			[]string{"line 3: sinks[0].tls.cert_file: certificate login: the certificate's common name \"gw01\" is not gateway.id \"other\"", `client_id: "gw01"`}},
		{"ClientIDNotCN", sink(", client_id: gw02"), []string{"line 3: sinks[0].client_id: certificate login: client_id \"gw02\""}},
		{"PlainTCP", sinkURL("tcp://c8y.example", ""), []string{"line 3: sinks[0].url: certificate login: ", "needs TLS"}},
		{"MissingFile", yml("gateway: {id: gw01}", "sinks:", "  - {name: c, type: cumulocity, url: 'mqtts://x', tls: {cert_file: /nonexistent.crt, key_file: /nonexistent.key}}"), []string{"line 3: sinks[0].tls.cert_file: certificate login: client certificate"}},
		{"TokenURLWithMQTT", sink(", token_url: 'https://x'"), []string{"line 3: sinks[0].token_url: only used by mode rest"}},
		{"ClientIDWithPassword", sink(", client_id: gw01, tenant: t, username: u, password: p"), []string{"line 3: sinks[0].client_id: only used with certificate login"}},
		{"PasswordStillRequiredWithoutCert", yml("sinks:", "  - {name: c, type: cumulocity, url: 'mqtts://x', tenant: t, username: u}"),
			[]string{"line 2: sinks[0].password: required", "tls.cert_file"}},
	})
}

// The gateway with a certificate-only Cumulocity sink: the reading arrives,
// the fake saw the certificate's device and no credentials, and /metrics
// carries the certificate's expiry.
func TestCumulocityCertificateThroughTheGateway(t *testing.T) {
	dir := t.TempDir()
	tenant := testpki.NewCA(t, "tenant CA")
	server := testpki.NewCA(t, "server CA")
	leaf := tenant.Client(t, "test-gw", time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour))
	crt, key := leaf.Write(t, dir, "device")
	caFile := filepath.Join(dir, "server-ca.pem")
	testpki.WriteFile(t, caFile, server.PEM)
	fake, err := c8yfake.Start(c8yfake.Options{CertAuth: &c8yfake.CertAuth{ServerCert: server.Server(t).TLS(t), TrustedCAs: tenant.Pool()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fake.Close() })
	tg := startTestGateway(t, dir, map[string]string{
		"sinks": fmt.Sprintf("sinks:\n  - {name: c8y, type: cumulocity, url: %q, tls: {ca_file: %q, cert_file: %q, key_file: %q}}",
			fake.MQTTSURL(), caFile, crt, key),
	})
	if code, reply := tg.post(t, "/wittra", readFixture(t, "f1_data_tag.json")); code != 200 {
		t.Fatalf("post: %d %s", code, reply)
	}
	if !testutil.Poll(15*time.Second, func() bool { return len(fake.Measurements()) != 0 }) {
		t.Fatalf("no measurement in the fake after 15 s; errors %v", fake.Errors())
	}
	conns := fake.Connections()
	if len(conns) != 1 || conns[0].CertCN != "test-gw" || conns[0].Username != "" || conns[0].PasswordSent {
		t.Fatalf("connections %+v; want one as test-gw by certificate, no credentials", conns)
	}
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(newRegistry(tg.g), promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	text := rec.Body.String()
	if got := metricValue(text, `wittra_gateway_sink_certificate_expiry_timestamp_seconds{sink="c8y"}`); got != float64(leaf.Cert.NotAfter.Unix()) {
		t.Errorf("expiry metric %v, want %d", got, leaf.Cert.NotAfter.Unix())
	}
	if got := metricValue(text, `wittra_gateway_sink_connected{sink="c8y"}`); got != 1 {
		t.Errorf("connected metric %v, want 1", got)
	}
}
