package c8yfake

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// Certificate authentication: Cumulocity's device certificates (X.509).
// The tenant trusts uploaded CA certificates; a device connects to the MQTT
// TLS port with a certificate issued by one of them and is the device whose
// external id is the certificate's common name (auto-registration: the
// device user "device_<CN>" is created on first connect). Over REST a
// device trades its certificate for a token at
// POST /devicecontrol/deviceAccessToken on an mTLS endpoint and then sends
// "Authorization: Bearer <token>".

// CertAuth enables the certificate listeners.
type CertAuth struct {
	// ServerCert is the certificate the fake's TLS listeners present.
	ServerCert tls.Certificate
	// TrustedCAs are the tenant's trusted certificates: a client
	// certificate must chain to one of them.
	TrustedCAs *x509.CertPool
	// TokenLifetime of device access tokens; default 1 hour (Cumulocity's
	// default).
	TokenLifetime time.Duration
	// Now is the clock for certificate validity and token expiry;
	// time.Now when nil.
	Now func() time.Time
}

const (
	mqttsListenerID = "c8y-mqtts"
	certUserPrefix  = "device_"
)

// certListener is the state of the certificate listeners.
type certListener struct {
	opts     CertAuth
	mqtts    *listeners.TCP
	addr     string
	tokenSrv *http.Server
	tokenLn  net.Listener
	tokens   map[string]deviceToken // guarded by Server.mu
	issued   int                    // tokens issued, guarded by Server.mu
}

type deviceToken struct {
	user    string
	expires time.Time
}

func (c *CertAuth) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// tlsConfig requires a client certificate and verifies it against the
// trusted CAs itself, so the fake can record why it refused one.
func (s *Server) certTLSConfig(channel string) *tls.Config {
	ca := s.opts.CertAuth
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{ca.ServerCert},
		ClientAuth:   tls.RequireAnyClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			err := verifyClient(cs, ca.TrustedCAs, ca.now())
			if err != nil {
				cn := ""
				if len(cs.PeerCertificates) > 0 {
					cn = cs.PeerCertificates[0].Subject.CommonName
				}
				s.mu.Lock()
				s.st.addError(channel, cn, "TLS handshake refused: "+err.Error())
				s.mu.Unlock()
			}
			return err
		},
	}
}

func verifyClient(cs tls.ConnectionState, roots *x509.CertPool, now time.Time) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("no client certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return fmt.Errorf("client certificate: %w", err)
	}
	if cs.PeerCertificates[0].Subject.CommonName == "" {
		return errors.New("client certificate has no common name")
	}
	return nil
}

// startCertListeners starts the MQTT TLS listener (on mochi) and the HTTPS
// token endpoint.
func (s *Server) startCertListeners() error {
	ca := s.opts.CertAuth
	if ca.TrustedCAs == nil || len(ca.ServerCert.Certificate) == 0 {
		return errors.New("CertAuth needs ServerCert and TrustedCAs")
	}
	if ca.TokenLifetime <= 0 {
		ca.TokenLifetime = time.Hour
	}
	cl := &certListener{opts: *ca, tokens: map[string]deviceToken{}}
	cl.mqtts = listeners.NewTCP(listeners.Config{ID: mqttsListenerID, Address: "127.0.0.1:0", TLSConfig: s.certTLSConfig("mqtt")})
	if err := s.mochi.AddListener(cl.mqtts); err != nil {
		return fmt.Errorf("listen mqtts: %w", err)
	}
	cl.addr = cl.mqtts.Address()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", s.certTLSConfig("rest"))
	if err != nil {
		return fmt.Errorf("listen token endpoint: %w", err)
	}
	cl.tokenLn = ln
	mux := http.NewServeMux()
	mux.HandleFunc("POST /devicecontrol/deviceAccessToken", s.postDeviceAccessToken)
	cl.tokenSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	s.certs = cl
	go func() { _ = cl.tokenSrv.Serve(ln) }()
	return nil
}

// MQTTSURL is the MQTT endpoint with certificate authentication,
// mqtts://127.0.0.1:<port> ("" without CertAuth).
func (s *Server) MQTTSURL() string {
	if s.certs == nil {
		return ""
	}
	return "mqtts://" + s.certs.addr
}

// TokenURL is the mTLS REST endpoint that issues device access tokens,
// https://127.0.0.1:<port> ("" without CertAuth).
func (s *Server) TokenURL() string {
	if s.certs == nil {
		return ""
	}
	return "https://" + s.certs.tokenLn.Addr().String()
}

