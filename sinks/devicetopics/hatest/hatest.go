// Package hatest checks Home Assistant MQTT discovery configs against what
// the Home Assistant documentation allows. Only tests import it.
package hatest

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// What the Home Assistant documentation allows in a discovery config, as
// read from the home-assistant.io repository (source/_integrations/):
//   - sensor.mqtt.markdown (commit 9e4a69ab): the sensor keys;
//   - device_tracker.mqtt.markdown (commit 0b7e08a0): the device_tracker keys
//     and source_type values; state_topic "can only be omitted if only
//     json_attributes_topic is used"; latitude, longitude and optional
//     gps_accuracy in the JSON attributes place the tracker;
//   - binary_sensor.mqtt.markdown (commit 04987cbb): the binary_sensor keys;
//   - sensor.markdown (commit 0015df1c): device classes and their units;
//   - mqtt.markdown (commit 00db44af): the discovery topic
//     <prefix>/<component>/[<node_id>/]<object_id>/config, object ids of
//     [a-zA-Z0-9_-], Home Assistant's birth message "online" on
//     <prefix>/status;
//   - origin {name (required), sw_version, support_url}: home-assistant/core
//     pull request 98782 "Add origin info support for MQTT discovered items";
//   - state classes measurement, total, total_increasing: developers'
//     sensor entity documentation.

var (
	// entityCommon are the keys every MQTT entity takes (sensor doc).
	entityCommon = set("availability", "availability_mode", "availability_template", "availability_topic",
		"device", "enabled_by_default", "encoding", "entity_category", "entity_picture", "icon",
		"json_attributes_template", "json_attributes_topic", "name", "object_id", "payload_available",
		"payload_not_available", "qos", "unique_id", "origin")

	docKeys = map[string]map[string]bool{
		"sensor": union(entityCommon, set("device_class", "expire_after", "force_update",
			"last_reset_value_template", "options", "platform", "suggested_display_precision",
			"state_class", "state_topic", "unit_of_measurement", "value_template")),
		"device_tracker": union(entityCommon, set("payload_home", "payload_not_home", "payload_reset",
			"source_type", "state_topic", "value_template")),
		"binary_sensor": union(entityCommon, set("device_class", "expire_after", "force_update",
			"off_delay", "payload_off", "payload_on", "state_topic", "value_template")),
	}

	docDeviceKeys = set("configuration_url", "connections", "hw_version", "identifiers", "manufacturer",
		"model", "model_id", "name", "serial_number", "suggested_area", "sw_version", "via_device")

	docOriginKeys = set("name", "sw_version", "support_url")

	// docUnits: the sensor device classes the gateway uses and the units
	// the documentation lists for each.
	docUnits = map[string]map[string]bool{
		"temperature": set("°C", "°F", "K"),
		"humidity":    set("%"),
		"pressure":    set("Pa", "kPa", "hPa", "bar", "cbar", "mbar", "mmHg", "inHg", "psi"),
		"battery":     set("%"),
		"voltage":     set("V", "mV", "µV", "kV", "MV"),
		"illuminance": set("lx"),
		"current":     set("A", "mA"),
		"duration":    set("d", "h", "min", "s", "ms", "µs"),
	}

	docStateClasses   = set("measurement", "total", "total_increasing")
	docSourceTypes    = set("gps", "router", "bluetooth", "bluetooth_le")
	docEntityCategory = set("config", "diagnostic")
)

func set(s ...string) map[string]bool {
	m := make(map[string]bool, len(s))
	for _, k := range s {
		m[k] = true
	}
	return m
}

func union(a, b map[string]bool) map[string]bool {
	m := make(map[string]bool, len(a)+len(b))
	for k := range a {
		m[k] = true
	}
	for k := range b {
		m[k] = true
	}
	return m
}

// Config is a parsed discovery config and where it was published.
type Config struct {
	Topic     string
	Component string // sensor, device_tracker, binary_sensor
	ObjectID  string
	Raw       map[string]any
}

// Str returns the string value of key ("" if absent or not a string).
func (c Config) Str(key string) string {
	s, _ := c.Raw[key].(string)
	return s
}

// Device returns the device map.
func (c Config) Device() map[string]any {
	d, _ := c.Raw["device"].(map[string]any)
	return d
}

var objectIDRe = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

