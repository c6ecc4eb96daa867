package main

// The `wittra_api:` section: where device names come from. Kept apart from
// config.go so that the section's keys live in one place.

import (
	"fmt"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"wittra-gateway/wittraapi"
)

// WittraAPIConfig is the optional `wittra_api:` section (nil: absent, no
// names are fetched).
type WittraAPIConfig struct {
	URL            string        // default wittraapi.DefaultURL
	OrganizationID string        // required
	APIKey         string        // secret, from api_key or api_key_file
	Projects       []string      // empty: the projects seen in webhooks
	Refresh        time.Duration // default 1h, at least 1m
}

type rawWittraAPI struct {
	URL            yaml.Node   `yaml:"url"`
	OrganizationID yaml.Node   `yaml:"organization_id"`
	APIKey         yaml.Node   `yaml:"api_key"`
	APIKeyFile     yaml.Node   `yaml:"api_key_file"`
	Projects       []yaml.Node `yaml:"projects"`
	Refresh        yaml.Node   `yaml:"refresh"`
}

// minWittraRefresh keeps a mistyped refresh (1s) from hammering the API.
const minWittraRefresh = time.Minute

func (p *parser) wittraAPI(r *rawWittraAPI, cfg *Config) {
	if r == nil {
		return
	}
	const base = "wittra_api"
	w := &WittraAPIConfig{URL: wittraapi.DefaultURL, Refresh: wittraapi.DefaultRefresh}
	p.str(&r.URL, base+".url", &w.URL)
	p.str(&r.OrganizationID, base+".organization_id", &w.OrganizationID)
	p.secret(&r.APIKey, &r.APIKeyFile, base, "api_key", &w.APIKey)
	w.Projects = p.strList(r.Projects, base+".projects")
	p.duration(&r.Refresh, base+".refresh", &w.Refresh)
	cfg.WittraAPI = w
}

func (p *parser) validateWittraAPI(c *Config) {
	w := c.WittraAPI
	if w == nil {
		return
	}
	const base = "wittra_api"
	if w.URL == "" {
		p.invalid(base+".url", "must not be empty (absent: %s)", wittraapi.DefaultURL)
	} else {
		p.checkURL(base+".url", w.URL, []string{"https", "http"}, "https:// (http:// only for a local test server)")
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
