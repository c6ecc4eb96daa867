package devicetopics

import (
	"bytes"
	"encoding/json"
	"strings"
	"time"

	"wittra-gateway/sinks"
	"wittra-gateway/wittra"
)

// Home Assistant MQTT discovery (https://www.home-assistant.io/integrations/mqtt/,
// sensor.mqtt, device_tracker.mqtt, binary_sensor.mqtt): one retained
// config per entity on <prefix>/<component>/<object id>/config.
//
//   - per device and value key a sensor whose state_topic is the value
//     topic; device_class and unit where the key's meaning is known;
//   - per location key a device_tracker reading latitude and longitude
//     from the location value topic as JSON attributes;
//   - one binary_sensor (connectivity) for the gateway itself, reading its
//     status topic: the device the Wittra devices name as via_device (Home
//     Assistant warns about a via_device it does not know).
//
// Every entity is available while the gateway's status topic says online.

// Manufacturer is the device manufacturer shown in Home Assistant.
const Manufacturer = "Wittra"

// originName names the gateway in the configs' origin.
const originName = "wittra-gateway"

// haConfig is a discovery payload; field names as in the documentation
// (no abbreviations, so the payloads read like the docs).
type haConfig struct {
	Name                string   `json:"name"`
	UniqueID            string   `json:"unique_id"`
	StateTopic          string   `json:"state_topic,omitempty"`
	JSONAttributesTopic string   `json:"json_attributes_topic,omitempty"`
	SourceType          string   `json:"source_type,omitempty"`
	DeviceClass         string   `json:"device_class,omitempty"`
	UnitOfMeasurement   string   `json:"unit_of_measurement,omitempty"`
	StateClass          string   `json:"state_class,omitempty"`
	PayloadOn           string   `json:"payload_on,omitempty"`
	PayloadOff          string   `json:"payload_off,omitempty"`
	EntityCategory      string   `json:"entity_category,omitempty"`
	AvailabilityTopic   string   `json:"availability_topic,omitempty"`
	Device              haDevice `json:"device"`
	Origin              haOrigin `json:"origin"`
}

type haDevice struct {
	Identifiers  []string `json:"identifiers"`
	Name         string   `json:"name"`
	Manufacturer string   `json:"manufacturer,omitempty"`
	Model        string   `json:"model,omitempty"`
	SWVersion    string   `json:"sw_version,omitempty"`
	ViaDevice    string   `json:"via_device,omitempty"`
}

type haOrigin struct {
	Name      string `json:"name"`
	SWVersion string `json:"sw_version,omitempty"`
}

// class is what Home Assistant is told about a numeric key.
type class struct{ deviceClass, unit string }

// classify returns the device class and unit of a numeric value key, from
// its last level and the one above (units as Wittra documents them).
func classify(path string) class {
	last, parent := path, ""
	if i := strings.LastIndexByte(path, '/'); i >= 0 {
		last = path[i+1:]
		parent = path[:i]
		if j := strings.LastIndexByte(parent, '/'); j >= 0 {
			parent = parent[j+1:]
		}
	}
	switch {
	case last == "temperature":
		return class{"temperature", "°C"}
	case last == "humidity":
		return class{"humidity", "%"}
	case last == "pressure":
		return class{"pressure", "hPa"}
	case last == "light" || last == "illuminance":
		return class{"illuminance", "lx"}
	case parent == "battery" && last == "percentage":
		return class{"battery", "%"}
	case parent == "battery" && last == "voltage":
		return class{"voltage", "V"}
	case parent == "currentmeter" && last == "voltage":
		return class{"voltage", "mV"} // an integer in mV, unlike the battery's
	case parent == "currentmeter" && (last == "average" || last == "max" || last == "min"):
		return class{"current", "A"}
	case parent == "usage" && (last == "moving" || last == "stationary"):
		return class{"duration", "s"}
	}
	return class{}
}

