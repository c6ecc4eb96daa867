package main

// The `type: jetstream` part of a sink: parsing and validation. Kept apart
// from config.go so that the sink's keys live in one place.

import (
	"fmt"
	"time"

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

// validateJetStream checks a jetstream sink s (at base).
func (p *parser) validateJetStream(base string, s SinkConfig) {
	if s.Type != "jetstream" {
		return
	}
	j := s.JetStream
	if len(j.URLs) == 0 {
		p.invalid(base+".urls", "required for type jetstream: one or more nats:// or tls:// URLs")
	}
	for i, u := range j.URLs {
		if err := jetstream.CheckURL(u); err != nil {
			p.invalid(fmt.Sprintf("%s.urls[%d]", base, i), "%v", err)
		}
	}
	auths := 0
	for _, v := range []string{s.Username, j.Token, j.CredsFile} {
		if v != "" {
			auths++
		}
	}
	switch {
	case auths > 1:
		p.invalid(base, "set one of username/password, token or creds_file")
	case s.Password != "" && s.Username == "":
		p.invalid(base+".username", "required with password")
	}
	if err := jetstream.CheckSubjectPrefix(j.SubjectPrefix); err != nil {
		p.invalid(base+".subject_prefix", "%v", err)
		return
	}
	st := jetstream.StreamConfig{Name: j.Stream.Name, Subjects: j.Stream.Subjects, MaxAge: j.Stream.MaxAge, DuplicateWindow: j.Stream.DuplicateWindow}.WithDefaults(j.SubjectPrefix)
	sb := base + ".stream"
	if err := jetstream.CheckStreamName(st.Name); err != nil {
		p.invalid(sb+".name", "%v", err)
	}
	covered := false
	for i, f := range st.Subjects {
		if err := jetstream.CheckFilter(f); err != nil {
			p.invalid(fmt.Sprintf("%s.subjects[%d]", sb, i), "%v", err)
		}
		covered = covered || jetstream.Covers(f, j.SubjectPrefix)
	}
	if !covered {
		p.invalid(sb+".subjects", "must capture %s.> (the subjects the sink publishes)", j.SubjectPrefix)
	}
	if j.Stream.Replicas < 0 || j.Stream.Replicas > 5 {
		p.invalid(sb+".replicas", "must be between 1 and 5 (or absent: 3 on a cluster of 3 or more, else 1)")
	}
	switch {
	case st.MaxAge < 0:
		p.invalid(sb+".max_age", "must not be negative")
	case st.DuplicateWindow < 0:
		p.invalid(sb+".duplicate_window", "must not be negative")
	case st.DuplicateWindow > st.MaxAge:
		p.invalid(sb+".duplicate_window", "must not exceed max_age (%v)", st.MaxAge)
	}
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
		TLS:           jetstream.TLSConfig{CAFile: sc.TLS.CAFile, CertFile: sc.TLS.CertFile, KeyFile: sc.TLS.KeyFile, InsecureSkipVerify: sc.TLS.InsecureSkipVerify},
		SubjectPrefix: j.SubjectPrefix,
		GatewayID:     cfg.Gateway.ID,
		Stream: jetstream.StreamConfig{
			Name:            j.Stream.Name,
			Subjects:        j.Stream.Subjects,
			Replicas:        j.Stream.Replicas,
			MaxAge:          j.Stream.MaxAge,
			DuplicateWindow: j.Stream.DuplicateWindow,
		},
	}
}
