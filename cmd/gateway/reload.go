package main

import (
	"fmt"
	"reflect"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/rs/zerolog"
)

// reload applies next, an already validated config, to the running
// gateway. Routes (paths, tokens, projects, device filters), the log level
// and the broker's users and anonymous rule change live; every other
// difference is named in restart and left as it runs. On error nothing was
// applied.
func (g *gateway) reload(cur, next *Config) (applied, restart []string, err error) {
	if g.brokerSrv != nil && cur.Broker.Enabled && next.Broker.Enabled &&
		(!reflect.DeepEqual(cur.Broker.Users, next.Broker.Users) || cur.Broker.AllowAnonymous != next.Broker.AllowAnonymous) {
		bc := brokerConfig(next)
		if err := g.brokerSrv.SetUsers(bc.AllowAnonymous, bc.Users); err != nil {
			return nil, nil, fmt.Errorf("broker users: %w", err)
		}
		applied = append(applied, "broker.users", "broker.allow_anonymous")
	}
	if !reflect.DeepEqual(cur.Webhook.Routes, next.Webhook.Routes) {
		g.receiver.SetRoutes(receiverConfig(next).Routes)
		applied = append(applied, "webhook.routes")
	}
	if cur.Log.Level != next.Log.Level {
		level, err := zerolog.ParseLevel(next.Log.Level)
		if err == nil {
			// The process's level is zerolog's global one (see RunCommand).
			zerolog.SetGlobalLevel(level)
			applied = append(applied, "log.level")
		}
	}

	// What a running gateway cannot change: listeners, the queue file and
	// its limits, the sinks' connections.
	differs := func(name string, a, b any) {
		if !reflect.DeepEqual(a, b) {
			restart = append(restart, name)
		}
	}
	differs("gateway", cur.Gateway, next.Gateway)
	differs("log.format", cur.Log.Format, next.Log.Format)
	differs("webhook.listen", cur.Webhook.Listen, next.Webhook.Listen)
	differs("webhook.tls", cur.Webhook.TLS, next.Webhook.TLS)
	differs("webhook.max_body", cur.Webhook.MaxBody, next.Webhook.MaxBody)
	differs("buffer", cur.Buffer, next.Buffer)
	differs("admin", cur.Admin, next.Admin)
	differs("broker.enabled", cur.Broker.Enabled, next.Broker.Enabled)
	differs("broker.listeners", cur.Broker.Listeners, next.Broker.Listeners)
	differs("sinks", cur.Sinks, next.Sinks)
	differs("wittra_api", cur.WittraAPI, next.WittraAPI) // config_wittraapi.go
	return applied, restart, nil
}

// reloadFrom reads the config at path again and applies it; it returns the
// config now in force. A config with errors changes nothing: the errors are
// logged and the running config is kept.
func (g *gateway) reloadFrom(path string, cur *Config) *Config {
	notify(g.log, daemon.SdNotifyReloading)
	defer notify(g.log, daemon.SdNotifyReady)
	next, err := LoadConfig(path)
	if err != nil {
		g.log.Error().Err(err).Str("config", path).Msg("reload refused: the config has errors; the running one is kept")
		return cur
	}
	applied, restart, err := g.reload(cur, next)
	if err != nil {
		g.log.Error().Err(err).Str("config", path).Msg("reload refused; the running config is kept")
		return cur
	}
	ev := g.log.Info()
	if len(restart) > 0 {
		ev = g.log.Warn()
	}
	ev.Str("config", path).Strs("applied", applied).Strs("needs_restart", restart).Msg("config reloaded")
	// What needs a restart is still running with the old values: keep
	// them as the reference, so the next reload names them again.
	kept := *next
	kept.Gateway, kept.Log.Format, kept.Buffer, kept.Admin = cur.Gateway, cur.Log.Format, cur.Buffer, cur.Admin
	kept.Webhook.Listen, kept.Webhook.TLS, kept.Webhook.MaxBody = cur.Webhook.Listen, cur.Webhook.TLS, cur.Webhook.MaxBody
	kept.Broker.Enabled, kept.Broker.Listeners, kept.Sinks = cur.Broker.Enabled, cur.Broker.Listeners, cur.Sinks
	return &kept
}
