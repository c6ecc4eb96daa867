package main

// The shape of the YAML file, as typed structs (config_yaml.go decodes into
// them), and its conversion into Config. A key missing here is an unknown
// key; a sink key is read only by the sink types named in its `types` tag,
// and is an error with its line on a sink of any other type.

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	"wittra-gateway/bridge"
)

type fileConfig struct {
	Gateway struct {
		ID Str `yaml:"id"`
	} `yaml:"gateway"`
	Log struct {
		Level  Str `yaml:"level"`
		Format Str `yaml:"format"`
	} `yaml:"log"`
	Webhook struct {
		Listen Str `yaml:"listen"`
		TLS    struct {
			CertFile Str       `yaml:"cert_file"`
			KeyFile  Str       `yaml:"key_file"`
			ACME     *fileACME `yaml:"acme"`
		} `yaml:"tls"`
		MaxBody Size        `yaml:"max_body"`
		Routes  []fileRoute `yaml:"routes"`
	} `yaml:"webhook"`
	Buffer struct {
		Path        Str      `yaml:"path"`
		MaxBytes    Size     `yaml:"max_bytes"`
		MaxAge      Duration `yaml:"max_age"`
		WhenFull    Str      `yaml:"when_full"`
		DedupWindow Duration `yaml:"dedup_window"`
	} `yaml:"buffer"`
	Admin struct {
		Listen Str `yaml:"listen"`
		Users  []struct {
			Username Str `yaml:"username"`
			Secret   `yaml:",inline"` // password: a bcrypt hash, not the password
		} `yaml:"users"`
	} `yaml:"admin"`
	Broker struct {
		Enabled        Bool           `yaml:"enabled"`
		Listeners      []fileListener `yaml:"listeners"`
		AllowAnonymous Bool           `yaml:"allow_anonymous"`
		Users          []fileUser     `yaml:"users"`
	} `yaml:"broker"`
	Sinks []fileSink `yaml:"sinks"`
}

type fileACME struct {
	Domains      []Str `yaml:"domains"`
	Email        Str   `yaml:"email"`
	CacheDir     Str   `yaml:"cache_dir"`
	DirectoryURL Str   `yaml:"directory_url"`
	CAFile       Str   `yaml:"ca_file"`
	HTTPListen   Str   `yaml:"http_listen"`
}

type fileRoute struct {
	Path           Str   `yaml:"path"`
	Token          Str   `yaml:"token"`
	TokenFile      Str   `yaml:"token_file"`
	Project        Str   `yaml:"project"`
	DevicePrefixes []Str `yaml:"device_prefixes"`
}

type fileListener struct {
	Type           Str   `yaml:"type"`
	Address        Str   `yaml:"address"`
	CertFile       Str   `yaml:"cert_file"`
	KeyFile        Str   `yaml:"key_file"`
	ClientCAFile   Str   `yaml:"client_ca_file"`
	AllowedOrigins []Str `yaml:"allowed_origins"`
}

type fileUser struct {
	Username      Str   `yaml:"username"`
	Secret        `yaml:",inline"`
	Subscribe     []Str `yaml:"subscribe"`
	Publish       Bool  `yaml:"publish"`
	PublishTopics []Str `yaml:"publish_topics"`
}

// Secret is a password given in the file or in a file of its own
// (password_file, e.g. a systemd credential).
type Secret struct {
	Password     Str `yaml:"password"`
	PasswordFile Str `yaml:"password_file"`
}

// fileSink holds the keys of every sink type; `types` says which types read a key.
type fileSink struct {
	Name         Str         `yaml:"name"`
	Type         Str         `yaml:"type"`
	TopicPrefix  Str         `yaml:"topic_prefix" types:"broker subscriber mqtt"`
	Values       Bool        `yaml:"values" types:"broker subscriber mqtt"`
	Retain       Bool        `yaml:"retain" types:"broker mqtt"`
	URL          Str         `yaml:"url" types:"mqtt cumulocity"`
	ClientID     Str         `yaml:"client_id" types:"subscriber mqtt cumulocity"`
	Username     Str         `yaml:"username" types:"subscriber mqtt cumulocity jetstream"`
	Password     Str         `yaml:"password" types:"mqtt cumulocity jetstream"`
	PasswordFile Str         `yaml:"password_file" types:"mqtt cumulocity jetstream"`
	TLS          fileSinkTLS `yaml:"tls" types:"mqtt cumulocity jetstream"`
	QoS          Int         `yaml:"qos" types:"subscriber mqtt"`
	Mode         Str         `yaml:"mode" types:"cumulocity"`
	Tenant       Str         `yaml:"tenant" types:"cumulocity"`
	DeviceName   Str         `yaml:"device_name" types:"cumulocity"`
	TokenURL     Str         `yaml:"token_url" types:"cumulocity"`

	RetainMaxAge    Duration `yaml:"retain_max_age" types:"broker"`
	RetainMaxTopics Int      `yaml:"retain_max_topics" types:"broker"`
	RetainMaxBytes  Size     `yaml:"retain_max_bytes" types:"broker"`

	FileJetStream `yaml:",inline"`
}

