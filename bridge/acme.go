package bridge

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"

	"wittra-gateway/internal/field"
)

// LetsEncryptProduction is the default ACME directory.
const LetsEncryptProduction = autocert.DefaultACMEDirectory

// ACMEConfig asks an ACME CA (Let's Encrypt by default) for the webhook's
// certificate instead of reading it from files.
type ACMEConfig struct {
	Domains      []string // the only names a certificate is requested for (host policy)
	Email        string   // contact the CA may write to about expiry; optional
	CacheDir     string   // account key and certificates, kept across restarts (created 0700)
	DirectoryURL string   // "" means LetsEncryptProduction
	CAFile       string   // PEM roots trusted for DirectoryURL besides the system's (private CAs); optional
	// RenewBefore is how long before expiry a certificate is renewed;
	// 0 means autocert's 30 days.
	RenewBefore time.Duration
}

// Validate reports what can be checked without the network, each problem
// a *field.Error naming its key under the config file's webhook.tls.acme.
func (c ACMEConfig) Validate() error {
	var errs field.List
	if len(c.Domains) == 0 {
		errs.Add("domains", "at least one domain is required")
	}
	seen := map[string]int{}
	for i, d := range c.Domains {
		key := fmt.Sprintf("domains[%d]", i)
		if j, dup := seen[strings.ToLower(d)]; dup {
			errs.Add(key, "duplicate of domains[%d]", j)
		} else if err := CheckACMEDomain(d); err != nil {
			errs.Add(key, "%v", err)
		}
		seen[strings.ToLower(d)] = i
	}
	if c.CacheDir == "" {
		errs.Add("cache_dir", "must not be empty")
	}
	if c.DirectoryURL != "" {
		if u, err := url.Parse(c.DirectoryURL); err != nil || u.Scheme != "https" || u.Host == "" {
			errs.Add("directory_url", "must be an https:// URL")
		}
	}
	if c.Email != "" && !strings.Contains(c.Email, "@") {
		errs.Add("email", "must be an address (name@host)")
	}
	if c.RenewBefore < 0 {
		errs.Add("renew_before", "must not be negative")
	}
	return errs.Err()
}

// CheckACMEDomain accepts a DNS name a CA can validate over tls-alpn-01 or
// http-01: at least two labels, no wildcard (those need dns-01), no IP.
func CheckACMEDomain(d string) error {
	switch {
	case d == "":
		return errors.New("empty")
	case strings.Contains(d, "*"):
		return errors.New("wildcards need DNS validation, which is not supported")
	case net.ParseIP(d) != nil:
		return errors.New("an IP address, not a DNS name")
	case !strings.Contains(strings.Trim(d, "."), "."):
		return errors.New("needs at least two labels (e.g. gw.example.com)")
	case strings.HasSuffix(d, "."):
		return errors.New("must not end with a dot")
	}
	for _, r := range d {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return fmt.Errorf("character %q is not allowed in a DNS name", r)
		}
	}
	return nil
}

// ACME serves certificates obtained and renewed by autocert and keeps the
// expiry of each configured domain for metrics and logs.
type ACME struct {
	cfg ACMEConfig
	m   *autocert.Manager
	log zerolog.Logger

	mu     sync.Mutex
	expiry map[string]time.Time // one entry per configured domain at most
}

// acmeCheckInterval is how often the served certificates are looked at (to
// log a renewal, update the expiry metric and warn when renewal is overdue).
const acmeCheckInterval = time.Hour

// acmeRetryMin and acmeRetryMax bound the wait after a failed issuance.
// Let's Encrypt allows 5 failed validations per hostname and hour.
const (
	acmeRetryMin = time.Minute
	acmeRetryMax = time.Hour
)

// NewACME prepares the manager; nothing is requested before Run or the first
// TLS handshake.
func NewACME(cfg ACMEConfig, log zerolog.Logger) (*ACME, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("acme: %w", err)
	}
	if err := os.MkdirAll(cfg.CacheDir, 0o700); err != nil {
		return nil, fmt.Errorf("acme cache_dir: %w", err)
	}
	domains := make([]string, len(cfg.Domains))
	for i, d := range cfg.Domains {
		domains[i] = strings.ToLower(d) // SNI is compared in lower case
	}
	cfg.Domains = domains
	dirURL := cfg.DirectoryURL
	if dirURL == "" {
		dirURL = LetsEncryptProduction
	}
	client := &acme.Client{DirectoryURL: dirURL, UserAgent: "wittra-gateway"}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("acme ca_file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("acme ca_file %s: no PEM certificate in it", cfg.CAFile)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		client.HTTPClient = &http.Client{Transport: tr}
	}
	a := &ACME{cfg: cfg, log: log, expiry: make(map[string]time.Time, len(cfg.Domains))}
	a.m = &autocert.Manager{
		Prompt:      autocert.AcceptTOS,
		Cache:       autocert.DirCache(cfg.CacheDir),
		HostPolicy:  autocert.HostWhitelist(cfg.Domains...),
		Email:       cfg.Email,
		Client:      client,
		RenewBefore: cfg.RenewBefore,
	}
	return a, nil
}

