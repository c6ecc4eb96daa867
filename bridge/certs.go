package bridge

import (
	"crypto/tls"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// certCheckInterval bounds how often the files are stat'ed: at most once a
// second, on a handshake, so a renewed certificate (certbot) is served
// within a second without a restart and without a watcher goroutine.
const certCheckInterval = time.Second

// CertReloader serves a certificate from files and re-reads them when they
// change. A renewal that fails to load keeps the previous certificate.
type CertReloader struct {
	certFile, keyFile string
	log               zerolog.Logger

	mu        sync.Mutex
	cert      *tls.Certificate
	stamp     string // mod times and sizes of both files
	lastCheck time.Time
}

// NewCertReloader loads the pair once; an unusable pair is an error.
func NewCertReloader(certFile, keyFile string, log zerolog.Logger) (*CertReloader, error) {
	r := &CertReloader{certFile: certFile, keyFile: keyFile, log: log}
	stamp, err := r.fileStamp()
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load TLS certificate %s: %w", certFile, err)
	}
	r.cert, r.stamp, r.lastCheck = &cert, stamp, time.Now()
	return r, nil
}

func (r *CertReloader) fileStamp() (string, error) {
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

// GetCertificate is the tls.Config hook.
func (r *CertReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.lastCheck) < certCheckInterval {
		return r.cert, nil
	}
	r.lastCheck = time.Now()
	stamp, err := r.fileStamp()
	if err != nil || stamp == r.stamp {
		return r.cert, nil
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		// Often the cert is written before the key: try again next check.
		r.log.Warn().Err(err).Msg("TLS certificate changed but does not load; still serving the previous one")
		return r.cert, nil
	}
	r.cert, r.stamp = &cert, stamp
	r.log.Info().Str("cert_file", r.certFile).Msg("TLS certificate reloaded")
	return r.cert, nil
}

// ServerTLSConfig is the webhook's TLS: 1.2 minimum with forward-secret
// AEAD suites only (1.3 suites are not configurable and all good).
func ServerTLSConfig(r *CertReloader) *tls.Config {
	return serverTLSConfig(r.GetCertificate)
}

// NotAfter is when the certificate served now expires.
func (r *CertReloader) NotAfter() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cert == nil || r.cert.Leaf == nil {
		return time.Time{}
	}
	return r.cert.Leaf.NotAfter
}

func serverTLSConfig(get func(*tls.ClientHelloInfo) (*tls.Certificate, error)) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: get,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
	}
}