type fileSinkTLS struct {
	CAFile             Str  `yaml:"ca_file"`
	CertFile           Str  `yaml:"cert_file"`
	KeyFile            Str  `yaml:"key_file"`
	InsecureSkipVerify Bool `yaml:"insecure_skip_verify"`
}

var reflectTypeOfSink = reflect.TypeOf(fileSink{})

// sinkTypes are the known sink types.
var sinkTypes = map[string]bool{"broker": true, "subscriber": true, "mqtt": true, "cumulocity": true, "jetstream": true}

// foreignKey explains why key is refused on a sink of type typ.
func foreignKey(typ, key string) error {
	switch typ + "." + key {
	case "jetstream.url":
		return fmt.Errorf("type jetstream takes urls (a list)")
	case "jetstream.topic_prefix":
		return fmt.Errorf("type jetstream takes subject_prefix (dot-separated)")
	case "subscriber.retain":
		return fmt.Errorf("not for type subscriber: it delivers every message to one client; retained values belong to a type broker sink")
	}
	var own, others []string
	for k, f := range fieldsOf(reflectTypeOfSink) {
		switch {
		case f.types == nil || slices.Contains(f.types, typ):
			own = append(own, k)
		case k == key:
			others = f.types
		}
	}
	slices.Sort(own)
	if len(others) == 1 {
		return fmt.Errorf("only for type %s (type %s reads: %s)", others[0], typ, strings.Join(own, ", "))
	}
	return fmt.Errorf("not a key of type %s (its keys: %s)", typ, strings.Join(own, ", "))
}

// toConfig fills cfg (the defaults) from the file.
func (p *parser) toConfig(f *fileConfig, cfg *Config) {
	cfg.Gateway.ID = f.Gateway.ID.or(cfg.Gateway.ID)
	if cfg.Gateway.ID == "" {
		cfg.Gateway.ID = defaultGatewayID()
	}
	cfg.Log.Level = f.Log.Level.or(DefaultLogLevel)
	cfg.Log.Format = f.Log.Format.or(DefaultLogFormat)
	if cfg.Log.Level == "" {
		cfg.Log.Level = DefaultLogLevel
	}
	if cfg.Log.Format == "" {
		cfg.Log.Format = DefaultLogFormat
	}

	fw, w := &f.Webhook, &cfg.Webhook
	w.Listen = fw.Listen.or(w.Listen)
	w.TLS.CertFile, w.TLS.KeyFile = fw.TLS.CertFile.V, fw.TLS.KeyFile.V
	w.MaxBody = fw.MaxBody.or(w.MaxBody)
	if len(fw.Routes) > 0 {
		w.Routes = make([]RouteConfig, len(fw.Routes))
		for i, r := range fw.Routes {
			base := fmt.Sprintf("webhook.routes[%d]", i)
			w.Routes[i] = RouteConfig{
				Path:           r.Path.V,
				Token:          p.secret(r.Token, r.TokenFile, base, "token"),
				Project:        r.Project.V,
				DevicePrefixes: strs(r.DevicePrefixes),
			}
		}
	}

	fb, b := &f.Buffer, &cfg.Buffer
	b.Path = fb.Path.or(b.Path)
	b.MaxBytes = fb.MaxBytes.or(b.MaxBytes)
	b.MaxAge = fb.MaxAge.or(b.MaxAge)
	b.WhenFull = fb.WhenFull.or(b.WhenFull)
	b.DedupWindow = fb.DedupWindow.or(b.DedupWindow)

	if a := fw.TLS.ACME; a != nil {
		w.TLS.ACME = &WebhookACME{
			Domains:      strs(a.Domains),
			Email:        a.Email.V,
			CacheDir:     a.CacheDir.V,
			DirectoryURL: a.DirectoryURL.or(bridge.LetsEncryptProduction),
			CAFile:       a.CAFile.V,
			HTTPListen:   a.HTTPListen.V,
		}
		// ACME state lives beside the queue: /var/lib/wittra-gateway/acme when packaged.
		if w.TLS.ACME.CacheDir == "" {
			w.TLS.ACME.CacheDir = filepath.Join(filepath.Dir(b.Path), "acme")
		}
	}

	// Present and empty (or null) means off; absent keeps the default.
	cfg.Admin.Listen = f.Admin.Listen.or(cfg.Admin.Listen)
	for i, u := range f.Admin.Users {
		base := fmt.Sprintf("admin.users[%d]", i)
		cfg.Admin.Users = append(cfg.Admin.Users, AdminUser{Username: u.Username.V, PasswordHash: p.secret(u.Password, u.PasswordFile, base, "password")})
	}

	fbr, br := &f.Broker, &cfg.Broker
	br.Enabled = fbr.Enabled.or(br.Enabled)
	if fbr.Listeners != nil { // absent or null keeps the default; [] means none
		br.Listeners = make([]ListenerConfig, len(fbr.Listeners))
		for i, l := range fbr.Listeners {
			br.Listeners[i] = ListenerConfig{Type: l.Type.V, Address: l.Address.V, CertFile: l.CertFile.V, KeyFile: l.KeyFile.V,
				ClientCAFile: l.ClientCAFile.V, AllowedOrigins: strs(l.AllowedOrigins)}
		}
	}
	for i, fu := range fbr.Users {
		u := UserConfig{
			Username:      fu.Username.V,
			Password:      p.secret(fu.Password, fu.PasswordFile, fmt.Sprintf("broker.users[%d]", i), "password"),
			Publish:       fu.Publish.V,
			Subscribe:     strs(fu.Subscribe),
			PublishTopics: strs(fu.PublishTopics),
		}
		// Absent or null: the default; [] means none.
		if u.Subscribe == nil {
			u.Subscribe = []string{"#"}
		}
		if u.PublishTopics == nil && u.Publish {
			u.PublishTopics = []string{"#"}
		}
		br.Users = append(br.Users, u)
	}
	br.AllowAnonymous = fbr.AllowAnonymous.or(len(br.Users) == 0)

	switch {
	case f.Sinks != nil:
		cfg.Sinks = make([]SinkConfig, len(f.Sinks))
		for i := range f.Sinks {
			cfg.Sinks[i] = p.sink(&f.Sinks[i], fmt.Sprintf("sinks[%d]", i), cfg.Gateway.ID)
		}
	case !br.Enabled:
		cfg.Sinks = nil // the default local sink needs the embedded broker
	}
}

