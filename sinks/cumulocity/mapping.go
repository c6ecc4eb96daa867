package cumulocity

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"wittra-gateway/sinks"
	"wittra-gateway/wittra"
)

// The mapper turns one Wittra message into Cumulocity records, the same for
// both modes; smartrest.go and rest.go only render them. Mapping (docs/contract.md#cumulocity):
//
//	temperature              → c8y_TemperatureMeasurement.T  C    (MQTT: template 211)
//	battery.percentage       → c8y_Battery.level             %    (one measurement, type c8y_Battery,
//	battery.voltage          → c8y_Battery.voltage           V     MQTT template 201)
//	battery (a number, legacy C1) → c8y_Battery.voltage V
//	humidity.humidity        → c8y_HumidityMeasurement.h     %RH  (201)
//	pressure.pressure        → c8y_PressureMeasurement.P     hPa  (201)
//	light                    → c8y_LightMeasurement.e        lux  (201)
//	location                 → location update event c8y_LocationUpdate with c8y_Position and the
//	                           device's c8y_Position (MQTT 402): lat, lng, alt = height (else empty),
//	                           accuracy as sent (a 0–1 score in the webhook docs, not metres)
//	location.level           → wittra_location.level (floor number, no unit)
//	humidity.temperature, pressure.temperature → wittra_humidity.temperature, wittra_pressure.temperature C
//	usage, currentmeter, accelerometer, magnetometer, impact, any other payload key with numbers,
//	Data 2.0 "wittra-*" keys → one measurement each, type and fragment wittra_<key> (key sanitised to
//	                           [A-Za-z0-9_]), a series per numeric field (nested fields joined by "_",
//	                           {"value": x} objects read as x), units per wittra-format.md where known
//	EVENT messages           → event wittra_<eventType> with payload.changes as text (MQTT 400)
//	legacy binaryData        → decoded and mapped like payload
//
// Skipped, and counted in Sink.Skipped: every non-numeric field (strings such
// as battery.chargingStatus and location.label, booleans, arrays), numbers
// that are not finite float64, and neighbors/neighbours (per-neighbour rssi
// would make a new series per mesh neighbour id).

// recKind is what a record becomes in Cumulocity.
type recKind uint8

const (
	recMeasurement recKind = iota
	recEvent
	recLocation
)

type series struct{ name, value, unit string }

type fragment struct {
	name   string
	series []series
}

// record is one Cumulocity object to create.
type record struct {
	kind  recKind
	typ   string     // measurement or event type (location: c8y_LocationUpdate)
	frags []fragment // measurement
	text  string     // event
	// location (number text; alt and acc may be empty)
	lat, lng, alt, acc string
}

// mapped is the mapping of one message.
type mapped struct {
	device  string // Wittra device id (a child); "" = the gateway device itself
	time    time.Time
	records []record
	skipped []string // paths of fields not sent
}

// Names of things the sink creates in Cumulocity.
const (
	gatewayType      = "wittra_Gateway"
	sensorType       = "wittra_Sensor"
	fragmentPrefix   = "wittra_"
	locationType     = "c8y_LocationUpdate"
	locationText     = "Location updated"
	unknownDevice    = "_unknown"
	temperatureFrag  = "c8y_TemperatureMeasurement"
	temperatureUnit  = "C" // what template 211 stores; REST uses the same
	defaultEventType = "EVENT"
)

// permanentf returns an error wrapping sinks.ErrPermanent.
func permanentf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", sinks.ErrPermanent, fmt.Sprintf(format, args...))
}

// messageTime is the message's timestamp (all Wittra forms) or, failing
// that, its receive time. A receive time from a wall clock known to be
// wrong (1970 on a box without a real-time clock) is never sent: the
// message waits, retried, until the clock is right and the queue corrects
// the time.
func messageTime(m sinks.Message) (time.Time, error) {
	if t, ok := wittra.Timestamp(m.Body); ok {
		return t, nil
	}
	if m.ReceivedUnsure {
		return time.Time{}, fmt.Errorf("message %d has no timestamp of its own and the gateway's clock is known to be wrong: %w", m.Seq, errClockUnsure)
	}
	if m.Received.IsZero() {
		return time.Now(), nil
	}
	return m.Received, nil
}

// errClockUnsure is retried (not permanent): it ends when the clock is set.
var errClockUnsure = errors.New("waiting for the clock to be set")

