package cumulocity

import (
	"strings"
	"testing"

	"github.com/rs/zerolog"
)

func TestNewValidates(t *testing.T) {
	ok := Config{Mode: ModeMQTT, URL: "tcp://127.0.0.1:1", Tenant: "t1", Username: "u", Password: "p", GatewayID: "gw"}
	cases := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"BadMode", func(c *Config) { c.Mode = "soap" }, `mode: must be mqtt or rest (got "soap")`},
		{"NoGateway", func(c *Config) { c.GatewayID = "" }, "gateway.id: must not be empty"},
		{"GatewayWithColon", func(c *Config) { c.GatewayID = "a:b" }, "must not contain"},
		{"NoTenant", func(c *Config) { c.Tenant = "" }, "tenant: required"},
		{"TenantWithSlash", func(c *Config) { c.Tenant = "a/b" }, "must not contain /"},
		{"NoHost", func(c *Config) { c.URL = "tcp://" }, "url: must name a host"},
		{"MQTTWithHTTPS", func(c *Config) { c.URL = "https://x" }, "url: must start with tcp://, mqtt://, ssl://, mqtts:// or tls:// (mode mqtt)"},
		{"RESTWithTCP", func(c *Config) { c.Mode = ModeREST }, "url: must start with https:// or http:// (mode rest)"},
		{"MissingCA", func(c *Config) { c.TLS.CAFile = "/nonexistent/ca.pem" }, "read tls ca_file"},
		{"CertWithoutKey", func(c *Config) { c.TLS.CertFile = "/x.pem" }, "tls: cert_file and key_file must be set together"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := ok
			tc.mod(&cfg)
			s, err := New(cfg, zerolog.Nop())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v, want an error with %q", err, tc.want)
			}
			if s != nil {
				t.Errorf("sink returned with an error")
			}
		})
	}
	s, err := New(ok, zerolog.Nop())
	if err != nil {
		t.Fatalf("valid config: %v", err)
	}
	if s.Name() != "cumulocity" || s.cfg.DeviceName != "Wittra gateway gw" || s.cfg.RequestTimeout != DefaultRequestTimeout {
		t.Errorf("defaults: %+v", s.cfg)
	}
	_ = s.Close(t.Context())
}
