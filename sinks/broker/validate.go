package broker

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"wittra-gateway/internal/field"
)

// Validate reports every problem of the listeners and users, zero fields
// standing for their defaults. Each is a *field.Error naming the key under
// the config file's `broker:` section. New and SetUsers refuse the same.
func (cfg Config) Validate() error {
	var errs field.List
	for i, l := range cfg.Listeners {
		l.validate(fmt.Sprintf("listeners[%d]", i), &errs)
	}
	validateUsers(cfg.Users, &errs)
	return errs.Err()
}

func (l Listener) validate(base string, errs *field.List) {
	typ := l.Type
	switch typ {
	case "":
		typ = TypeTCP
	case TypeTCP, TypeTLS, TypeWebsocket:
	default:
		errs.Add(base+".type", "must be tcp, tls or websocket (got %q)", l.Type)
	}
	switch {
	case typ == TypeTLS && l.CertFile == "":
		errs.Add(base+".cert_file", "required for type tls")
	case typ == TypeTLS && l.KeyFile == "":
		errs.Add(base+".key_file", "required for type tls")
	case (l.CertFile == "") != (l.KeyFile == ""):
		errs.Add(base, "cert_file and key_file must be set together")
	case typ == TypeTCP && l.CertFile != "":
		errs.Add(base+".cert_file", "needs type tls (or websocket for wss)")
	}
	switch {
	case l.ClientCAFile == "":
	case typ == TypeTCP:
		errs.Add(base+".client_ca_file", "needs type tls, or websocket with cert_file and key_file")
	case typ == TypeWebsocket && l.CertFile == "":
		errs.Add(base+".client_ca_file", "needs TLS: set cert_file and key_file too")
	}
	if len(l.AllowedOrigins) > 0 && typ != TypeWebsocket {
		errs.Add(base+".allowed_origins", "only for type websocket")
	}
	for j, o := range l.AllowedOrigins {
		if err := checkOrigin(o); err != nil {
			errs.Add(fmt.Sprintf("%s.allowed_origins[%d]", base, j), "%v", err)
		}
	}
}

func validateUsers(users []User, errs *field.List) {
	errs.Accounts("users", len(users), func(i int) (string, string) { return users[i].Username, users[i].Password },
		"password or password_file", CheckPassword)
	for i, u := range users {
		base := fmt.Sprintf("users[%d]", i)
		for j, f := range u.Subscribe {
			if err := CheckFilter(f); err != nil {
				errs.Add(fmt.Sprintf("%s.subscribe[%d]", base, j), "not a valid topic filter: %v", err)
			}
		}
		switch {
		case !u.Publish && len(u.PublishTopics) > 0:
			errs.Add(base+".publish_topics", "needs publish: true")
		case u.Publish && u.PublishTopics != nil && len(u.PublishTopics) == 0:
			errs.Add(base+".publish_topics", "empty: to forbid publishing, set publish: false")
		}
		for j, f := range u.PublishTopics {
			if err := CheckFilter(f); err != nil {
				errs.Add(fmt.Sprintf("%s.publish_topics[%d]", base, j), "not a valid topic filter: %v", err)
			}
		}
	}
}

// checkOrigin accepts a browser Origin as sent in the header: scheme://host[:port]
// with scheme http or https, nothing else.
func checkOrigin(o string) error {
	const want = "want scheme://host[:port], e.g. https://dashboard.example.com"
	if o == "" {
		return errors.New("must not be empty")
	}
	if o == "null" || o == "*" {
		return fmt.Errorf("%q is not accepted: %s", o, want)
	}
	u, err := url.Parse(o)
	switch {
	case err != nil:
		return fmt.Errorf("%q is not an origin: %s", o, want)
	case u.Scheme != "http" && u.Scheme != "https":
		return fmt.Errorf("%q: scheme must be http or https", o)
	case u.Host == "" || u.Hostname() == "":
		return fmt.Errorf("%q has no host: %s", o, want)
	case u.User != nil || u.Path != "" || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(o, "#"):
		return fmt.Errorf("%q has more than scheme://host[:port] (browsers send no path, not even a trailing /)", o)
	}
	return nil
}
