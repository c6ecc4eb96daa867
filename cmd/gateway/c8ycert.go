package main

import (
	"strings"

	"wittra-gateway/sinks/cumulocity"
)

// Certificate login of a cumulocity sink: tls.cert_file and key_file with
// no password. The sink's own check (the certificate loads, its common
// name is gateway.id or fits client_id, the URL scheme fits) runs here too,
// so check-config reports what would stop the sink at start.

func (p *parser) checkC8YCertLogin(base string, s SinkConfig, gatewayID string) {
	if s.TLS.KeyFile == "" || s.URL == "" || (s.Mode != "mqtt" && s.Mode != "rest") {
		return // reported elsewhere
	}
	if s.TokenURL != "" && s.Mode != "rest" {
		p.invalid(base+".token_url", "only used by mode rest with certificate login")
	}
	err := cumulocity.CheckCertificateLogin(cumulocity.Config{
		Mode:      s.Mode,
		URL:       s.URL,
		TLS:       cumulocity.TLSConfig{CertFile: s.TLS.CertFile, KeyFile: s.TLS.KeyFile},
		GatewayID: gatewayID,
		ClientID:  s.ClientID,
		TokenURL:  s.TokenURL,
	})
	if err == nil {
		return
	}
	field := base + ".tls.cert_file"
	msg := err.Error()
	switch {
	case strings.HasPrefix(msg, "client_id"):
		field = base + ".client_id"
	case strings.HasPrefix(msg, "url"):
		field = base + ".url"
	case strings.HasPrefix(msg, "token_url"):
		field = base + ".token_url"
	}
	p.invalid(field, "certificate login: %s", msg)
}

// c8yCertOnly reports keys that only certificate login uses.
func (p *parser) c8yCertOnly(base string, s SinkConfig) {
	if s.ClientID != "" {
		p.invalid(base+".client_id", "only used with certificate login (tls.cert_file and key_file, no password)")
	}
	if s.TokenURL != "" {
		p.invalid(base+".token_url", "only used by mode rest with certificate login")
	}
}
