package main

// Validation of a decoded Config: the rules that involve several keys or
// sections. What one sink package checks on its own options is asked of
// that package.

import (
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"

	"wittra-gateway/bridge"
	"wittra-gateway/internal/field"
	"wittra-gateway/internal/status"
	"wittra-gateway/sinks"
)

var reSinkName = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// hasTopicMeta reports whether s holds an MQTT wildcard, a level separator or NUL.
func hasTopicMeta(s string, slashOK bool) bool {
	if !slashOK && strings.Contains(s, "/") {
		return true
	}
	return strings.ContainsAny(s, "+#\x00")
}

func oneOf(s string, allowed ...string) bool {
	for _, a := range allowed {
		if s == a {
			return true
		}
	}
	return false
}

func (p *parser) hostPort(field, addr string) {
	if addr == "" {
		p.invalid(field, "must not be empty (host:port)")
		return
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		p.invalid(field, "must be host:port, e.g. 127.0.0.1:8080 or :8080")
	}
}

// validateACME checks webhook.tls.acme.
func (p *parser) validateACME(c *Config, a *WebhookACME) {
	const base = "webhook.tls.acme"
	if c.Webhook.TLS.CertFile != "" || c.Webhook.TLS.KeyFile != "" {
		p.invalid(base, "set either acme or cert_file/key_file, not both")
	}
	p.own(base, acmeConfig(a).Validate())
	if a.HTTPListen != "" {
		p.hostPort(base+".http_listen", a.HTTPListen)
	}
}

func (p *parser) validate(c *Config) {
	switch {
	case c.Gateway.ID == "":
		p.invalid("gateway.id", "must not be empty")
	default:
		if err := sinks.CheckTopicPart(c.Gateway.ID, false); err != nil {
			p.invalid("gateway.id", "%v", err)
		}
	}

	if !oneOf(c.Log.Level, "debug", "info", "warn", "error") {
		p.invalid("log.level", "must be debug, info, warn or error (got %q)", c.Log.Level)
	}
	if !oneOf(c.Log.Format, "json", "console", "journald") {
		p.invalid("log.format", "must be json, console or journald (got %q)", c.Log.Format)
	}

	w := c.Webhook
	p.hostPort("webhook.listen", w.Listen)
	if (w.TLS.CertFile == "") != (w.TLS.KeyFile == "") {
		p.invalid("webhook.tls", "cert_file and key_file must be set together")
	}
	if a := w.TLS.ACME; a != nil {
		p.validateACME(c, a)
	}
	if w.MaxBody <= 0 {
		p.invalid("webhook.max_body", "must be greater than 0")
	}
	if len(w.Routes) == 0 {
		p.invalid("webhook.routes", "at least one route is required")
	}
	seenPath := map[string]int{}
	for i, r := range w.Routes {
		base := fmt.Sprintf("webhook.routes[%d]", i)
		switch {
		case !strings.HasPrefix(r.Path, "/"):
			p.invalid(base+".path", "must start with /")
		default:
			if j, dup := field.Repeat(seenPath, r.Path, i); dup {
				p.invalid(base+".path", "duplicate path %q (also webhook.routes[%d])", r.Path, j)
			}
		}
		if hasTopicMeta(r.Project, false) {
			p.invalid(base+".project", "must not contain / + # or NUL")
		}
		for j, pre := range r.DevicePrefixes {
			f := fmt.Sprintf("%s.device_prefixes[%d]", base, j)
			switch {
			case pre == "":
				p.invalid(f, "must not be empty")
			case hasTopicMeta(pre, false):
				p.invalid(f, "must not contain / + # or NUL")
			}
		}
	}

	b := c.Buffer
	if b.Path == "" {
		p.invalid("buffer.path", "must not be empty")
	}
	if b.MaxBytes < minQueueBytes {
		p.invalid("buffer.max_bytes", "must be at least 64KiB (a few messages)")
	}
	if b.MaxAge <= 0 {
		p.invalid("buffer.max_age", "must be greater than 0")
	}
	if !oneOf(b.WhenFull, "reject", "drop_oldest") {
		p.invalid("buffer.when_full", "must be reject or drop_oldest (got %q)", b.WhenFull)
	}
	if b.DedupWindow < 0 {
		p.invalid("buffer.dedup_window", "must not be negative")
	}

	if c.Admin.Listen != "" {
		p.hostPort("admin.listen", c.Admin.Listen)
	}
	var admins field.List
	admins.Accounts("/admin.users", len(c.Admin.Users), func(i int) (string, string) { return c.Admin.Users[i].Username, c.Admin.Users[i].PasswordHash },
		"a bcrypt hash, in password or password_file", status.CheckHash)
	p.own("admin", admins.Err())

	br := c.Broker
	for i, l := range br.Listeners {
		base := fmt.Sprintf("broker.listeners[%d]", i)
		if l.Type == "" {
			p.invalid(base+".type", "required: tcp, tls or websocket")
		}
		p.hostPort(base+".address", l.Address)
	}
	p.own("broker", brokerConfig(c).Validate())

	// Two servers of this process on the same address cannot both start
	// (port 0 asks the system for a free port each time, so it never clashes).
	addrs := map[string]string{}
	claim := func(field, addr string) {
		if addr == "" || p.bad[field] {
			return
		}
		if _, port, err := net.SplitHostPort(addr); err != nil || port == "0" {
			return
		}
		if other, dup := addrs[addr]; dup {
			p.invalid(field, "same address as %s", other)
			return
		}
		addrs[addr] = field
	}
	claim("webhook.listen", w.Listen)
	if w.TLS.ACME != nil {
		claim("webhook.tls.acme.http_listen", w.TLS.ACME.HTTPListen)
	}
	claim("admin.listen", c.Admin.Listen)
	if br.Enabled {
		for i, l := range br.Listeners {
			claim(fmt.Sprintf("broker.listeners[%d].address", i), l.Address)
		}
	}

	if len(c.Sinks) == 0 {
		if br.Enabled {
			p.invalid("sinks", "at least one sink is required")
		} else {
			p.invalid("sinks", "at least one sink is required (the default local sink needs broker.enabled: true)")
		}
	}
	seenSink := map[string]int{}
	seenClientID := map[string]int{} // client ids of subscriber sinks
	for i, s := range c.Sinks {
		base := fmt.Sprintf("sinks[%d]", i)
		switch {
		case s.Name == "":
			p.invalid(base+".name", "required")
		case !reSinkName.MatchString(s.Name):
			p.invalid(base+".name", "may only contain letters, digits, _ and -")
		default:
			if j, dup := field.Repeat(seenSink, s.Name, i); dup {
				p.invalid(base+".name", "duplicate sink name %q (also sinks[%d])", s.Name, j)
			}
		}
		if s.TopicPrefix == "" { // given empty: the packages would take the default
			p.invalid(base+".topic_prefix", "must not be empty")
		}
		if (s.TLS.CertFile == "") != (s.TLS.KeyFile == "") {
			p.invalid(base+".tls", "cert_file and key_file must be set together")
		}
		switch s.Type {
		case "broker":
			if !br.Enabled {
				p.invalid(base+".type", "type broker needs broker.enabled: true")
			}
			p.own(base, brokerSinkConfig(c, s).Validate())
		case "mqtt":
			p.own(base, mqttConfig(c, s).Validate())
		case "cumulocity":
			p.own(base, c8yConfig(c, s).Validate())
		case "jetstream":
			p.own(base, jetstreamConfig(c, s).Validate())
		case "subscriber":
			p.subscriberSink(c, base, s, seenClientID)
		case "":
			p.invalid(base+".type", "required: broker, subscriber, mqtt, cumulocity or jetstream")
		default:
			p.invalid(base+".type", "must be broker, subscriber, mqtt, cumulocity or jetstream (got %q)", s.Type)
		}
		p.validateDeviceTopics(base, s)
		if _, err := bridge.ParseBacklog(s.Backlog); err != nil {
			p.invalid(base+".backlog", "%v", err)
		}
	}
	p.validateWittraAPI(c) // config_wittraapi.go
}

