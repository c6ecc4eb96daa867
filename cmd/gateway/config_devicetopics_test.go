package main

import (
	"testing"
)

func TestDeviceTopicsConfig(t *testing.T) {
	dir := t.TempDir()
	cfg := mustParse(t, yml(
		"sinks:",
		"  - {name: local, type: broker, values: true, state: true, homeassistant: {enabled: true}}",
		"  - {name: central, type: mqtt, url: tcp://h:1883, values: true, homeassistant: {enabled: true, discovery_prefix: ha/site-a}}",
		"  - {name: plain, type: broker, topic_prefix: other}",
	), dir)
	want := []DeviceTopicsSinkConfig{
		{State: true, HomeAssistant: HomeAssistantConfig{Enabled: true}},
		{HomeAssistant: HomeAssistantConfig{Enabled: true, DiscoveryPrefix: "ha/site-a"}},
		{},
	}
	for i, w := range want {
		if got := cfg.Sinks[i].DeviceTopics; got != w {
			t.Errorf("sinks[%d]: %+v, want %+v", i, got, w)
		}
	}
	o := deviceTopics(cfg.Sinks[0])
	if !o.State || !o.HomeAssistant.Enabled || o.HomeAssistant.DiscoveryPrefix != "" || o.Version != Version {
		t.Errorf("options %+v", o)
	}

	wantProblems(t, []problemCase{
		{"NeedsValues", yml("sinks:", "  - {name: s, type: broker, values: false, homeassistant: {enabled: true}}"), []string{"sinks[0].homeassistant.enabled", "values: true"}},
		{"PrefixOverlap", yml("sinks:", "  - {name: s, type: broker, values: true, homeassistant: {enabled: true, discovery_prefix: wittra/ha}}"), []string{"sinks[0].homeassistant.discovery_prefix", "overlaps"}},
		{"PrefixWildcard", yml("sinks:", "  - {name: s, type: mqtt, url: tcp://h, values: true, homeassistant: {enabled: true, discovery_prefix: 'ha/#'}}"), []string{"sinks[0].homeassistant.discovery_prefix", "+ #"}},
		{"NotForCumulocity", yml("sinks:", "  - {name: s, type: cumulocity, url: tcp://h, tenant: t, username: u, password: p, state: true}"), []string{"sinks[0].state", "not a key of type cumulocity"}},
		{"UnknownSubkey", yml("sinks:", "  - {name: s, type: broker, homeassistant: {enable: true}}"), []string{"enable", "unknown key"}},
		{"NotABool", yml("sinks:", "  - {name: s, type: broker, state: maybe}"), []string{"sinks[0].state"}},
	})
}
