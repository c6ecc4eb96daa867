package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/rs/zerolog"

	"wittra-gateway/bridge"
)

// webhookTLS returns the webhook's server TLS (files with live reload, or
// ACME), or nil for plain HTTP. With ACME it also starts the certificate
// loop and, when http_listen is set, the http-01 listener.
func (g *gateway) webhookTLS(cfg *Config, wlog zerolog.Logger) (*tls.Config, error) {
	t := cfg.Webhook.TLS
	switch {
	case t.ACME != nil:
		alog := g.log.With().Str("component", "acme").Logger()
		a, err := bridge.NewACME(acmeConfig(t.ACME), alog)
		if err != nil {
			return nil, err
		}
		if t.ACME.HTTPListen != "" {
			ln, err := net.Listen("tcp", t.ACME.HTTPListen)
			if err != nil {
				return nil, fmt.Errorf("acme http_listen: %w", err)
			}
			g.acmeHTTP = &http.Server{
				Handler:           a.HTTPHandler(),
				ReadHeaderTimeout: g.timing.webhookHeaderTimeout,
				ReadTimeout:       30 * time.Second,
				WriteTimeout:      30 * time.Second,
				IdleTimeout:       60 * time.Second,
				MaxHeaderBytes:    16 << 10,
			}
			g.serve(g.acmeHTTP, func() error { return g.acmeHTTP.Serve(ln) })
		}
		ctx, cancel := context.WithCancel(context.Background())
		g.acmeCancel = cancel
		go a.Run(ctx)
		g.webhookCertExpiry = a.Expiry
		alog.Info().Strs("domains", t.ACME.Domains).Str("directory", t.ACME.DirectoryURL).
			Bool("http01", t.ACME.HTTPListen != "").Msg("ACME: requesting certificates (tls-alpn-01 on the webhook port)")
		return a.TLSConfig(), nil
	case t.CertFile != "":
		certs, err := bridge.NewCertReloader(t.CertFile, t.KeyFile, wlog)
		if err != nil {
			return nil, err
		}
		g.webhookCertExpiry = func() map[string]time.Time {
			var exp time.Time
			if leaf := certs.Leaf(); leaf != nil {
				exp = leaf.NotAfter
			}
			return map[string]time.Time{t.CertFile: exp}
		}
		return bridge.ServerTLSConfig(certs), nil
	}
	return nil, nil
}

func acmeConfig(a *WebhookACME) bridge.ACMEConfig {
	return bridge.ACMEConfig{
		Domains:      a.Domains,
		Email:        a.Email,
		CacheDir:     a.CacheDir,
		DirectoryURL: a.DirectoryURL,
		CAFile:       a.CAFile,
	}
}