// TLSConfig is the webhook's server TLS with the tls-alpn-01 protocol added,
// so the CA validates on the webhook's own port.
func (a *ACME) TLSConfig() *tls.Config {
	c := serverTLSConfig(a.GetCertificate)
	c.NextProtos = []string{"h2", "http/1.1", acme.ALPNProto}
	return c
}

// HTTPHandler answers http-01 challenges and redirects everything else to
// HTTPS. Serving it (on port 80) makes http-01 available besides tls-alpn-01.
func (a *ACME) HTTPHandler() http.Handler {
	h := a.m.HTTPHandler(nil)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// autocert checks the Host header, port included, against the
		// domains; a CA (or a port forward) on a port other than 80 sends
		// one, and the challenge is for the name whatever the port.
		if host, _, err := net.SplitHostPort(r.Host); err == nil {
			r = r.WithContext(r.Context())
			r.Host = host
		}
		h.ServeHTTP(w, r)
	})
}

// GetCertificate is the tls.Config hook: autocert's, recording each
// certificate served so a new one is logged and its expiry exported.
func (a *ACME) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	cert, err := a.m.GetCertificate(hello)
	if err != nil || isChallengeHello(hello) {
		return cert, err
	}
	a.record(hello.ServerName, cert)
	return cert, nil
}

func isChallengeHello(hello *tls.ClientHelloInfo) bool {
	return len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == acme.ALPNProto
}

func (a *ACME) record(name string, cert *tls.Certificate) {
	if cert == nil || cert.Leaf == nil {
		return
	}
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if !slices.Contains(a.cfg.Domains, name) {
		return // bounded: only configured domains are kept
	}
	a.mu.Lock()
	prev, seen := a.expiry[name]
	a.expiry[name] = cert.Leaf.NotAfter
	a.mu.Unlock()
	if seen && prev.Equal(cert.Leaf.NotAfter) {
		return
	}
	ev := a.log.Info().Str("domain", name).Time("not_after", cert.Leaf.NotAfter).Str("issuer", cert.Leaf.Issuer.CommonName)
	if seen {
		ev.Msg("TLS certificate renewed")
	} else {
		ev.Msg("TLS certificate ready")
	}
}

// Expiry returns the expiry of each domain's certificate served so far.
func (a *ACME) Expiry() map[string]time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]time.Time, len(a.expiry))
	for k, v := range a.expiry {
		out[k] = v
	}
	return out
}

// Run obtains every domain's certificate at start (rather than on the first
// webhook call, which would wait for it), retries failures with backoff, and
// then looks at the certificates every hour. It returns when ctx ends.
func (a *ACME) Run(ctx context.Context) {
	retry := acmeRetryMin
	for {
		wait := acmeCheckInterval
		if !a.checkAll(ctx) {
			wait, retry = retry, min(2*retry, acmeRetryMax)
		} else {
			retry = acmeRetryMin
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// checkAll fetches each domain's certificate (from memory, the cache or the
// CA); false when one could not be had.
func (a *ACME) checkAll(ctx context.Context) bool {
	ok := true
	for _, d := range a.cfg.Domains {
		cert, err := a.fetch(ctx, d)
		if ctx.Err() != nil {
			return ok
		}
		if err != nil {
			ok = false
			a.log.Error().Err(err).Str("domain", d).Msg("TLS certificate: ACME issuance failed; will retry (clients of this name fail until then)")
			continue
		}
		a.record(d, cert)
		renewBefore := a.cfg.RenewBefore
		if renewBefore == 0 {
			renewBefore = 30 * 24 * time.Hour // autocert's default
		}
		if left := time.Until(cert.Leaf.NotAfter); left < renewBefore/2 {
			a.log.Warn().Str("domain", d).Time("not_after", cert.Leaf.NotAfter).Stringer("left", left).
				Msg("TLS certificate: renewal is overdue; check that the CA can reach this gateway")
		}
	}
	return ok
}

// fetch asks autocert as a modern client would (ECDSA). autocert issues
// with its own 5-minute timeout; when ctx ends first the call is left to
// finish in the background rather than hold up shutdown.
func (a *ACME) fetch(ctx context.Context, domain string) (*tls.Certificate, error) {
	hello := &tls.ClientHelloInfo{
		ServerName:        domain,
		SignatureSchemes:  []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256},
		SupportedCurves:   []tls.CurveID{tls.CurveP256},
		CipherSuites:      []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
		SupportedVersions: []uint16{tls.VersionTLS13, tls.VersionTLS12},
	}
	type result struct {
		cert *tls.Certificate
		err  error
	}
	done := make(chan result, 1)
	go func() {
		c, err := a.m.GetCertificate(hello)
		done <- result{c, err}
	}()
	select {
	case r := <-done:
		if r.err == nil && (r.cert == nil || r.cert.Leaf == nil) {
			r.err = errors.New("no certificate")
		}
		return r.cert, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
