package cumulocity

import (
	"cmp"
	"net/url"
	"strings"

	"wittra-gateway/internal/field"
	"wittra-gateway/internal/mqttpub"
	"wittra-gateway/sinks"
)

// mqttSchemes are the URL schemes of mode mqtt.
var mqttSchemes = []string{"tcp", "mqtt", "ssl", "mqtts", "tls"}

// Validate reports every problem of cfg that shows without the network,
// zero fields standing for their defaults. Each is a *field.Error naming
// the key of a `type: cumulocity` sink in the config file. With
// certificate login (tls.cert_file and no password) the certificate is
// read to check its common name against gateway.id or client_id. New
// refuses the same.
func (cfg Config) Validate() error {
	var errs field.List
	mode := cmp.Or(cfg.Mode, ModeMQTT)
	u, uerr := url.Parse(cfg.URL)
	switch {
	case mode != ModeMQTT && mode != ModeREST:
		errs.Add("mode", "must be mqtt or rest (got %q)", cfg.Mode)
	case cfg.URL == "":
		errs.Add("url", "required for type cumulocity")
	case uerr != nil:
		errs.Add("url", "not a valid URL")
	case mode == ModeMQTT:
		if _, _, err := mqttpub.ParseURL(cfg.URL, mqttSchemes...); err != nil {
			errs.Add("url", "%v (mode mqtt)", err)
		}
	case u.Scheme != "https" && u.Scheme != "http":
		errs.Add("url", "must start with https:// or http:// (mode rest)")
	case u.User != nil:
		errs.Add("url", "must not contain credentials: use username and password")
	case u.Host == "":
		errs.Add("url", "must name a host")
	}
	// The gateway id is the MQTT client id and the device's external id.
	if err := sinks.CheckTopicPart(cfg.GatewayID, false); err != nil {
		errs.Add("/gateway.id", "%v", err)
	} else if strings.Contains(cfg.GatewayID, ":") {
		errs.Add("/gateway.id", "must not contain ':' with a cumulocity sink (it is the Cumulocity client id)")
	}
	if strings.Contains(cfg.Tenant, "/") {
		errs.Add("tenant", "must not contain /")
	}
	if (cfg.TLS.CertFile == "") != (cfg.TLS.KeyFile == "") {
		errs.Add("tls", "cert_file and key_file must be set together")
	}
	if cfg.TLS.CertFile == "" || cfg.Password != "" {
		if cfg.Tenant == "" {
			errs.Add("tenant", "required for type cumulocity")
		}
		if cfg.Username == "" {
			errs.Add("username", "required for type cumulocity")
		}
		if cfg.Password == "" {
			errs.Add("password", "required for type cumulocity (password or password_file; or a device certificate in tls.cert_file and key_file)")
		}
		if cfg.ClientID != "" {
			errs.Add("client_id", "only used with certificate login (tls.cert_file and key_file, no password)")
		}
		if cfg.TokenURL != "" {
			errs.Add("token_url", "only used by mode rest with certificate login")
		}
		return errs.Err()
	}
	if cfg.TokenURL != "" && mode != ModeREST {
		errs.Add("token_url", "only used by mode rest with certificate login")
	}
	if len(errs) > 0 {
		return errs.Err() // the certificate cannot be judged against a bad url or id
	}
	if err := CheckCertificateLogin(cfg); err != nil {
		key := "tls.cert_file"
		for _, k := range []string{"client_id", "url", "token_url"} {
			if strings.HasPrefix(err.Error(), k) {
				key = k
			}
		}
		errs.Add(key, "certificate login: %v", err)
	}
	return errs.Err()
}
