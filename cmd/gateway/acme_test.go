package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"wittra-gateway/internal/testutil"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/miekg/dns"
)

// The ACME tests run Let's Encrypt's test CA, pebble, in-process on
// loopback. Its validation settings for a loopback test:
//
//   - DNS: pebble's VA resolves the domain through a custom resolver
//     (va.New's customResolverAddr), here a tiny DNS server on 127.0.0.1
//     (TCP, as pebble asks) that answers A 127.0.0.1 for every name and nothing else (no AAAA,
//     no CAA). The domain is gw.wittra.test (autocert wants two labels).
//   - Ports: a real CA validates tls-alpn-01 on port 443 and http-01 on
//     port 80; pebble takes the ports as va.New(httpPort, tlsPort), here
//     the gateway's webhook port (tls-alpn-01) and its http_listen port
//     (http-01).
//   - PEBBLE_VA_NOSLEEP=1: no random 0-5 s wait before each validation.
//   - PEBBLE_WFE_NONCEREJECT=0: no randomly rejected nonces (the ACME
//     client would retry them; off so a run is repeatable).
//   - pebble's directory is served over HTTPS by httptest; the gateway
//     trusts that server's certificate through webhook.tls.acme.ca_file.
//   - Everything else is pebble's default (validation is real:
//     PEBBLE_VA_ALWAYS_VALID is not set).

const acmeTestDomain = "gw.wittra.test"

type pebbleCA struct {
	dirURL string
	caFile string         // trust for the directory's HTTPS
	roots  *x509.CertPool // pebble's issuing root, for clients of the gateway
	store  *db.MemoryStore
	log    *testutil.LogBuffer
	close  func()
}

// startPebble runs pebble validating http-01 on httpPort and tls-alpn-01 on
// tlsPort, resolving every name to 127.0.0.1.
func startPebble(t *testing.T, httpPort, tlsPort int) *pebbleCA {
	t.Helper()
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0")
	logs := new(testutil.LogBuffer)
	logger := log.New(logs, "pebble ", log.Lmicroseconds)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pebble log:\n%s", logs.String())
		}
	})

	store := db.NewMemoryStore()
	authority := ca.New(logger, store, "", "ecdsa", 0, 1, map[string]ca.Profile{"default": {Description: "default"}})
	validator := va.New(logger, httpPort, tlsPort, false, startLoopbackDNS(t), store)
	front := wfe.New(logger, store, validator, authority, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)
	srv := httptest.NewTLSServer(front.Handler())
	t.Cleanup(srv.Close)

	dir := t.TempDir()
	caFile := filepath.Join(dir, "pebble-directory-ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(authority.GetRootCert(0).PEM()) {
		t.Fatal("pebble root does not parse")
	}
	return &pebbleCA{dirURL: srv.URL + wfe.DirectoryPath, caFile: caFile, roots: roots, store: store, log: logs, close: srv.Close}
}

// validatedBy names the challenge types pebble validated for the order
// that issued leaf.
func (p *pebbleCA) validatedBy(t *testing.T, leaf *x509.Certificate) []string {
	t.Helper()
	cert := p.store.GetCertificateByDER(leaf.Raw)
	if cert == nil {
		t.Fatal("the served certificate was not issued by this pebble")
	}
	order, err := p.store.GetOrderByIssuedSerial(cert.ID)
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	order.RLock()
	defer order.RUnlock()
	for _, az := range order.AuthorizationObjects {
		az.RLock()
		for _, ch := range az.Challenges {
			ch.RLock()
			if ch.Status == "valid" {
				types = append(types, ch.Type)
			}
			ch.RUnlock()
		}
		az.RUnlock()
	}
	return types
}

// startLoopbackDNS answers A 127.0.0.1 for every name, and an empty
// answer for every other type, over TCP (pebble's VA asks its custom
// resolver over TCP); it returns its address.
func startLoopbackDNS(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{Listener: ln, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		for _, qq := range q.Question {
			if qq.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 0},
					A:   net.IPv4(127, 0, 0, 1),
				})
			}
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return ln.Addr().String()
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// acmeWebhook is the webhook section using pebble.
func acmeWebhook(listen string, p *pebbleCA, cacheDir, httpListen string) string {
	s := fmt.Sprintf("webhook: {listen: %s, tls: {acme: {domains: [%s], email: ops@wittra.test, cache_dir: %s, directory_url: %s, ca_file: %s",
		listen, acmeTestDomain, yamlString(cacheDir), yamlString(p.dirURL), yamlString(p.caFile))
	if httpListen != "" {
		s += ", http_listen: " + httpListen
	}
	return s + "}}}"
}

