package bridge

import (
	"crypto/tls"

	"github.com/rs/zerolog"

	"wittra-gateway/internal/certreload"
)

// CertReloader serves the webhook's certificate from files and re-reads
// them when they change (shared with the Cumulocity sink's client
// certificate, hence in internal/).
type CertReloader = certreload.Reloader

// NewCertReloader loads the pair once; an unusable pair is an error.
func NewCertReloader(certFile, keyFile string, log zerolog.Logger) (*CertReloader, error) {
	return certreload.New(certFile, keyFile, log)
}

// ServerTLSConfig is the webhook's TLS: 1.2 minimum with forward-secret
// AEAD suites only (1.3 suites are not configurable and all good).
func ServerTLSConfig(r *CertReloader) *tls.Config {
	return serverTLSConfig(r.GetCertificate)
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
