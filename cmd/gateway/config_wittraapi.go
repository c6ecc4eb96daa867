package main

// The `wittra_api:` section: where device names come from. Kept apart from
// config.go so that the section's keys live in one place.

import (
	"fmt"
	"net/url"
	"strings"
	"time"

	"wittra-gateway/wittraapi"
)

// WittraAPIConfig is the optional `wittra_api:` section (nil: absent, no
// names are fetched).
type WittraAPIConfig struct {
	URL            string        `yaml:"url"`             // default wittraapi.DefaultURL
	OrganizationID string        `yaml:"organization_id"` // required
	APIKey         string        `yaml:"api_key" secret:"file"`
	Projects       []string      `yaml:"projects"` // empty: the projects seen in webhooks
	Refresh        time.Duration `yaml:"refresh"`  // default 1h, at least 1m
}

func (w *WittraAPIConfig) setDefaults() {
	w.URL, w.Refresh = wittraapi.DefaultURL, wittraapi.DefaultRefresh
}

// minWittraRefresh keeps a mistyped refresh (1s) from hammering the API.
const minWittraRefresh = time.Minute

func (p *parser) validateWittraAPI(c *Config) {
	w := c.WittraAPI
	if w == nil {
		return
	}
	const base = "wittra_api"
	if w.URL == "" {
		p.invalid(base+".url", "must not be empty (absent: %s)", wittraapi.DefaultURL)
	} else {
		if u, err := url.Parse(w.URL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
			p.invalid(base+".url", "must start with https:// (http:// only for a local test server) and name a host, without credentials")
		}
	}
	switch {
	case w.OrganizationID == "":
		p.invalid(base+".organization_id", "required (the organization id shown in the Wittra portal)")
	case strings.ContainsAny(w.OrganizationID, "/:?# "):
		p.invalid(base+".organization_id", "must not contain / : ? # or spaces")
	}
	if w.APIKey == "" && !p.offline {
		p.invalid(base+".api_key", "required (api_key_file, or api_key): a key made under \"Manage API Keys\" in the Wittra portal")
	}
	if len(w.Projects) > wittraapi.MaxProjects {
		p.invalid(base+".projects", "at most %d projects", wittraapi.MaxProjects)
	}
	for i, pr := range w.Projects {
		if pr == "" || strings.ContainsAny(pr, "/?# ") {
			p.invalid(fmt.Sprintf("%s.projects[%d]", base, i), "must be a Wittra project id (no / ? # or spaces)")
		}
	}
	if w.Refresh < minWittraRefresh {
		p.invalid(base+".refresh", "must be at least %v", minWittraRefresh)
	}
}