// Check parses the config published on topic and checks it against the
// documentation: topic form, known keys only, required keys, device and
// origin keys, device classes with their documented units, state classes,
// source types. It does not check that the topics it names are published:
// the callers' tests do, against a real broker.
func Check(prefix, topic string, payload []byte) (Config, error) {
	var c Config
	c.Topic = topic
	rest, ok := strings.CutPrefix(topic, prefix+"/")
	if !ok {
		return c, fmt.Errorf("%s: not under %s/", topic, prefix)
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 || parts[2] != "config" {
		return c, fmt.Errorf("%s: want %s/<component>/<object_id>/config", topic, prefix)
	}
	c.Component, c.ObjectID = parts[0], parts[1]
	allowed, known := docKeys[c.Component]
	if !known {
		return c, fmt.Errorf("%s: component %q not checked here", topic, c.Component)
	}
	if !objectIDRe.MatchString(c.ObjectID) {
		return c, fmt.Errorf("%s: object id %q is not [a-zA-Z0-9_-]+", topic, c.ObjectID)
	}
	if err := json.Unmarshal(payload, &c.Raw); err != nil {
		return c, fmt.Errorf("%s: payload is not a JSON object: %w", topic, err)
	}
	var errs []string
	fail := func(f string, a ...any) { errs = append(errs, fmt.Sprintf(f, a...)) }
	for k := range c.Raw {
		if !allowed[k] {
			fail("key %q is not a %s key", k, c.Component)
		}
	}
	for k, v := range c.Raw {
		switch k {
		case "device", "origin":
		default:
			if _, ok := v.(string); !ok {
				fail("%s: %v is not a string", k, v)
			}
		}
	}
	if c.Str("unique_id") == "" {
		fail("unique_id missing (needed for a device)")
	} else if c.Str("unique_id") != c.ObjectID {
		fail("object id %q is not the unique_id %q (the documented best practice)", c.ObjectID, c.Str("unique_id"))
	}
	switch c.Component {
	case "sensor", "binary_sensor":
		if c.Str("state_topic") == "" {
			fail("state_topic is required")
		}
	case "device_tracker":
		if c.Str("state_topic") == "" && c.Str("json_attributes_topic") == "" {
			fail("state_topic or json_attributes_topic is required")
		}
		if st := c.Str("source_type"); st != "" && !docSourceTypes[st] {
			fail("source_type %q not one of the documented", st)
		}
	}
	if dc := c.Str("device_class"); dc != "" && c.Component == "sensor" {
		units, ok := docUnits[dc]
		switch {
		case !ok:
			fail("device_class %q not one the gateway should use", dc)
		case !units[c.Str("unit_of_measurement")]:
			fail("unit %q is not a documented unit of %s", c.Str("unit_of_measurement"), dc)
		}
	}
	if sc := c.Str("state_class"); sc != "" && !docStateClasses[sc] {
		fail("state_class %q not documented", sc)
	}
	if ec := c.Str("entity_category"); ec != "" && !docEntityCategory[ec] {
		fail("entity_category %q not documented", ec)
	}
	dev := c.Device()
	if dev == nil {
		fail("device missing")
	}
	for k := range dev {
		if !docDeviceKeys[k] {
			fail("device key %q not documented", k)
		}
	}
	if ids, _ := dev["identifiers"].([]any); len(ids) == 0 {
		fail("device.identifiers missing (identifiers or connections are required)")
	}
	o, _ := c.Raw["origin"].(map[string]any)
	if o == nil {
		fail("origin missing")
	}
	for k := range o {
		if !docOriginKeys[k] {
			fail("origin key %q not documented", k)
		}
	}
	if name, _ := o["name"].(string); name == "" {
		fail("origin.name is required")
	}
	if len(errs) > 0 {
		return c, fmt.Errorf("%s: %s", topic, strings.Join(errs, "; "))
	}
	return c, nil
}

// Announced checks every discovery config among last (topic → the last
// payload seen on it, as a subscriber to everything saw them) with Check,
// and that the topics each names carry the device's values in last: the
// availability topic "online", a number on a sensor with a state class,
// latitude and longitude on the tracker's attributes topic. It returns the
// configs by topic.
func Announced(prefix string, last map[string]string) (map[string]Config, error) {
	cfgs := map[string]Config{}
	var errs []error
	for topic, payload := range last {
		if !strings.HasPrefix(topic, prefix+"/") || topic == prefix+"/status" {
			continue
		}
		c, err := Check(prefix, topic, []byte(payload))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		cfgs[topic] = c
		if c.Component == "binary_sensor" { // the gateway's status
			if v := last[c.Str("state_topic")]; v != "online" {
				errs = append(errs, fmt.Errorf("%s: state topic %s carries %q, want online", topic, c.Str("state_topic"), v))
			}
			continue
		}
		if v := last[c.Str("availability_topic")]; v != "online" {
			errs = append(errs, fmt.Errorf("%s: availability topic %s carries %q", topic, c.Str("availability_topic"), v))
		}
		switch c.Component {
		case "sensor":
			v, ok := last[c.Str("state_topic")]
			switch {
			case !ok:
				errs = append(errs, fmt.Errorf("%s: nothing arrived on its state topic %s", topic, c.Str("state_topic")))
			case c.Str("state_class") != "":
				if _, err := strconv.ParseFloat(v, 64); err != nil {
					errs = append(errs, fmt.Errorf("%s: state topic carries %q, not a number", topic, v))
				}
			}
		case "device_tracker":
			var loc struct{ Latitude, Longitude *float64 }
			at := c.Str("json_attributes_topic")
			if err := json.Unmarshal([]byte(last[at]), &loc); err != nil || loc.Latitude == nil || loc.Longitude == nil {
				errs = append(errs, fmt.Errorf("%s: attributes topic %s carries %q: no latitude and longitude", topic, at, last[at]))
			}
		}
	}
	return cfgs, errors.Join(errs...)
}