// certIdentity returns the common name and serial number of the verified
// client certificate of a connection on the certificate listener.
func certIdentity(cl *mqtt.Client) (cn, serial string, ok bool) {
	if cl.Net.Listener != mqttsListenerID {
		return "", "", false
	}
	tc, isTLS := cl.Net.Conn.(*tls.Conn)
	if !isTLS {
		return "", "", false
	}
	peers := tc.ConnectionState().PeerCertificates
	if len(peers) == 0 {
		return "", "", false
	}
	return peers[0].Subject.CommonName, peers[0].SerialNumber.String(), true
}

// postDeviceAccessToken issues a token for the certificate's device. The
// X-Ssl-Cert-Chain header, when sent, must start with the certificate the
// connection presented.
func (s *Server) postDeviceAccessToken(w http.ResponseWriter, r *http.Request) {
	reply := func(status int, body any) {
		b, _ := json.Marshal(body)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write(b)
	}
	refuse := func(cn, msg string) {
		s.mu.Lock()
		s.st.addError("rest", cn, "401 POST /devicecontrol/deviceAccessToken: "+msg)
		s.mu.Unlock()
		reply(http.StatusUnauthorized, map[string]string{"error": "security/Unauthorized", "message": msg, "info": errorInfo})
	}
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		refuse("", "no client certificate")
		return
	}
	peer := r.TLS.PeerCertificates[0]
	cn := peer.Subject.CommonName
	if h := r.Header.Get("X-Ssl-Cert-Chain"); h != "" {
		first, err := firstChainCert(h)
		if err != nil || !first.Equal(peer) {
			refuse(cn, "X-Ssl-Cert-Chain does not start with the client certificate")
			return
		}
	}
	now := s.opts.CertAuth.now()
	s.mu.Lock()
	cl := s.certs
	for k, t := range cl.tokens { // bounded: expired tokens go on every issue
		if !now.Before(t.expires) {
			delete(cl.tokens, k)
		}
	}
	tok := newJWT(cn, s.opts.Tenant, now.Add(cl.opts.TokenLifetime))
	cl.tokens[tok] = deviceToken{user: certUserPrefix + cn, expires: now.Add(cl.opts.TokenLifetime)}
	cl.issued++
	s.mu.Unlock()
	reply(http.StatusOK, map[string]string{"accessToken": tok})
}

// firstChainCert reads the first certificate of an X-Ssl-Cert-Chain header:
// PEM whose line breaks were replaced by spaces.
func firstChainCert(h string) (*x509.Certificate, error) {
	const begin, end = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
	i := strings.Index(h, begin)
	j := strings.Index(h, end)
	if i < 0 || j < i {
		return nil, errors.New("no certificate")
	}
	body := strings.Join(strings.Fields(h[i+len(begin):j]), "")
	der, err := base64.StdEncoding.DecodeString(body)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// newJWT makes a JWT-shaped token with sub, ten and exp claims. The
// signature is random bytes: the fake only looks tokens up.
func newJWT(sub, tenant string, exp time.Time) string {
	enc := base64.RawURLEncoding
	head, _ := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT"})
	claims, _ := json.Marshal(map[string]any{"sub": certUserPrefix + sub, "ten": tenant, "exp": exp.Unix()})
	sig := make([]byte, 32)
	_, _ = rand.Read(sig)
	return enc.EncodeToString(head) + "." + enc.EncodeToString(claims) + "." + enc.EncodeToString(sig)
}

// bearerUser returns the user of a valid device access token.
func (s *Server) bearerUser(h string) (string, bool) {
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || s.certs == nil {
		return "", false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.certs.tokens[strings.TrimSpace(tok)]
	if !ok || !s.opts.CertAuth.now().Before(t.expires) {
		return "", false
	}
	return t.user, true
}

// RevokeTokens invalidates every device access token (as a logout or a
// token lifespan change would); the next REST call with one gets 401.
func (s *Server) RevokeTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.certs != nil {
		clear(s.certs.tokens)
	}
}

// TokensIssued returns how many device access tokens were issued.
func (s *Server) TokensIssued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.certs == nil {
		return 0
	}
	return s.certs.issued
}

func (s *Server) closeCertListeners() error {
	if s.certs == nil {
		return nil
	}
	return s.certs.tokenSrv.Close()
}
