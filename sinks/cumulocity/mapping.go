package cumulocity

import (
	"errors"
	"fmt"
	"strconv"
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
//	                           {"value": x} objects read as x), units per payloadUnits where Wittra documents one
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
// A data message without a device id (sinks.UnknownDevice) is refused: its
// values belong to no known sensor and filing them under the gateway would
// mix them into the gateway's own series; refusing dead-letters it where an
// operator can inspect it. A portal event without a device is a project
// event and goes to the gateway device.
func mapMessage(m sinks.Message) (mapped, error) {
	root, err := wittra.Parse(m.Body)
	if err != nil || root.Kind != 'o' {
		return mapped{}, permanentf("message %d is not a JSON object", m.Seq)
	}
	t, err := messageTime(m)
	if err != nil {
		return mapped{}, err
	}
	out := mapped{time: t}
	device := m.Device
	if device == sinks.UnknownDevice {
		device = ""
	}
	if m.Kind == sinks.KindEvent {
		out.device = device
		typ, _ := root.Get("eventType").Str()
		if typ == "" {
			typ = defaultEventType
		}
		text := changesText(root.Get("payload").Get("changes"))
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
	srcs, err := wittra.Sources(root)
	if err != nil {
		return mapped{}, permanentf("message %d: %v", m.Seq, err)
	}
	mp := &mapper{out: &out}
	for _, src := range srcs {
		if src.Data20 {
			mp.generic(src.Key, src.Value, data20Units)
			continue
		}
		mp.member(src.Key, src.Value)
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

// Units of the numeric fields of known payload keys, as Wittra documents them.
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

// member maps one member of payload (or of decoded binaryData).
func (mp *mapper) member(k string, v *wittra.Node) {
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

// single maps a key that holds one number.
func (mp *mapper) single(key string, v *wittra.Node, frag, name, unit string) {
	if num, ok := number(v.Unwrap()); ok {
		mp.measurement(frag, series{name, num, unit})
		return
	}
	mp.generic(key, v, nil)
}

// main maps an object whose member mainKey is a standard measurement and
// whose other numeric members go to wittra_<key>.
func (mp *mapper) main(key string, v *wittra.Node, mainKey, frag, name, unit string) {
	v = v.Unwrap()
	if num, ok := number(v); ok {
		mp.measurement(frag, series{name, num, unit})
		return
	}
	if v.Kind != 'o' {
		mp.generic(key, v, nil)
		return
	}
	rest := v
	if num, ok := number(v.Get(mainKey).Unwrap()); ok {
		mp.measurement(frag, series{name, num, unit})
		rest = v.Without(mainKey)
	}
	mp.generic(key, rest, payloadUnits[key])
}

func (mp *mapper) battery(v *wittra.Node) {
	v = v.Unwrap()
	if num, ok := number(v); ok { // legacy C1: battery voltage as a number
		mp.measurement("c8y_Battery", series{"voltage", num, "V"})
		return
	}
	if v.Kind != 'o' {
		mp.generic("battery", v, nil)
		return
	}
	var ss []series
	if num, ok := number(v.Get("percentage").Unwrap()); ok {
		ss = append(ss, series{"level", num, "%"})
	}
	if num, ok := number(v.Get("voltage").Unwrap()); ok {
		ss = append(ss, series{"voltage", num, "V"})
	}
	rest := v
	if len(ss) > 0 {
		mp.measurement("c8y_Battery", ss...)
		rest = v.Without("percentage", "voltage")
	}
	mp.generic("battery", rest, nil)
}

func (mp *mapper) location(v *wittra.Node) {
	if v.Kind != 'o' {
		mp.generic("location", v, nil)
		return
	}
	lat, ok1 := number(v.Get("latitude").Unwrap())
	lng, ok2 := number(v.Get("longitude").Unwrap())
	if !ok1 || !ok2 {
		mp.generic("location", v, nil)
		return
	}
	alt, _ := number(v.Get("height").Unwrap())
	acc, _ := number(v.Get("accuracy").Unwrap())
	mp.out.records = append(mp.out.records, record{kind: recLocation, typ: locationType, lat: lat, lng: lng, alt: alt, acc: acc})
	mp.generic("location", v.Without("latitude", "longitude", "height", "accuracy", "timestamp"), nil)
}

// generic maps key to one measurement wittra_<key> with a series per
// numeric field; units gives the unit by field name.
func (mp *mapper) generic(key string, v *wittra.Node, units map[string]string) {
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
	var walk func(path, dpath, leaf string, n *wittra.Node)
	walk = func(path, dpath, leaf string, n *wittra.Node) {
		n = n.Unwrap()
		switch n.Kind {
		case 'n':
			if num, ok := number(n); ok {
				add(path, leaf, num)
				return
			}
			mp.skip(dpath)
		case 'o':
			for i, k := range n.Keys {
				p := k
				if path != "" {
					p = path + "_" + k
				}
				walk(p, dpath+"/"+k, k, n.Vals[i])
			}
		case 'z':
		default:
			mp.skip(dpath)
		}
	}
	if v.Unwrap().Kind == 'o' {
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
func changesText(changes *wittra.Node) string {
	if changes == nil || changes.Kind != 'o' {
		if changes != nil && changes.Kind != 'z' {
			return string(changes.AppendJSON(nil))
		}
		return ""
	}
	var parts []string
	for i, k := range changes.Keys {
		c := changes.Vals[i]
		oldV, newV := c.Get("old"), c.Get("new")
		if c.Kind == 'o' && (oldV != nil || newV != nil) && len(c.Keys) <= 2 {
			parts = append(parts, k+": "+display(oldV)+" -> "+display(newV))
			continue
		}
		parts = append(parts, k+": "+display(c))
	}
	return strings.Join(parts, "; ")
}

func display(n *wittra.Node) string {
	switch {
	case n == nil || n.Kind == 'z':
		return "null"
	case n.Kind == 's':
		return n.Text
	}
	return string(n.AppendJSON(nil))
}

// number returns the number text of n when it is a finite float64:
// Cumulocity stores values as float64, so larger ones cannot be sent.
func number(n *wittra.Node) (string, bool) {
	if n == nil || n.Kind != 'n' {
		return "", false
	}
	if _, err := strconv.ParseFloat(n.Text, 64); err != nil {
		return "", false
	}
	return n.Text, true
}
