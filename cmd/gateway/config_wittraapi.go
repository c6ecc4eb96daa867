package main

// The `wittra_api:` section: where device names come from. Kept apart from
// config.go so that the section's keys live in one place.

import (
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
	if w.URL == "" {
		p.invalid("wittra_api.url", "must not be empty (absent: %s)", wittraapi.DefaultURL)
	}
	if w.Refresh < minWittraRefresh {
		p.invalid("wittra_api.refresh", "must be at least %v", minWittraRefresh)
	}
	p.own("wittra_api", wittraConfig(w).Validate())
}

// wittraConfig is the wittraapi package's view of the section (names.go
// adds what the running gateway provides).
func wittraConfig(w *WittraAPIConfig) *wittraapi.Config {
	return &wittraapi.Config{URL: w.URL, OrganizationID: w.OrganizationID, APIKey: w.APIKey, Projects: w.Projects, Refresh: w.Refresh}
}