// waitCertExpiry polls /metrics until the webhook certificate's expiry is
// exported, i.e. the gateway obtained the certificate.
func waitCertExpiry(t *testing.T, tg *testGateway, p *pebbleCA) float64 {
	t.Helper()
	metrics := "http://" + tg.g.adminLn.Addr().String() + "/metrics"
	name := `wittra_gateway_webhook_certificate_expiry_timestamp_seconds{domain="` + acmeTestDomain + `"}`
	var expiry float64
	testutil.WaitFor(t, 2*time.Minute, "a certificate from pebble", func() bool {
		_, body := httpGet(t, metrics)
		expiry = metricValue(body, name)
		return expiry > 0
	})
	return expiry
}

// postHTTPS posts one reading to the webhook over HTTPS as Wittra's cloud
// would: by name, verifying the chain against pebble's root only.
func postHTTPS(t *testing.T, addr string, roots *x509.CertPool) *x509.Certificate {
	t.Helper()
	c := &http.Client{
		Timeout: time.Minute,
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: roots, ServerName: acmeTestDomain},
			DisableKeepAlives: true,
		},
	}
	resp, err := c.Post("https://"+addr+"/wittra", "application/json", strings.NewReader(`{"deviceId":"D1","payloadId":"p-acme-1"}`))
	if err != nil {
		t.Fatalf("HTTPS post: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HTTPS post: %d %s", resp.StatusCode, body)
	}
	leaf := resp.TLS.PeerCertificates[0]
	if !slices.Contains(leaf.DNSNames, acmeTestDomain) {
		t.Fatalf("served certificate names %v, want %s", leaf.DNSNames, acmeTestDomain)
	}
	return leaf
}

func TestACMETLSALPNObtainsServesAndCachesCertificate(t *testing.T) {
	dir := t.TempDir()
	listen := testutil.FreeAddrs(t, 1)[0]
	p := startPebble(t, 1 /* http-01 not used */, portOf(t, listen))
	cacheDir := filepath.Join(dir, "acme")
	sections := map[string]string{
		"webhook": acmeWebhook(listen, p, cacheDir, ""),
		"admin":   "admin: {listen: 127.0.0.1:0}",
	}
	tg := startTestGateway(t, dir, sections)
	expiry := waitCertExpiry(t, tg, p)
	if exp := time.Unix(int64(expiry), 0); time.Until(exp) < 24*time.Hour {
		t.Fatalf("exported expiry %v is not a fresh certificate's", exp)
	}
	leaf := postHTTPS(t, listen, p.roots)
	// Last is the sequence of the newest message ever queued (the local
	// sink may already have taken it off the queue).
	if st, err := tg.g.queue.Stats(); err != nil || st.Last == 0 {
		t.Fatalf("the HTTPS post was not queued: %+v %v", st, err)
	}
	if got := p.validatedBy(t, leaf); !slices.Equal(got, []string{"tls-alpn-01"}) {
		t.Fatalf("pebble validated %v, want [tls-alpn-01]", got)
	}
	if err := tg.stop(); err != nil {
		t.Fatal(err)
	}

	// The certificate is cached: a restart with the CA gone serves the
	// same certificate.
	p.close()
	tg2 := startTestGateway(t, dir, sections)
	waitCertExpiry(t, tg2, p)
	again := postHTTPS(t, listen, p.roots)
	if !again.Equal(leaf) {
		t.Fatalf("after a restart a different certificate was served (serial %v, was %v)", again.SerialNumber, leaf.SerialNumber)
	}
}

func TestACMEHTTP01(t *testing.T) {
	dir := t.TempDir()
	addrs := testutil.FreeAddrs(t, 3)
	listen, httpListen, dead := addrs[0], addrs[1], addrs[2]
	// tls-alpn-01, which autocert tries first, is validated on a port
	// nobody listens on, so the certificate can only come through http-01.
	p := startPebble(t, portOf(t, httpListen), portOf(t, dead))
	tg := startTestGateway(t, dir, map[string]string{
		"webhook": acmeWebhook(listen, p, filepath.Join(dir, "acme"), httpListen),
		"admin":   "admin: {listen: 127.0.0.1:0}",
	})
	waitCertExpiry(t, tg, p)
	leaf := postHTTPS(t, listen, p.roots)
	if got := p.validatedBy(t, leaf); !slices.Equal(got, []string{"http-01"}) {
		t.Fatalf("pebble validated %v, want [http-01]", got)
	}
	// Anything but a challenge on the http-01 port is sent to HTTPS.
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get("http://" + httpListen + "/wittra")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(resp.Header.Get("Location"), "https://") {
		t.Fatalf("plain GET on http_listen: %d %q, want a redirect to https", resp.StatusCode, resp.Header.Get("Location"))
	}
}