func (p *parser) sink(f *fileSink, base, gatewayID string) SinkConfig {
	s := SinkConfig{
		Name:            f.Name.V,
		Type:            f.Type.V,
		TopicPrefix:     f.TopicPrefix.or(DefaultTopicPrefix),
		Values:          f.Values.V,
		Retain:          f.Retain.V,
		URL:             f.URL.V,
		ClientID:        f.ClientID.V,
		Username:        f.Username.V,
		Password:        p.secret(f.Password, f.PasswordFile, base, "password"),
		TLS:             SinkTLS{CAFile: f.TLS.CAFile.V, CertFile: f.TLS.CertFile.V, KeyFile: f.TLS.KeyFile.V, InsecureSkipVerify: f.TLS.InsecureSkipVerify.V},
		QoS:             f.QoS.or(DefaultQoS),
		Mode:            f.Mode.V,
		Tenant:          f.Tenant.V,
		DeviceName:      f.DeviceName.V,
		TokenURL:        f.TokenURL.V,
		RetainMaxAge:    f.RetainMaxAge.V,
		RetainMaxTopics: f.RetainMaxTopics.V,
		RetainMaxBytes:  f.RetainMaxBytes.V,
	}
	p.jetstreamSink(&f.FileJetStream, base, &s)
	switch s.Type {
	case "mqtt":
		if s.ClientID == "" {
			s.ClientID = "wittra-" + gatewayID
		}
	case "cumulocity":
		if s.Mode == "" {
			s.Mode = DefaultCumulocityMode
		}
		if s.DeviceName == "" {
			s.DeviceName = "Wittra gateway " + gatewayID
		}
	}
	return s
}

// secret resolves key / key_file at base. Secret values are never put in errors.
func (p *parser) secret(val, file Str, base, key string) string {
	if file.V == "" {
		return val.V
	}
	fField := base + "." + key + "_file"
	switch {
	case val.V != "":
		p.fail(file.Line, fField, fmt.Errorf("set either %s or %s_file, not both", key, key))
		p.bad[base+"."+key] = true // reported on the file key
		return ""
	case p.offline:
		return ""
	}
	path := file.V
	if !filepath.IsAbs(path) {
		path = filepath.Join(p.dir, path)
	}
	b, err := os.ReadFile(path)
	s := strings.TrimRight(string(b), "\r\n")
	switch {
	case err != nil:
		p.fail(file.Line, fField, fmt.Errorf("read secret file: %w", err))
	case s == "":
		p.fail(file.Line, fField, fmt.Errorf("secret file %s is empty", path))
	default:
		return s
	}
	p.bad[base+"."+key] = true // reported on the file key
	return ""
}
