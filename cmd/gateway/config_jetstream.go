package main

// The `type: jetstream` part of a sink. Its options are checked by
// jetstream.Config.Validate (config_check.go asks it).

import (
	"time"

	"wittra-gateway/internal/tlsfiles"
	"wittra-gateway/sinks/jetstream"
)

// JetStreamSinkConfig holds the settings only a `type: jetstream` sink
// has (inlined into SinkConfig). Username, Password and TLS are the sink's
// common fields.
type JetStreamSinkConfig struct {
	URLs          []string              `yaml:"urls" types:"jetstream"` // nats://, tls://, ws://, wss://
	Token         string                `yaml:"token" secret:"file" types:"jetstream"`
	CredsFile     string                `yaml:"creds_file" types:"jetstream"`     // absolute after parsing (relative to the config's directory)
	SubjectPrefix string                `yaml:"subject_prefix" types:"jetstream"` // default DefaultTopicPrefix ("wittra")
	Stream        JetStreamStreamConfig `yaml:"stream" types:"jetstream"`
}

// JetStreamStreamConfig is the `stream:` of a jetstream sink; zero fields
// take the sink's defaults (see sinks/jetstream).
type JetStreamStreamConfig struct {
	Name            string        `yaml:"name"`
	Subjects        []string      `yaml:"subjects"`
	Replicas        int           `yaml:"replicas"` // 0: 3 on a cluster of 3+, else 1
	MaxAge          time.Duration `yaml:"max_age"`
	DuplicateWindow time.Duration `yaml:"duplicate_window"`
}

// jetstreamConfig builds the sink's own Config.
func jetstreamConfig(cfg *Config, sc SinkConfig) jetstream.Config {
	j := sc.JetStream
	return jetstream.Config{
		Name:          sc.Name,
		URLs:          j.URLs,
		Username:      sc.Username,
		Password:      sc.Password,
		Token:         j.Token,
		CredsFile:     j.CredsFile,
		TLS:           tlsfiles.Config(sc.TLS),
		SubjectPrefix: j.SubjectPrefix,
		GatewayID:     cfg.Gateway.ID,
		Stream:        jetstream.StreamConfig(j.Stream), // the same fields, YAML tags added
	}
}
