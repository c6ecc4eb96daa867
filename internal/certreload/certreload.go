// Package certreload serves a TLS certificate and key from files and
// re-reads them when they change, so a renewed certificate is used without
// a restart. The webhook (server side) and the Cumulocity sink (client
// side) share it.
package certreload

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
)

// CheckInterval bounds how often the files are stat'ed: at most once a
// second, on a handshake, so a renewed certificate (certbot) is used within
// a second without a restart and without a watcher goroutine.
const CheckInterval = time.Second

// Reloader serves a certificate from files and re-reads them when they
// change. A renewal that fails to load keeps the previous certificate.
type Reloader struct {
	certFile, keyFile string
	log               zerolog.Logger
	now               func() time.Time

	// Handshakes only load cert: one of them at a time (checking) stats
	// and reads the files, the others are served the current certificate
	// meanwhile, so a slow read never holds up a handshake.
	cert      atomic.Pointer[tls.Certificate]
	checking  atomic.Bool
	lastCheck atomic.Int64 // Unix ns
	stamp     string       // mod times and sizes of both files; owned by the checker
}

// New loads the pair once; an unusable pair is an error.
func New(certFile, keyFile string, log zerolog.Logger) (*Reloader, error) {
	r := &Reloader{certFile: certFile, keyFile: keyFile, log: log, now: time.Now}
	stamp, err := r.fileStamp()
	if err != nil {
		return nil, err
	}
	cert, err := load(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	r.cert.Store(cert)
	r.stamp = stamp
	r.lastCheck.Store(r.now().UnixNano())
	return r, nil
}

// load reads the pair and makes sure Leaf is parsed (callers read the
// common name and expiry from it).
func load(certFile, keyFile string) (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load TLS certificate %s: %w", certFile, err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("parse TLS certificate %s: %w", certFile, err)
		}
	}
	return &cert, nil
}

func (r *Reloader) fileStamp() (string, error) {
	var stamp string
	for _, f := range []string{r.certFile, r.keyFile} {
		fi, err := os.Stat(f)
		if err != nil {
			return "", fmt.Errorf("TLS file: %w", err)
		}
		stamp += fmt.Sprintf("%d/%d;", fi.ModTime().UnixNano(), fi.Size())
	}
	return stamp, nil
}

// Current returns the certificate, re-reading the files first if they
// changed (checked at most once per CheckInterval, by one caller at a time).
func (r *Reloader) Current() *tls.Certificate {
	now := r.now()
	if now.UnixNano()-r.lastCheck.Load() < int64(CheckInterval) || !r.checking.CompareAndSwap(false, true) {
		return r.cert.Load()
	}
	defer r.checking.Store(false)
	r.lastCheck.Store(now.UnixNano())
	stamp, err := r.fileStamp()
	if err != nil || stamp == r.stamp {
		return r.cert.Load()
	}
	cert, err := load(r.certFile, r.keyFile)
	if err != nil {
		// Often the cert is written before the key: try again next check.
		r.log.Warn().Err(err).Msg("TLS certificate changed but does not load; still serving the previous one")
		return r.cert.Load()
	}
	r.cert.Store(cert)
	r.stamp = stamp
	r.log.Info().Str("cert_file", r.certFile).Time("not_after", cert.Leaf.NotAfter).Msg("TLS certificate reloaded")
	return cert
}

// Leaf returns the parsed current certificate (no file check).
func (r *Reloader) Leaf() *x509.Certificate {
	return r.cert.Load().Leaf
}

// GetCertificate is the server-side tls.Config hook.
func (r *Reloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return r.Current(), nil
}

// GetClientCertificate is the client-side tls.Config hook.
func (r *Reloader) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return r.Current(), nil
}
