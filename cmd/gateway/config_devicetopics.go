package main

// The state topic and Home Assistant discovery keys of a broker or mqtt
// sink: their validation and the sink options. Kept apart from config.go
// so that these keys live in one place.
//
//	state: true                      # retained P/J/D/state
//	homeassistant:
//	  enabled: true                  # needs values: true
//	  discovery_prefix: homeassistant

import (
	"wittra-gateway/sinks/devicetopics"
)

// DeviceTopicsSinkConfig holds a sink's state and homeassistant keys
// (inlined into SinkConfig).
type DeviceTopicsSinkConfig struct {
	State         bool                `yaml:"state" types:"broker mqtt"`
	HomeAssistant HomeAssistantConfig `yaml:"homeassistant" types:"broker mqtt"`
}

// HomeAssistantConfig is a sink's `homeassistant:`.
type HomeAssistantConfig struct {
	Enabled         bool   `yaml:"enabled"`
	DiscoveryPrefix string `yaml:"discovery_prefix"` // "" = devicetopics.DefaultDiscoveryPrefix
}

// validateDeviceTopics checks the keys of a broker or mqtt sink (other
// types reject them as keys they do not read).
func (p *parser) validateDeviceTopics(base string, s SinkConfig) {
	ha := s.DeviceTopics.HomeAssistant
	if !ha.Enabled || (s.Type != "broker" && s.Type != "mqtt") {
		return
	}
	if !s.Values {
		p.invalid(base+".homeassistant.enabled", "needs values: true (Home Assistant's sensors read the value topics)")
	}
	prefix := ha.DiscoveryPrefix
	if prefix == "" {
		prefix = devicetopics.DefaultDiscoveryPrefix
	}
	if err := devicetopics.CheckDiscoveryPrefix(prefix, s.TopicPrefix); err != nil {
		p.invalid(base+".homeassistant.discovery_prefix", "%v", err)
	}
}

// deviceTopics is the devicetopics part of a sink's options; run.go adds
// the Directory that names the devices.
func deviceTopics(sc SinkConfig) devicetopics.Options {
	ha := sc.DeviceTopics.HomeAssistant
	return devicetopics.Options{
		State:         sc.DeviceTopics.State,
		HomeAssistant: devicetopics.HomeAssistant{Enabled: ha.Enabled, DiscoveryPrefix: ha.DiscoveryPrefix},
		Version:       Version,
	}
}
