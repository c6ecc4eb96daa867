package cumulocity

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"wittra-gateway/internal/certreload"
	"wittra-gateway/internal/clock"
)

// Certificate login (X.509 device certificates, as thin-edge.io uses).
//
// With tls.cert_file/key_file and no password the certificate is the
// login. The tenant trusts the CA that issued it; Cumulocity takes the
// device identity from the certificate's common name (CN).
//
//   - mqtt: mutual TLS (port 8883 when the URL has none), client id = the
//     CN, no username or password in CONNECT. The CN must equal GatewayID
//     (the gateway's external id) so that the gateway does not silently
//     become another device; ClientID overrides that check, and the device
//     is then the CN.
//   - rest: the certificate is traded for a device access token at
//     POST /devicecontrol/deviceAccessToken on the mTLS endpoint (TokenURL,
//     https://<host>:8443 by default), sent as "Authorization: Bearer". The
//     token is fetched again before its JWT "exp" claim and whenever a
//     request gets 401. The CN must equal GatewayID.
//
// The certificate and key are re-read when the files change (the next
// handshake uses them); the expiry time is exposed for /metrics and logged
// as a warning from expiryWarning before it, at start and then daily.

const (
	expiryWarning    = 30 * 24 * time.Hour
	expiryCheckEvery = time.Hour
	expiryRepeat     = 24 * time.Hour
	// tokenMargin renews a token this long before it expires.
	tokenMargin = time.Minute
	// defaultTokenPort is Cumulocity's mTLS REST port.
	defaultTokenPort = "8443"
)

// buildTLS builds the client TLS configuration, loads the client
// certificate (through a reloader) and settles the device identity.
func (s *Sink) buildTLS(u *url.URL) (*tls.Config, error) {
	cfg, err := s.cfg.TLS.ClientWithoutCert()
	if err != nil {
		return nil, err
	}
	cfg.ServerName = u.Hostname()
	if s.cfg.TLS.CertFile == "" {
		return cfg, nil
	}
	r, err := certreload.New(s.cfg.TLS.CertFile, s.cfg.TLS.KeyFile, s.log)
	if err != nil {
		return nil, fmt.Errorf("client certificate: %w", err)
	}
	s.certs = r
	cfg.GetClientCertificate = s.clientCertificate
	if !s.certLogin {
		return cfg, nil // password login; the certificate is only presented
	}
	s.identity, s.clientID, s.cfg.TokenURL, err = certLoginIdentity(s.cfg, u, r.Leaf())
	if err != nil {
		return nil, err
	}
	return cfg, nil
}

// certLoginIdentity settles who the gateway is with certificate login:
// the device identity (the certificate's common name), the MQTT client id
// and, in rest mode, the token URL.
func certLoginIdentity(cfg Config, u *url.URL, leaf *x509.Certificate) (identity, clientID, tokURL string, err error) {
	cn := leaf.Subject.CommonName
	identity, clientID = cn, cn
	switch {
	case cn == "":
		return "", "", "", fmt.Errorf("client certificate %s has no common name: Cumulocity takes the device identity from it", cfg.TLS.CertFile)
	case cfg.ClientID != "":
		id, err := clientIDIdentifier(cfg.ClientID)
		if err != nil {
			return "", "", "", err
		}
		if id != cn {
			return "", "", "", fmt.Errorf("client_id %q names device %q, but the certificate's common name is %q: Cumulocity refuses a client id other than the common name", cfg.ClientID, id, cn)
		}
		clientID = cfg.ClientID
	case cn != cfg.GatewayID:
		return "", "", "", fmt.Errorf("the certificate's common name %q is not gateway.id %q: Cumulocity makes the common name the device's external id; set gateway.id: %q, or (mode mqtt) client_id: %q to connect as that device anyway",
			cn, cfg.GatewayID, cn, cn)
	}
	switch {
	case cfg.Mode == ModeMQTT && (u.Scheme == "tcp" || u.Scheme == "mqtt"):
		return "", "", "", fmt.Errorf("url %q: certificate login needs TLS: use mqtts://%s (port 8883 by default)", cfg.URL, u.Hostname())
	case cfg.Mode == ModeREST:
		if tokURL, err = tokenURL(cfg.TokenURL, u); err != nil {
			return "", "", "", err
		}
	}
	return identity, clientID, tokURL, nil
}

