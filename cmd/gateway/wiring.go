package main

import (
	"wittra-gateway/bridge"
	"wittra-gateway/buffer"
	"wittra-gateway/internal/clock"
	"wittra-gateway/internal/tlsfiles"
	"wittra-gateway/sinks/broker"
	"wittra-gateway/sinks/cumulocity"
	"wittra-gateway/sinks/mqttclient"
)

// The YAML config stays in this package; each component gets its own plain
// Config built here.

func bufferConfig(cfg *Config, consumers []string) buffer.Config {
	policy := buffer.Reject
	if cfg.Buffer.WhenFull == "drop_oldest" {
		policy = buffer.DropOldest
	}
	return buffer.Config{
		Path:        cfg.Buffer.Path,
		MaxBytes:    cfg.Buffer.MaxBytes,
		MaxAge:      cfg.Buffer.MaxAge,
		WhenFull:    policy,
		DedupWindow: cfg.Buffer.DedupWindow,
		Consumers:   consumers,
		BuildFloor:  clock.BuildFloor(BuildTime),
	}
}

func brokerConfig(cfg *Config) broker.Config {
	bc := broker.Config{AllowAnonymous: cfg.Broker.AllowAnonymous}
	// ListenerConfig and UserConfig have broker.Listener's and broker.User's
	// fields (only YAML tags added), so they convert; a field added to one
	// and not the other stops the build.
	for _, l := range cfg.Broker.Listeners {
		bc.Listeners = append(bc.Listeners, broker.Listener(l))
	}
	for _, u := range cfg.Broker.Users {
		bc.Users = append(bc.Users, broker.User(u))
	}
	// Reserve the broker sinks' prefixes before the broker serves, so no
	// client can publish there (e.g. a retained fake status) in between.
	for _, s := range cfg.Sinks {
		if s.Type == "broker" {
			bc.ReservedPrefixes = append(bc.ReservedPrefixes, s.TopicPrefix)
		}
		// Durable subscribers are declared before the broker serves, so
		// their client ids are protected from the first connection.
		if s.Type == "subscriber" {
			bc.ReservedPrefixes = append(bc.ReservedPrefixes, s.TopicPrefix)
			bc.Subscribers = append(bc.Subscribers, subscriberConfig(cfg, s))
		}
	}
	return bc
}

func subscriberConfig(cfg *Config, s SinkConfig) broker.SubscriberConfig {
	return broker.SubscriberConfig{
		Name:        s.Name,
		ClientID:    s.ClientID,
		Username:    s.Username,
		TopicPrefix: s.TopicPrefix,
		Values:      s.Values,
		QoS:         qosByte(s.QoS),
		GatewayID:   cfg.Gateway.ID,
	}
}

// brokerSinkConfig is the broker package's view of a `type: broker` sink.
func brokerSinkConfig(cfg *Config, sc SinkConfig) broker.SinkConfig {
	return broker.SinkConfig{
		Name:         sc.Name,
		TopicPrefix:  sc.TopicPrefix,
		Values:       sc.Values,
		Retain:       sc.Retain,
		GatewayID:    cfg.Gateway.ID,
		RetainPolicy: broker.RetainPolicy{MaxAge: sc.RetainMaxAge, MaxTopics: sc.RetainMaxTopics, MaxBytes: sc.RetainMaxBytes},
		Devices:      deviceTopics(sc),
	}
}

func mqttConfig(cfg *Config, sc SinkConfig) mqttclient.Config {
	return mqttclient.Config{
		Name:        sc.Name,
		URL:         sc.URL,
		ClientID:    sc.ClientID,
		Username:    sc.Username,
		Password:    sc.Password,
		TLS:         tlsfiles.Config(sc.TLS),
		QoS:         qosByte(sc.QoS),
		Retain:      sc.Retain,
		TopicPrefix: sc.TopicPrefix,
		Values:      sc.Values,
		GatewayID:   cfg.Gateway.ID,
		Devices:     deviceTopics(sc),
	}
}

func c8yConfig(cfg *Config, sc SinkConfig) cumulocity.Config {
	return cumulocity.Config{
		Name:       sc.Name,
		Mode:       sc.Mode,
		URL:        sc.URL,
		Tenant:     sc.Tenant,
		Username:   sc.Username,
		Password:   sc.Password,
		TLS:        tlsfiles.Config(sc.TLS),
		GatewayID:  cfg.Gateway.ID,
		DeviceName: sc.DeviceName,
		ClientID:   sc.ClientID, // certificate login only
		TokenURL:   sc.TokenURL, // rest mode with certificate login
	}
}

// qosByte is q as an MQTT QoS; out of range, 3, which every sink refuses.
func qosByte(q int) byte {
	if q < 0 || q > 2 {
		return 3
	}
	return byte(q)
}

func receiverConfig(cfg *Config) bridge.ReceiverConfig {
	rc := bridge.ReceiverConfig{MaxBody: cfg.Webhook.MaxBody}
	for _, r := range cfg.Webhook.Routes {
		rc.Routes = append(rc.Routes, bridge.Route{Path: r.Path, Token: r.Token, Project: r.Project, DevicePrefixes: r.DevicePrefixes})
	}
	return rc
}