// formatTime renders t as Cumulocity wants it: ISO 8601 in UTC with
// milliseconds and a zone designator, e.g. 2024-03-12T08:15:42.517Z.
func formatTime(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

// mapMessage maps one message. An error wraps sinks.ErrPermanent: the
// message has nothing Cumulocity could take, and retrying cannot change it.
//
// A data message without a device id (device "_unknown") is refused: its
// values belong to no known sensor and filing them under the gateway would
// mix them into the gateway's own series; refusing dead-letters it where an
// operator can inspect it. A portal event without a device is a project
// event and goes to the gateway device.
func mapMessage(m sinks.Message) (mapped, error) {
	root, err := parseJSON(m.Body)
	if err != nil || root.kind != 'o' {
		return mapped{}, permanentf("message %d is not a JSON object", m.Seq)
	}
	t, err := messageTime(m)
	if err != nil {
		return mapped{}, err
	}
	out := mapped{time: t}
	device := m.Device
	if device == unknownDevice {
		device = ""
	}
	if m.Kind == sinks.KindEvent {
		out.device = device
		typ, _ := root.get("eventType").str()
		if typ == "" {
			typ = defaultEventType
		}
		text := changesText(root.get("payload").get("changes"))
		if text == "" {
			text = "Wittra portal event " + typ
		}
		out.records = []record{{kind: recEvent, typ: fragmentPrefix + sanitize(typ), text: text}}
		return out, nil
	}
	if device == "" {
		return mapped{}, permanentf("message %d has no device id: no Cumulocity device to file its data under", m.Seq)
	}
	out.device = device
	mp := &mapper{out: &out}
	ptype, _ := root.get("payloadType").str()
	if p := root.get("payload"); p != nil && p.kind == 'o' && (ptype == "" || ptype == "DATA") {
		mp.values(p)
	}
	for i, k := range root.keys {
		if strings.HasPrefix(k, "wittra-") {
			mp.generic(k, root.vals[i], data20Units)
		}
	}
	if b := root.get("binaryData"); b != nil && b.kind != 'z' {
		obj, err := decodeBinary(b)
		if err != nil {
			return mapped{}, permanentf("message %d: binaryData: %v", m.Seq, err)
		}
		mp.values(obj)
	}
	if len(out.records) == 0 {
		return mapped{}, permanentf("message %d has no value Cumulocity can store (skipped: %s)", m.Seq, skippedList(out.skipped))
	}
	return out, nil
}

func skippedList(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// decodeBinary decodes legacy binaryData: base64 (padded or not) of a JSON
// object.
func decodeBinary(b *node) (*node, error) {
	s, ok := b.str()
	if !ok {
		return nil, fmt.Errorf("not a string")
	}
	raw, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return nil, err
	}
	obj, err := parseJSON(raw)
	if err != nil || obj.kind != 'o' {
		return nil, fmt.Errorf("does not decode to a JSON object")
	}
	return obj, nil
}

// Units of the numeric fields of known payload keys (wittra-format.md).
var payloadUnits = map[string]map[string]string{
	"usage":        {"moving": "s", "stationary": "s"},
	"currentmeter": {"average": "A", "max": "A", "min": "A", "temperature": "C", "voltage": "mV"},
	"humidity":     {"temperature": "C"},
	"pressure":     {"temperature": "C"},
}

// data20Units are the units of the Data 2.0 quantities by name.
var data20Units = map[string]string{"temperature": "C", "humidity": "%RH", "pressure": "hPa", "light": "lux"}

type mapper struct{ out *mapped }

func (mp *mapper) skip(path string) { mp.out.skipped = append(mp.out.skipped, path) }

func (mp *mapper) measurement(frag string, ss ...series) {
	mp.out.records = append(mp.out.records, record{kind: recMeasurement, typ: frag, frags: []fragment{{name: frag, series: ss}}})
}

// values maps the members of a payload object (or of decoded binaryData).
func (mp *mapper) values(obj *node) {
	for i, k := range obj.keys {
		v := obj.vals[i]
		switch k {
		case "temperature":
			mp.single(k, v, temperatureFrag, "T", temperatureUnit)
		case "light":
			mp.single(k, v, "c8y_LightMeasurement", "e", "lux")
		case "humidity":
			mp.main(k, v, "humidity", "c8y_HumidityMeasurement", "h", "%RH")
		case "pressure":
			mp.main(k, v, "pressure", "c8y_PressureMeasurement", "P", "hPa")
		case "battery":
			mp.battery(v)
		case "location":
			mp.location(v)
		case "neighbors", "neighbours":
			mp.skip(k)
		case "timestamp", "deviceId":
			// envelope fields some shapes repeat inside the values
		default:
			mp.generic(k, v, payloadUnits[k])
		}
	}
}

// single maps a key that holds one number.
func (mp *mapper) single(key string, v *node, frag, name, unit string) {
	if num, ok := v.unwrap().number(); ok {
		mp.measurement(frag, series{name, num, unit})
		return
	}
	mp.generic(key, v, nil)
}

// main maps an object whose member mainKey is a standard measurement and
// whose other numeric members go to wittra_<key>.
func (mp *mapper) main(key string, v *node, mainKey, frag, name, unit string) {
	v = v.unwrap()
	if num, ok := v.number(); ok {
		mp.measurement(frag, series{name, num, unit})
		return
	}
	if v.kind != 'o' {
		mp.generic(key, v, nil)
		return
	}
	rest := v
	if num, ok := v.get(mainKey).unwrap().number(); ok {
		mp.measurement(frag, series{name, num, unit})
		rest = v.without(mainKey)
	}
	mp.generic(key, rest, payloadUnits[key])
}

func (mp *mapper) battery(v *node) {
	v = v.unwrap()
	if num, ok := v.number(); ok { // legacy C1: battery voltage as a number
		mp.measurement("c8y_Battery", series{"voltage", num, "V"})
		return
	}
	if v.kind != 'o' {
		mp.generic("battery", v, nil)
		return
	}
	var ss []series
	if num, ok := v.get("percentage").unwrap().number(); ok {
		ss = append(ss, series{"level", num, "%"})
	}
	if num, ok := v.get("voltage").unwrap().number(); ok {
		ss = append(ss, series{"voltage", num, "V"})
	}
	rest := v
	if len(ss) > 0 {
		mp.measurement("c8y_Battery", ss...)
		rest = v.without("percentage", "voltage")
	}
	mp.generic("battery", rest, nil)
}

func (mp *mapper) location(v *node) {
	if v.kind != 'o' {
		mp.generic("location", v, nil)
		return
	}
	lat, ok1 := v.get("latitude").unwrap().number()
	lng, ok2 := v.get("longitude").unwrap().number()
	if !ok1 || !ok2 {
		mp.generic("location", v, nil)
		return
	}
	alt, _ := v.get("height").unwrap().number()
	acc, _ := v.get("accuracy").unwrap().number()
	mp.out.records = append(mp.out.records, record{kind: recLocation, typ: locationType, lat: lat, lng: lng, alt: alt, acc: acc})
	mp.generic("location", v.without("latitude", "longitude", "height", "accuracy", "timestamp"), nil)
}

// generic maps key to one measurement wittra_<key> with a series per
// numeric field; units gives the unit by field name.
func (mp *mapper) generic(key string, v *node, units map[string]string) {
	frag := fragment{name: fragmentPrefix + sanitize(key)}
	seen := map[string]int{}
	add := func(path, leaf, num string) {
		name := sanitize(path)
		if name == "" {
			name = "value"
		}
		if n := seen[name]; n > 0 { // two fields that sanitise alike
			seen[name] = n + 1
			name = fmt.Sprintf("%s_%d", name, n+1)
		} else {
			seen[name] = 1
		}
		frag.series = append(frag.series, series{name: name, value: num, unit: units[leaf]})
	}
	// walk visits n at series name path (fields joined by "_"), field path
	// dpath (joined by "/", for the skipped list) and last field name leaf.
	var walk func(path, dpath, leaf string, n *node)
	walk = func(path, dpath, leaf string, n *node) {
		n = n.unwrap()
		switch n.kind {
		case 'n':
			if num, ok := n.number(); ok {
				add(path, leaf, num)
				return
			}
			mp.skip(dpath)
		case 'o':
			for i, k := range n.keys {
				p := k
				if path != "" {
					p = path + "_" + k
				}
				walk(p, dpath+"/"+k, k, n.vals[i])
			}
		case 'z':
		default:
			mp.skip(dpath)
		}
	}
	if v.unwrap().kind == 'o' {
		walk("", key, "", v)
	} else {
		walk(key, key, key, v)
	}
	if len(frag.series) > 0 {
		mp.out.records = append(mp.out.records, record{kind: recMeasurement, typ: frag.name, frags: []fragment{frag}})
	}
}

// sanitize keeps ASCII letters, digits and '_' and replaces every other
// character with '_', giving names Cumulocity accepts as fragment, series
// and type names.
func sanitize(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	return b.String()
}

// changesText renders a portal event's changes ({field: {old, new}}) as
// "field: old -> new", joined with "; " in the order sent. Strings appear
// as their text, other values as JSON.
func changesText(changes *node) string {
	if changes == nil || changes.kind != 'o' {
		if changes != nil && changes.kind != 'z' {
			return string(changes.appendJSON(nil))
		}
		return ""
	}
	var parts []string
	for i, k := range changes.keys {
		c := changes.vals[i]
		oldV, newV := c.get("old"), c.get("new")
		if c.kind == 'o' && (oldV != nil || newV != nil) && len(c.keys) <= 2 {
			parts = append(parts, k+": "+display(oldV)+" -> "+display(newV))
			continue
		}
		parts = append(parts, k+": "+display(c))
	}
	return strings.Join(parts, "; ")
}

func display(n *node) string {
	switch {
	case n == nil || n.kind == 'z':
		return "null"
	case n.kind == 's':
		return n.text
	}
	return string(n.appendJSON(nil))
}
