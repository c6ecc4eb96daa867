package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"wittra-gateway/internal/testpki"
	"wittra-gateway/internal/testutil"
)

// writeSelfSigned writes a certificate for 127.0.0.1 with the given
// common name (key first, each file renamed into place as certbot does)
// and returns the pool that trusts it.
func writeSelfSigned(t *testing.T, certFile, keyFile, cn string) *x509.CertPool {
	t.Helper()
	ca := testpki.NewCA(t, cn+" CA")
	leaf := ca.ServerNamed(t, cn)
	testpki.WriteFile(t, keyFile, leaf.KeyPEM)
	testpki.WriteFile(t, certFile, leaf.CertPEM)
	return ca.Pool()
}

func TestHTTPSWithCertificateReload(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	pool1 := writeSelfSigned(t, certFile, keyFile, "first")
	tg := startTestGateway(t, dir, map[string]string{
		"webhook": "webhook: {listen: 127.0.0.1:0, tls: {cert_file: " + certFile + ", key_file: " + keyFile + "}}",
	})
	addr := tg.g.webhookLn.Addr().String()
	postTLS := func(pool *x509.CertPool) (int, string, error) {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}}
		resp, err := c.Post("https://"+addr+"/wittra", "application/json", strings.NewReader(`{"deviceId":"D1"}`))
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		return resp.StatusCode, resp.TLS.PeerCertificates[0].Subject.CommonName, nil
	}
	if code, cn, err := postTLS(pool1); err != nil || code != 200 || cn != "first" {
		t.Fatalf("HTTPS post: %d %q %v", code, cn, err)
	}
	// Plain HTTP on the TLS port is refused.
	if resp, err := http.Post("http://"+addr+"/wittra", "application/json", strings.NewReader(`{}`)); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plain HTTP accepted on the HTTPS listener")
		}
	}
	// TLS 1.1 is refused.
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool1, MaxVersion: tls.VersionTLS11})
	if err == nil {
		conn.Close()
		t.Fatal("a TLS 1.1 handshake succeeded")
	}

	pool2 := writeSelfSigned(t, certFile, keyFile, "second")
	var code int
	var cn string
	if !testutil.Poll(5*time.Second, func() bool { code, cn, err = postTLS(pool2); return err == nil && code == 200 && cn == "second" }) {
		t.Fatalf("renewed certificate not served after 5 s: %d %q %v", code, cn, err)
	}
}

func TestWrongTokenCostsNoBodyReadAndNoWrite(t *testing.T) {
	tg := startTestGateway(t, t.TempDir(), map[string]string{
		"webhook": "webhook: {listen: 127.0.0.1:0, routes: [{path: /wittra, token: tok}]}",
	})
	before := tg.g.queue.Counters().Commits
	conn, err := net.Dial("tcp", tg.g.webhookLn.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Announce a 900 KB body and send none of it: the answer must come
	// from the headers alone.
	io.WriteString(conn, "POST /wittra HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nauth-token: nope\r\nContent-Length: 900000\r\n\r\n")
	conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer before the body was sent: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("code = %d, want 401", resp.StatusCode)
	}
	if after := tg.g.queue.Counters().Commits; after != before {
		t.Fatalf("a refused request caused %d queue commits", after-before)
	}
}

func TestSlowHeadersAreCutOff(t *testing.T) {
	tm := testTiming
	tm.webhookHeaderTimeout = 300 * time.Millisecond
	tg := startTestGatewayTimed(t, t.TempDir(), nil, tm)
	conn, err := net.Dial("tcp", tg.g.webhookLn.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	io.WriteString(conn, "POST /wittra HTTP/1.1\r\nHost: x\r\n") // and never finish the headers
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.ReadAll(conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the server kept a client with unfinished headers for 5 s")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("cut off after %v, want about the header timeout", d)
	}
}