// objectID makes s usable as a discovery topic level and unique id: the
// documentation allows [a-zA-Z0-9_-]; anything else becomes '_'.
func objectID(s string) string {
	ok := true
	for i := 0; i < len(s) && ok; i++ {
		ok = isIDChar(s[i])
	}
	if ok {
		return s
	}
	b := []byte(s)
	for i, c := range b {
		if !isIDChar(c) {
			b[i] = '_'
		}
	}
	return string(b)
}

func isIDChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// entityName turns a key path into a readable entity name:
// "battery/percentage" → "Battery percentage", "humidity/humidity" →
// "Humidity", "wittra-lpth-light/light" → "Lpth light".
func entityName(path string) string {
	var words []string
	for _, l := range strings.Split(path, "/") {
		l = strings.TrimPrefix(l, "wittra-")
		l = strings.NewReplacer("-", " ", "_", " ").Replace(l)
		if len(words) > 0 && words[len(words)-1] == l {
			continue
		}
		words = append(words, l)
	}
	// "wittra-lpth-light/light": drop a last word the one before ends with.
	if n := len(words); n >= 2 && strings.HasSuffix(words[n-2], " "+words[n-1]) {
		words = words[:n-1]
	}
	s := strings.Join(words, " ")
	if s == "" {
		return path
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// DeviceName is the name Home Assistant shows for a device: its Wittra
// name, or "Wittra <id>".
func DeviceName(id string, info sinks.DeviceInfo) string {
	if info.Name != "" {
		return info.Name
	}
	return "Wittra " + id
}

func (t *Topics) gatewayIdentifier() string { return "wittra_gateway_" + objectID(t.o.GatewayID) }

func (t *Topics) origin() haOrigin { return haOrigin{Name: originName, SWVersion: t.o.Version} }

// gatewayConfig is the binary_sensor of the gateway's own status.
func (t *Topics) gatewayConfig() sinks.Publication {
	id := t.gatewayIdentifier()
	return t.configPub("binary_sensor", id, haConfig{
		Name:           "Status",
		UniqueID:       id,
		StateTopic:     t.status,
		DeviceClass:    "connectivity",
		PayloadOn:      "online",
		PayloadOff:     "offline",
		EntityCategory: "diagnostic",
		Device: haDevice{
			Identifiers: []string{id},
			Name:        "Wittra gateway " + t.o.GatewayID,
			Model:       originName,
			SWVersion:   t.o.Version,
		},
		Origin: t.origin(),
	})
}

// config returns the discovery config of key k of device dk; false when k
// gets no entity (arrays and objects other than a location).
func (t *Topics) config(dk devKey, info sinks.DeviceInfo, k *key) (sinks.Publication, bool) {
	valueTopic := t.o.TopicPrefix + "/" + dk.project + "/" + dk.device + "/" + k.path
	uid := "wittra_" + objectID(dk.device) + "_" + objectID(strings.ReplaceAll(k.path, "/", "_"))
	c := haConfig{
		Name:              entityName(k.path),
		UniqueID:          uid,
		AvailabilityTopic: t.status,
		Device: haDevice{
			Identifiers:  []string{"wittra_" + objectID(dk.device)},
			Name:         DeviceName(dk.device, info),
			Manufacturer: Manufacturer,
			Model:        info.Type,
			ViaDevice:    t.gatewayIdentifier(),
		},
		Origin: t.origin(),
	}
	switch k.kind {
	case wittra.KindJSON:
		if k.path != "location" && !strings.HasSuffix(k.path, "/location") {
			return sinks.Publication{}, false
		}
		// The location value is {latitude, longitude, accuracy, level,
		// height, label}: Home Assistant places the tracker from latitude
		// and longitude and keeps the rest as attributes. Wittra's
		// accuracy is a 0–1 score, not the metres gps_accuracy means, so
		// it is not renamed to gps_accuracy (Home Assistant then takes 0).
		c.JSONAttributesTopic = valueTopic
		c.SourceType = "gps"
		return t.configPub("device_tracker", uid, c), true
	case wittra.KindNumber:
		cl := classify(k.path)
		c.DeviceClass, c.UnitOfMeasurement = cl.deviceClass, cl.unit
		c.StateClass = "measurement"
	}
	c.StateTopic = valueTopic
	return t.configPub("sensor", uid, c), true
}

func (t *Topics) configPub(component, objID string, c haConfig) sinks.Publication {
	b, err := json.Marshal(c)
	if err != nil { // plain strings and slices: cannot fail
		panic(err)
	}
	return sinks.Publication{
		Topic:   t.o.HomeAssistant.DiscoveryPrefix + "/" + component + "/" + objID + "/config",
		Payload: b,
		Retain:  true,
	}
}

// StatusTopic is where Home Assistant announces itself ("online" after it
// starts); "" when discovery is off.
func (t *Topics) StatusTopic() string {
	if t == nil || !t.o.HomeAssistant.Enabled {
		return ""
	}
	return t.o.HomeAssistant.DiscoveryPrefix + "/status"
}

// DiscoveryPrefix returns the discovery prefix; "" when discovery is off.
func (t *Topics) DiscoveryPrefix() string {
	if t == nil || !t.o.HomeAssistant.Enabled {
		return ""
	}
	return t.o.HomeAssistant.DiscoveryPrefix
}

// Online takes a message of StatusTopic: "online" asks Republish to
// publish every config again. It never blocks (it runs in MQTT client
// callbacks); announcements while one is pending coalesce.
func (t *Topics) Online(payload []byte) {
	if t == nil || !bytes.Equal(bytes.TrimSpace(payload), []byte("online")) {
		return
	}
	select {
	case t.online <- struct{}{}:
	default:
	}
}

// Configs returns the discovery config of the gateway and of every
// remembered device key, with the devices' current names.
func (t *Topics) Configs() []sinks.Publication {
	if t == nil || !t.o.HomeAssistant.Enabled {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	out := []sinks.Publication{t.gatewayConfig()}
	for d := t.order.Front(); d != nil; d = t.order.Next(d) {
		info := t.info(d.key.project, d.key.device)
		for i := range d.keys {
			if p, ok := t.config(d.key, info, &d.keys[i]); ok {
				out = append(out, p)
			}
		}
	}
	return out
}

// Republish publishes every config again each time Home Assistant comes
// online (see Online), and when the Directory says device names changed
// (sinks.DirectoryNotifier), spread over RepublishSpread so that a site
// with thousands of entities does not arrive as one burst, until stop
// closes. publish errors end that round (the next one starts anew).
func (t *Topics) Republish(stop <-chan struct{}, publish func(sinks.Publication) error) {
	if t == nil || !t.o.HomeAssistant.Enabled {
		return
	}
	notifier, _ := t.o.Directory.(sinks.DirectoryNotifier)
	changed := t.renamed // nil (never ready) without a notifier
	for {
		why := "Home Assistant came online"
		select {
		case <-stop:
			return
		case <-t.online:
		case <-changed:
			changed = notifier.Changed()
			why = "device names changed"
		}
		pubs := t.Configs()
		steps := min(republishSteps, len(pubs))
		chunk := (len(pubs) + steps - 1) / steps
		pause := t.o.RepublishSpread / time.Duration(steps)
		sent := 0
		var err error
		for i := 0; i < len(pubs) && err == nil; i += chunk {
			if i > 0 && !sleep(stop, pause) {
				return
			}
			for _, p := range pubs[i:min(i+chunk, len(pubs))] {
				if err = publish(p); err != nil {
					break
				}
				sent++
			}
		}
		ev := t.log.Info()
		if err != nil {
			ev = t.log.Warn().Err(err)
		}
		ev.Int("configs", sent).Int("of", len(pubs)).Msg(why + ": discovery configs published again")
	}
}

func sleep(stop <-chan struct{}, d time.Duration) bool {
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-stop:
		return false
	}
}