// CheckCertificateLogin checks what New checks about certificate login
// (cfg with TLS.CertFile and no Password) without connecting: the pair
// loads, its common name fits GatewayID or ClientID, the URL scheme fits.
// check-config uses it.
func CheckCertificateLogin(cfg Config) error {
	if cfg.Mode == "" {
		cfg.Mode = ModeMQTT
	}
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Host == "" {
		return fmt.Errorf("url %q: want scheme://host[:port]", cfg.URL)
	}
	if cfg.ClientID != "" && cfg.Mode != ModeMQTT {
		return errors.New("client_id is only used by mode mqtt with certificate login")
	}
	r, err := certreload.New(cfg.TLS.CertFile, cfg.TLS.KeyFile, zerolog.Nop())
	if err != nil {
		return fmt.Errorf("client certificate: %w", err)
	}
	_, _, _, err = certLoginIdentity(cfg, u, r.Leaf())
	return err
}

// clientIDIdentifier returns the device identifier of a client id
// [type:]identifier[:template].
func clientIDIdentifier(cid string) (string, error) {
	parts := strings.Split(cid, ":")
	id := ""
	switch len(parts) {
	case 1:
		id = parts[0]
	case 2:
		id = parts[0]
		if parts[0] == "d" {
			id = parts[1]
		}
	case 3:
		id = parts[1]
	}
	if id == "" || strings.ContainsAny(cid, "/+#\x00") {
		return "", fmt.Errorf("client_id %q: want [d:]<common name>[:<template>]", cid)
	}
	return id, nil
}

func tokenURL(configured string, u *url.URL) (string, error) {
	if configured == "" {
		return "https://" + net.JoinHostPort(u.Hostname(), defaultTokenPort), nil
	}
	t, err := url.Parse(configured)
	if err != nil || t.Scheme != "https" || t.Host == "" {
		return "", fmt.Errorf("token_url %q: want https://host[:port]", configured)
	}
	return strings.TrimRight(configured, "/"), nil
}

// clientCertificate is the TLS hook: the current certificate, re-read if
// its files changed.
func (s *Sink) clientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	c := s.certs.Current()
	if s.certLogin && c.Leaf.Subject.CommonName != s.identity {
		s.expiry.logOnce("cn|"+c.Leaf.SerialNumber.String(), func() {
			s.log.Error().Str("common_name", c.Leaf.Subject.CommonName).Str("device", s.identity).
				Msg("the renewed client certificate names another device; Cumulocity will refuse it (restart to adopt the new identity)")
		})
	}
	return c, nil
}

// CertificateExpiry returns when the client certificate expires (false
// without one).
func (s *Sink) CertificateExpiry() (time.Time, bool) {
	if s.certs == nil {
		return time.Time{}, false
	}
	return s.certs.Current().Leaf.NotAfter, true
}

// expiryWatch remembers the last expiry warning (one certificate at a
// time, so bounded).
type expiryWatch struct {
	mu     sync.Mutex
	key    string
	at     time.Time
	logged map[string]bool // one-off messages; at most a few entries per renewal
}

func (w *expiryWatch) logOnce(key string, log func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.logged == nil || len(w.logged) > 16 {
		w.logged = map[string]bool{}
	}
	if !w.logged[key] {
		w.logged[key] = true
		log()
	}
}

// checkExpiry logs a warning when the certificate ends within
// expiryWarning (an error once it has ended), at most once per
// expiryRepeat for the same certificate.
func (s *Sink) checkExpiry() {
	leaf := s.certs.Current().Leaf
	now := s.cfg.now()
	left := leaf.NotAfter.Sub(now)
	if left > expiryWarning {
		return
	}
	key := leaf.SerialNumber.String() + "|" + leaf.NotAfter.String()
	w := &s.expiry
	w.mu.Lock()
	if w.key == key && now.Sub(w.at) < expiryRepeat {
		w.mu.Unlock()
		return
	}
	w.key, w.at = key, now
	w.mu.Unlock()
	ev := s.log.Warn()
	msg := "client certificate expires soon: renew it and replace tls.cert_file and key_file (picked up without a restart)"
	if left <= 0 {
		ev = s.log.Error()
		msg = "client certificate has expired: Cumulocity refuses it; renew it and replace tls.cert_file and key_file"
	}
	ev.Time("not_after", leaf.NotAfter).Int("days_left", int(left.Hours()/24)).
		Str("cert_file", s.cfg.TLS.CertFile).Msg(msg)
}

