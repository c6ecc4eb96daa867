package main

// The state topic and Home Assistant discovery keys of a broker or mqtt
// sink: parsing, validation and the sink options. Kept apart from
// config.go so that these keys live in one place.
//
//	state: true                      # retained P/J/D/state
//	homeassistant:
//	  enabled: true                  # needs values: true
//	  discovery_prefix: homeassistant

import (
	"gopkg.in/yaml.v3"

	"wittra-gateway/sinks"
	"wittra-gateway/sinks/devicetopics"
)

// DeviceTopicsSinkConfig holds a sink's state and homeassistant keys.
type DeviceTopicsSinkConfig struct {
	State           bool   // state
	HomeAssistant   bool   // homeassistant.enabled
	DiscoveryPrefix string // homeassistant.discovery_prefix; "" = devicetopics.DefaultDiscoveryPrefix
}

// rawDeviceTopics is inlined into rawSink.
type rawDeviceTopics struct {
	State         yaml.Node        `yaml:"state"`
	HomeAssistant rawHomeAssistant `yaml:"homeassistant"`
}

type rawHomeAssistant struct {
	Enabled         yaml.Node `yaml:"enabled"`
	DiscoveryPrefix yaml.Node `yaml:"discovery_prefix"`
}

// deviceTopicsKeys are the keys of broker and mqtt sinks read here.
var deviceTopicsKeys = []string{"state", "homeassistant"}

func (p *parser) deviceTopicsSink(r *rawDeviceTopics, base string, s *SinkConfig) {
	d := &s.DeviceTopics
	p.boolean(&r.State, base+".state", &d.State)
	p.boolean(&r.HomeAssistant.Enabled, base+".homeassistant.enabled", &d.HomeAssistant)
	p.str(&r.HomeAssistant.DiscoveryPrefix, base+".homeassistant.discovery_prefix", &d.DiscoveryPrefix)
}

// validateDeviceTopics checks the keys of a broker or mqtt sink (other
// types reject them as keys they do not read).
func (p *parser) validateDeviceTopics(base string, s SinkConfig) {
	d := s.DeviceTopics
	if !d.HomeAssistant || (s.Type != "broker" && s.Type != "mqtt") {
		return
	}
	if !s.Values {
		p.invalid(base+".homeassistant.enabled", "needs values: true (Home Assistant's sensors read the value topics)")
	}
	prefix := d.DiscoveryPrefix
	if prefix == "" {
		prefix = devicetopics.DefaultDiscoveryPrefix
	}
	if err := devicetopics.CheckDiscoveryPrefix(prefix, s.TopicPrefix); err != nil {
		p.invalid(base+".homeassistant.discovery_prefix", "%v", err)
	}
}

// deviceTopics is the devicetopics part of a sink's options. dir names the
// devices (nil: no names known).
func deviceTopics(sc SinkConfig, dir sinks.Directory) devicetopics.Options {
	return devicetopics.Options{
		State:         sc.DeviceTopics.State,
		HomeAssistant: devicetopics.HomeAssistant{Enabled: sc.DeviceTopics.HomeAssistant, DiscoveryPrefix: sc.DeviceTopics.DiscoveryPrefix},
		Directory:     dir,
		Version:       Version,
	}
}