// subscriberSink validates a `type: subscriber` sink (a durable client of
// the embedded broker).
func (p *parser) subscriberSink(c *Config, base string, s SinkConfig, seen map[string]int) {
	br := c.Broker
	if !br.Enabled {
		p.invalid(base+".type", "type subscriber needs broker.enabled: true")
	}
	if j, dup := seen[s.ClientID]; dup && s.ClientID != "" {
		p.invalid(base+".client_id", "same client_id as sinks[%d]: one durable subscriber per client", j)
	} else {
		seen[s.ClientID] = p.sinkIndex(c, s.Name)
	}
	if s.QoS == 0 { // the package reads 0 as its default
		p.invalid(base+".qos", "must be 1 or 2 for type subscriber (the cursor moves on the client's acknowledgement)")
	}
	p.own(base, subscriberConfig(c, s).Validate())
	if len(br.Users) > 0 {
		found := false
		for _, u := range br.Users {
			found = found || u.Username == s.Username
		}
		switch {
		case s.Username == "":
			p.invalid(base+".username", "required for type subscriber when broker.users is set: only this user may take the client's session")
		case !found:
			p.invalid(base+".username", "%q is not one of broker.users", s.Username)
		}
	}
}

// minQueueBytes is the smallest buffer.max_bytes: below it the queue could
// hold hardly a request.
const minQueueBytes = 64 << 10

// own reports the problems a package found in its own options: a
// *field.Error names the key under base.
func (p *parser) own(base string, err error) {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			p.own(base, e)
		}
		return
	}
	var fe *field.Error
	switch {
	case err == nil:
	case errors.As(err, &fe) && strings.HasPrefix(fe.Key, "/"):
		p.invalid(fe.Key[1:], "%v", fe.Err) // e.g. gateway.id: said once (add drops repeats)
	case errors.As(err, &fe) && fe.Key != "":
		p.invalid(base+"."+fe.Key, "%v", fe.Err)
	default:
		p.invalid(base, "%v", err)
	}
}

// sinkIndex returns the position of the sink named name.
func (p *parser) sinkIndex(c *Config, name string) int {
	for i, s := range c.Sinks {
		if s.Name == name {
			return i
		}
	}
	return -1
}