func (s *Sink) watchExpiry() {
	clock.Every(s.closeCtx.Done(), expiryCheckEvery, s.checkExpiry)
}

// Connected reports whether the sink can reach Cumulocity now: in mqtt
// mode the connection is up; in rest mode the last request got an answer
// that was not a login refusal.
func (s *Sink) Connected() bool {
	if s.mqtt != nil {
		return s.mqtt.pub.Connected()
	}
	return s.rest.reachable.Load()
}

// Device access tokens --------------------------------------------------------

// errTokenRefused is a token request the platform refused.
var errTokenRefused = errors.New("device access token refused")

// tokenSource holds the current device access token.
type tokenSource struct {
	s   *Sink
	hc  *http.Client
	url string

	mu    sync.Mutex
	token string
	exp   time.Time // zero: unknown (renewed on 401 only)
}

// get returns a valid token, fetching one if there is none or it expires
// within tokenMargin.
func (t *tokenSource) get(ctx context.Context) (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.token != "" && (t.exp.IsZero() || t.s.cfg.now().Before(t.exp.Add(-tokenMargin))) {
		return t.token, nil
	}
	return t.fetch(ctx)
}

// refused drops tok after a 401 so the next get fetches a new one.
func (t *tokenSource) refused(tok string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.token == tok {
		t.token, t.exp = "", time.Time{}
	}
}

// fetch posts the certificate chain (mu held).
func (t *tokenSource) fetch(ctx context.Context) (string, error) {
	ctx, cancel := t.s.opCtx(ctx)
	defer cancel()
	const path = "/devicecontrol/deviceAccessToken"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url+path, nil)
	if err != nil {
		return "", fmt.Errorf("POST %s: %w", path, err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("X-Ssl-Cert-Chain", certChainHeader(t.s.certs.Current()))
	resp, err := t.hc.Do(req)
	if err != nil {
		if t.s.closeCtx.Err() != nil {
			return "", ErrClosed
		}
		return "", fmt.Errorf("POST %s%s: %w", t.url, path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%w: POST %s%s: %d %s (is the issuing CA a trusted certificate of the tenant, with auto-registration?)",
			errTokenRefused, t.url, path, resp.StatusCode, strings.TrimSpace(string(data[:min(len(data), 512)])))
	}
	var body struct {
		AccessToken string `json:"accessToken"`
	}
	if err := json.Unmarshal(data, &body); err != nil || body.AccessToken == "" {
		return "", fmt.Errorf("POST %s: reply has no accessToken", path)
	}
	t.token, t.exp = body.AccessToken, jwtExpiry(body.AccessToken)
	t.s.log.Info().Time("expires", t.exp).Msg("device access token obtained with the client certificate")
	return t.token, nil
}

// certChainHeader is the X-Ssl-Cert-Chain value: the PEM chain with line
// breaks replaced by spaces.
func certChainHeader(c *tls.Certificate) string {
	var b bytes.Buffer
	for _, der := range c.Certificate {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	}
	return strings.Join(strings.Fields(b.String()), " ")
}

// jwtExpiry reads the exp claim of a JWT without checking it (the platform
// checks its own tokens); zero if there is none.
func jwtExpiry(tok string) time.Time {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return time.Time{}
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}
	}
	var claims struct {
		Exp json.Number `json:"exp"`
	}
	if json.Unmarshal(raw, &claims) != nil {
		return time.Time{}
	}
	sec, err := claims.Exp.Int64()
	if err != nil || sec <= 0 {
		return time.Time{}
	}
	return time.Unix(sec, 0)
}
