package mqttclient

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"wittra-gateway/sinks"
)

func TestNewRejects(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing-ca.pem")
	ok := Config{URL: "tcp://127.0.0.1:1", GatewayID: "gw1"}
	tests := []struct {
		name string
		edit func(*Config)
		want string // in the error
	}{
		{"NoURL", func(c *Config) { c.URL = "" }, "url: required"},
		{"BadScheme", func(c *Config) { c.URL = "http://broker" }, "must start with tcp://, ssl://, ws:// or wss://"},
		{"Credentials", func(c *Config) { c.URL = "tcp://u:p@broker:1883" }, "must not contain credentials"},
		{"NoHost", func(c *Config) { c.URL = "tcp://:1883" }, "must name a host"},
		{"QoS", func(c *Config) { c.QoS = 3 }, "qos: must be 0, 1 or 2"},
		{"Window", func(c *Config) { c.Window = -1 }, "window -1"},
		{"AckTimeout", func(c *Config) { c.AckTimeout = -time.Second }, "ack timeout"},
		{"NoGatewayID", func(c *Config) { c.GatewayID = "" }, "gateway.id: must not be empty"},
		{"GatewayIDSlash", func(c *Config) { c.GatewayID = "a/b" }, "gateway.id: must not contain /"},
		{"PrefixWildcard", func(c *Config) { c.TopicPrefix = "w/#" }, "topic_prefix: must not contain + #"},
		{"TLSOnPlain", func(c *Config) { c.TLS.CAFile = junk }, "need an ssl:// or wss:// url"},
		{"MissingCA", func(c *Config) { c.URL = "ssl://broker"; c.TLS.CAFile = missing }, missing},
		{"JunkCA", func(c *Config) { c.URL = "ssl://broker"; c.TLS.CAFile = junk }, junk},
		{"CertWithoutKey", func(c *Config) { c.URL = "wss://broker/mqtt"; c.TLS.CertFile = junk }, "given together"},
		{"BadKeyPair", func(c *Config) { c.URL = "ssl://broker"; c.TLS.CertFile, c.TLS.KeyFile = junk, missing }, junk},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := ok
			tt.edit(&cfg)
			s, err := New(cfg, zerolog.Nop())
			if err == nil {
				s.Close(context.Background())
				t.Fatalf("New succeeded; want an error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	cfg, err := Config{URL: "ssl://broker", GatewayID: "gw1"}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Name != DefaultName || cfg.TopicPrefix != DefaultTopicPrefix || cfg.ClientID != "wittra-gw1" ||
		cfg.Window != DefaultWindow || cfg.AckTimeout != DefaultAckTimeout ||
		cfg.MaxReconnectInterval != DefaultMaxReconnectInterval || cfg.QoS != 0 {
		t.Errorf("defaults = %+v", cfg)
	}
	for raw, want := range map[string]string{
		"tcp://broker":          "tcp://broker:1883",
		"ssl://broker":          "ssl://broker:8883",
		"tcp://[::1]":           "tcp://[::1]:1883",
		"ssl://broker:1234":     "ssl://broker:1234",
		"wss://broker/mqtt":     "wss://broker/mqtt",
		"ws://broker:8080/mqtt": "ws://broker:8080/mqtt",
	} {
		u, _, err := parseBrokerURL(raw)
		if err != nil || u.String() != want {
			t.Errorf("parseBrokerURL(%q) = %v, %v; want %s", raw, u, err, want)
		}
	}
}

// TestNoBroker needs no network: New does not block, Publish honours ctx,
// Close is quick and idempotent, Publish after Close fails.
func TestNoBroker(t *testing.T) {
	s, err := New(Config{URL: "tcp://127.0.0.1:1", GatewayID: "gw1"}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if n, err := s.Publish(ctx, nil); n != 0 || err != nil {
		t.Errorf("Publish(nil) = %d, %v", n, err)
	}
	start := time.Now()
	if err := s.Close(context.Background()); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close took %v", d)
	}
	if _, err := s.Publish(ctx, make([]sinks.Message, 1)); !errors.Is(err, ErrClosed) {
		t.Errorf("Publish after Close: %v, want ErrClosed", err)
	}
}
