package main

import (
	"path/filepath"
	"reflect"
	"testing"

	"wittra-gateway/bridge"
)

func TestACMEConfigDefaults(t *testing.T) {
	cfg := mustParse(t, yml(
		"webhook:",
		"  listen: ':443'",
		"  tls:",
		"    acme:",
		"      domains: [gw.example.com, GW2.example.com]",
		"      email: ops@example.com",
		"buffer: {path: /var/lib/wittra-gateway/queue.db}",
	), t.TempDir())
	want := &WebhookACME{
		Domains:      []string{"gw.example.com", "GW2.example.com"},
		Email:        "ops@example.com",
		CacheDir:     filepath.FromSlash("/var/lib/wittra-gateway/acme"),
		DirectoryURL: bridge.LetsEncryptProduction,
	}
	if !reflect.DeepEqual(cfg.Webhook.TLS.ACME, want) {
		t.Fatalf("acme = %+v, want %+v", cfg.Webhook.TLS.ACME, want)
	}
	if got := mustParse(t, yml("webhook: {tls: {acme: null}}"), t.TempDir()).Webhook.TLS.ACME; got != nil {
		t.Fatalf("acme: null gave %+v, want no ACME", got)
	}
}

func TestACMEConfigErrors(t *testing.T) {
	wantProblems(t, []problemCase{
		{"AndCertFile", yml("webhook:", "  tls:", "    cert_file: c.pem", "    key_file: k.pem", "    acme: {domains: [gw.example.com]}"),
			[]string{"line 5: webhook.tls.acme: set either acme or cert_file/key_file, not both"}},
		{"NoDomains", yml("webhook:", "  tls:", "    acme: {email: a@b.c}"), []string{"webhook.tls.acme.domains: at least one domain is required"}},
		{"Wildcard", yml("webhook:", "  tls:", "    acme:", "      domains: ['*.example.com']"), []string{"line 4: webhook.tls.acme.domains[0]: wildcards"}},
		{"IP", yml("webhook:", "  tls:", "    acme:", "      domains: [192.0.2.1]"), []string{"line 4: webhook.tls.acme.domains[0]: an IP address"}},
		{"OneLabel", yml("webhook:", "  tls:", "    acme:", "      domains: [gateway]"), []string{"line 4: webhook.tls.acme.domains[0]: needs at least two labels"}},
		{"Duplicate", yml("webhook:", "  tls:", "    acme:", "      domains: [a.example.com, A.example.com]"), []string{"webhook.tls.acme.domains[1]: duplicate of domains[0]"}},
		{"Email", yml("webhook:", "  tls:", "    acme:", "      domains: [a.example.com]", "      email: nobody"), []string{"line 5: webhook.tls.acme.email: must be an address"}},
		{"PlainDirectory", yml("webhook:", "  tls:", "    acme:", "      domains: [a.example.com]", "      directory_url: http://ca.example.com/dir"), []string{"line 5: webhook.tls.acme.directory_url: must be an https:// URL"}},
		{"HTTPListenNoPort", yml("webhook:", "  tls:", "    acme:", "      domains: [a.example.com]", "      http_listen: localhost"), []string{"line 5: webhook.tls.acme.http_listen: must be host:port"}},
		{"HTTPListenClash", yml("webhook:", "  listen: ':8443'", "  tls:", "    acme:", "      domains: [a.example.com]", "      http_listen: ':8443'"), []string{"line 6: webhook.tls.acme.http_listen: same address as webhook.listen"}},
		{"UnknownKey", yml("webhook:", "  tls:", "    acme:", "      domain: a.example.com"), []string{"line 4: webhook.tls.acme.domain: unknown key"}},
	})
}
