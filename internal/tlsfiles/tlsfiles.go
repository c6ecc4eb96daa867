// Package tlsfiles builds TLS settings from files, TLS 1.2 at least: the
// client side the sinks share (a CA bundle, else the system roots, and an
// optional client certificate) and the server side of the embedded
// broker's listeners. The files are read when the sink or listener is
// built, so a missing or broken file fails at start and is named.
package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// Config names the files of a client TLS set-up.
type Config struct {
	CAFile             string // PEM CA bundle that replaces the system roots; empty: system roots
	CertFile           string // PEM client certificate, with KeyFile, for mutual TLS
	KeyFile            string
	InsecureSkipVerify bool // accept any server certificate (testing only)
}

// IsZero reports whether nothing is set.
func (c Config) IsZero() bool { return c == Config{} }

// Client builds the configuration with the CA bundle and the client
// certificate, if any.
func (c Config) Client() (*tls.Config, error) {
	tc, err := c.ClientWithoutCert()
	if err != nil || c.CertFile == "" {
		return tc, err
	}
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("load tls cert_file %s and key_file %s: %w", c.CertFile, c.KeyFile, err)
	}
	tc.Certificates = []tls.Certificate{cert}
	return tc, nil
}

// ClientWithoutCert builds the configuration with the CA bundle only, for a
// caller that serves the client certificate itself (re-read on renewal).
// It still checks that cert_file and key_file come together.
func (c Config) ClientWithoutCert() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.InsecureSkipVerify} //nolint:gosec // the operator's explicit choice
	if c.CAFile != "" {
		pool, err := CAPool(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read tls ca_file: %w", err)
		}
		tc.RootCAs = pool
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return nil, errors.New("tls cert_file and key_file must be given together")
	}
	return tc, nil
}

// Server builds a server configuration with the certificate in certFile
// and keyFile. With clientCAFile, every client must present a certificate
// that bundle verifies (mutual TLS).
func Server(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load certificate: %w", err)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if clientCAFile != "" {
		pool, err := CAPool(clientCAFile)
		if err != nil {
			return nil, fmt.Errorf("client_ca_file: %w", err)
		}
		tc.ClientCAs = pool
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// CAPool reads a PEM bundle of CA certificates.
func CAPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no PEM certificate in %s", path)
	}
	return pool, nil
}
