package c8yfake

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// SmartREST 2.0 static templates, as the fake implements them. Each line of
// a publish is handled on its own: a bad line is reported on s/e and the
// other lines still take effect (unverified: the docs do not say whether a
// bad line spoils the whole publish).

// s/e codes the fake uses (SmartREST built-in list; only 41,100 is
// confirmed verbatim over MQTT).
const (
	codeCreation     = "41" // template/creation error: "41,100,Device already existing"
	codeMalformed    = "42" // malformed request (CSV syntax)
	codeUnknownID    = "43" // unknown template id
	codeBadArguments = "45" // wrong number of arguments, not a number, bad time
)

// reply is a line the fake sends back to the publishing client.
type reply struct{ topic, line string }

// smartREST handles the lines of one publish for one client. The Server's
// mutex is held for its whole life.
type smartREST struct {
	s       *Server
	st      *store
	user    string // the connection's user (tenant prefix removed)
	serial  string // the connection's device identifier
	target  string // child external id from s/us/<child>; "" = the device itself
	replies []reply
}

func (x *smartREST) errorf(code, template, format string, args ...any) {
	line := csvLine(code, template, fmt.Sprintf(format, args...))
	x.st.addError("s/e", x.serial, line)
	x.replies = append(x.replies, reply{"s/e", line})
}

// root returns the connection's device, creating it when missing (first
// data auto-creates the device).
func (x *smartREST) root() *ManagedObject {
	if id, ok := x.st.lookupExt("c8y_Serial", x.serial); ok {
		return x.st.mos[id]
	}
	mo := x.st.createMO("MQTT Device "+x.serial, "c8y_MQTTDevice", x.user, true, nil)
	_ = x.st.bindExt("c8y_Serial", x.serial, mo.ID)
	x.st.addReg(Registration{Via: "mqtt", Op: "auto-device", ExternalID: x.serial, ID: mo.ID, Created: true})
	return mo
}

// device returns the device a data line addresses: the connection's device
// on s/us, the child on s/us/<child>. An unknown child is auto-created as a
// first-level child of the connection's device (name and type then are the
// defaults, unverified).
func (x *smartREST) device() *ManagedObject {
	root := x.root()
	if x.target == "" {
		return root
	}
	if id, ok := x.st.lookupExt("c8y_Serial", x.target); ok {
		return x.st.mos[id]
	}
	mo := x.st.createMO("MQTT Device "+x.target, "c8y_MQTTChildDevice", x.user, true, nil)
	_ = x.st.bindExt("c8y_Serial", x.target, mo.ID)
	_ = x.st.link(root.ID, mo.ID, "mqtt")
	x.st.addReg(Registration{Via: "mqtt", Op: "auto-child", ExternalID: x.target, ID: mo.ID, Parent: root.ID, Created: true})
	return mo
}

// argument helpers ----------------------------------------------------------

type args struct {
	x    *smartREST
	id   string
	vals []string
	bad  bool
}

// check reports a wrong argument count (more than max).
func (a *args) max(n int) bool {
	if len(a.vals) > n {
		a.x.errorf(codeBadArguments, a.id, "Wrong number of arguments")
		a.bad = true
	}
	return !a.bad
}

func (a *args) get(i int) string {
	if i < len(a.vals) {
		return a.vals[i]
	}
	return ""
}

func (a *args) mandatory(i int, name string) string {
	v := a.get(i)
	if v == "" && !a.bad {
		a.x.errorf(codeBadArguments, a.id, "Mandatory field %s is missing", name)
		a.bad = true
	}
	return v
}

// number parses argument i; empty gives nil unless mandatory.
func (a *args) number(i int, name string, mandatory bool) *float64 {
	v := a.get(i)
	if v == "" {
		if mandatory {
			a.mandatory(i, name)
		}
		return nil
	}
	f, err := parseNumber(v)
	if err != nil {
		if !a.bad {
			a.x.errorf(codeBadArguments, a.id, "%v", err)
		}
		a.bad = true
		return nil
	}
	return &f
}

// time parses the time argument i; empty means now.
func (a *args) time(i int) (time.Time, string) {
	v := a.get(i)
	if v == "" {
		return time.Now().UTC(), ""
	}
	t, err := parseTime(v)
	if err != nil {
		if !a.bad {
			a.x.errorf(codeBadArguments, a.id, "%v", err)
		}
		a.bad = true
	}
	return t, v
}

func (a *args) name(kind, v string) {
	if err := checkName(kind, v); err != nil && !a.bad {
		a.x.errorf(codeBadArguments, a.id, "%v", err)
		a.bad = true
	}
}

// line dispatches one parsed line.
func (x *smartREST) line(fields []string) {
	a := &args{x: x, id: fields[0], vals: fields[1:]}
	switch a.id {
	case "100":
		x.create(a)
	case "101":
		x.child(a)
	case "105":
		if a.max(0) {
			dev := x.device()
			var ext []string
			for _, c := range dev.Children {
				ext = append(ext, x.externalID(c))
			}
			x.replies = append(x.replies, reply{"s/ds", csvLine(append([]string{"106"}, ext...)...)})
		}
	case "110":
		if a.max(3) {
			x.setFragment(x.device(), "c8y_Hardware", map[string]string{"serialNumber": a.get(0), "model": a.get(1), "revision": a.get(2)}, true)
		}
	case "114":
		ops := a.vals
		if len(ops) == 0 {
			a.mandatory(0, "operations")
			return
		}
		x.setFragment(x.device(), "c8y_SupportedOperations", ops, true)
	case "117":
		if a.max(1) {
			m := a.number(0, "minutes", true)
			if !a.bad {
				x.setFragment(x.device(), "c8y_RequiredAvailability", map[string]int{"responseInterval": int(*m)}, false)
			}
		}
	case "123":
		if a.max(0) {
			x.replies = append(x.replies, reply{"s/ds", csvLine("124", x.device().ID)})
		}
	case "125":
		if a.max(0) {
			x.device() // a heartbeat only marks the device as alive
		}
	case "200", "201", "210", "211", "212":
		x.measurement(a)
	case "301", "302", "303", "304", "305", "306":
		x.alarm(a)
	case "400", "401", "402":
		x.event(a)
	case "500":
		a.max(0) // no operations are ever pending in the fake
	case "501", "502", "503":
		a.mandatory(0, "operation type")
	default:
		x.errorf(codeUnknownID, a.id, "Unknown template identifier")
	}
}

func (x *smartREST) externalID(id string) string {
	for _, e := range x.st.extOrder {
		if e.ManagedObject == id && e.Type == "c8y_Serial" {
			return e.Value
		}
	}
	return id
}

func (x *smartREST) setFragment(mo *ManagedObject, name string, v any, overwrite bool) {
	if _, ok := mo.Fragments[name]; ok && !overwrite {
		return
	}
	b, _ := json.Marshal(v)
	mo.Fragments[name] = b
}

// 100: create the connection's device.
func (x *smartREST) create(a *args) {
	if !a.max(2) {
		return
	}
	if x.target != "" {
		x.errorf(codeCreation, "100", "Device creation is only allowed on s/us")
		return
	}
	reg := Registration{Via: "mqtt", Op: "100", ExternalID: x.serial}
	defer func() { x.st.addReg(reg) }()
	if id, ok := x.st.lookupExt("c8y_Serial", x.serial); ok {
		reg.ID = id
		x.errorf(codeCreation, "100", "Device already existing")
		return
	}
	name, typ := a.get(0), a.get(1)
	if name == "" {
		name = "MQTT Device " + x.serial
	}
	if typ == "" {
		typ = "c8y_MQTTDevice"
	}
	mo := x.st.createMO(name, typ, x.user, true, nil)
	_ = x.st.bindExt("c8y_Serial", x.serial, mo.ID)
	reg.ID, reg.Created = mo.ID, true
}

// 101: create a child of the addressed device (s/us: of the connection's
// device; s/us/<parent>: of that child).
func (x *smartREST) child(a *args) {
	if !a.max(4) {
		return
	}
	childID := a.mandatory(0, "child id")
	if a.bad {
		return
	}
	isDevice := true
	switch strings.ToLower(a.get(3)) {
	case "", "true":
	case "false":
		isDevice = false
	default:
		x.errorf(codeBadArguments, "101", "Value is not a BOOLEAN: %s", a.get(3))
		return
	}
	parent := x.device()
	reg := Registration{Via: "mqtt", Op: "101", ExternalID: childID, Parent: parent.ID}
	defer func() { x.st.addReg(reg) }()
	if id, ok := x.st.lookupExt("c8y_Serial", childID); ok {
		// Already there: make sure it is linked, create nothing (unverified:
		// whether Cumulocity reports anything on s/e here).
		reg.ID = id
		_ = x.st.link(parent.ID, id, "mqtt")
		return
	}
	name, typ := a.get(1), a.get(2)
	if name == "" {
		name = "MQTT Device " + childID
	}
	if typ == "" {
		typ = "c8y_MQTTChildDevice"
	}
	mo := x.st.createMO(name, typ, x.user, isDevice, nil)
	_ = x.st.bindExt("c8y_Serial", childID, mo.ID)
	_ = x.st.link(parent.ID, mo.ID, "mqtt")
	reg.ID, reg.Created = mo.ID, true
}

// 200, 201, 210, 211, 212: measurements.
func (x *smartREST) measurement(a *args) {
	m := Measurement{Fragments: map[string]map[string]Series{}, Via: "mqtt " + a.id}
	add := func(frag, series, value, unit string) {
		v, err := parseNumber(value)
		if err != nil {
			if !a.bad {
				x.errorf(codeBadArguments, a.id, "%v", err)
			}
			a.bad = true
			return
		}
		if m.Fragments[frag] == nil {
			m.Fragments[frag] = map[string]Series{}
		}
		m.Fragments[frag][series] = Series{Value: v, Text: value, Unit: unit}
	}
	switch a.id {
	case "200": // fragment, series, value, unit, time
		if !a.max(5) {
			return
		}
		frag, series, value := a.mandatory(0, "fragment"), a.mandatory(1, "series"), a.mandatory(2, "value")
		a.name("fragment", frag)
		a.name("series", series)
		if a.bad {
			return
		}
		add(frag, series, value, a.get(3))
		m.Type = frag // unverified: the docs do not say what type 200 sets
		m.Time, m.TimeText = a.time(4)
	case "201": // type, time, then (fragment, series, value, unit)...
		m.Type = a.mandatory(0, "type")
		m.Time, m.TimeText = a.time(1)
		rest := a.vals[min(2, len(a.vals)):]
		if len(rest) == 0 && !a.bad {
			a.mandatory(2, "fragment")
		}
		for i := 0; i < len(rest) && !a.bad; i += 4 {
			g := rest[i:min(i+4, len(rest))]
			if len(g) < 3 {
				x.errorf(codeBadArguments, a.id, "Wrong number of arguments")
				a.bad = true
				break
			}
			a.name("fragment", g[0])
			a.name("series", g[1])
			if g[2] == "" && !a.bad {
				x.errorf(codeBadArguments, a.id, "Mandatory field value is missing")
				a.bad = true
			}
			if a.bad {
				break
			}
			unit := ""
			if len(g) == 4 {
				unit = g[3]
			}
			add(g[0], g[1], g[2], unit)
		}
	case "210": // rssi, ber, time
		if !a.max(3) {
			return
		}
		if a.get(0) == "" && a.get(1) == "" {
			a.mandatory(0, "rssi or ber")
			return
		}
		m.Type = "c8y_SignalStrength"
		if a.get(0) != "" {
			add("c8y_SignalStrength", "rssi", a.get(0), "dBm")
		}
		if a.get(1) != "" && !a.bad {
			add("c8y_SignalStrength", "ber", a.get(1), "%")
		}
		m.Time, m.TimeText = a.time(2)
	case "211", "212": // temperature or battery, time
		one := map[string]struct{ arg, fragment, series, unit string }{
			"211": {"temperature", "c8y_TemperatureMeasurement", "T", "C"},
			"212": {"battery", "c8y_Battery", "level", "%"},
		}[a.id]
		if !a.max(2) {
			return
		}
		v := a.mandatory(0, one.arg)
		if !a.bad {
			add(one.fragment, one.series, v, one.unit)
		}
		m.Type = one.fragment
		m.Time, m.TimeText = a.time(1)
	}
	if a.bad {
		return
	}
	m.Source = x.device().ID
	x.st.addMeasurement(m)
}

// 301–306: alarms.
func (x *smartREST) alarm(a *args) {
	severities := map[string]string{"301": "CRITICAL", "302": "MAJOR", "303": "MINOR", "304": "WARNING"}
	switch a.id {
	case "305": // type, severity
		if !a.max(2) {
			return
		}
		typ := a.mandatory(0, "type")
		sev := strings.ToUpper(a.mandatory(1, "severity"))
		if a.bad {
			return
		}
		if !validSeverity(sev) {
			x.errorf(codeBadArguments, a.id, "Invalid severity %s", sev)
			return
		}
		if al := x.st.activeAlarm(x.device().ID, typ); al != nil {
			al.Severity = sev
		}
	case "306": // type
		if !a.max(1) {
			return
		}
		typ := a.mandatory(0, "type")
		if a.bad {
			return
		}
		if al := x.st.activeAlarm(x.device().ID, typ); al != nil {
			al.Status = "CLEARED"
		}
	default: // type, text, time
		if !a.max(3) {
			return
		}
		typ := a.mandatory(0, "type")
		t, _ := a.time(2)
		if a.bad {
			return
		}
		text := a.get(1)
		if text == "" {
			text = "Alarm of type " + typ + " raised"
		}
		x.st.raiseAlarm(Alarm{Source: x.device().ID, Type: typ, Text: text, Severity: severities[a.id], Time: t, Via: "mqtt " + a.id})
	}
}

func validSeverity(s string) bool {
	switch s {
	case "CRITICAL", "MAJOR", "MINOR", "WARNING":
		return true
	}
	return false
}

// 400: event; 401: location update event; 402: 401 plus the device's
// c8y_Position.
func (x *smartREST) event(a *args) {
	e := Event{Via: "mqtt " + a.id}
	switch a.id {
	case "400": // type, text, time
		if !a.max(3) {
			return
		}
		e.Type = a.mandatory(0, "type")
		e.Text = a.mandatory(1, "text")
		e.Time, e.TimeText = a.time(2)
	default: // lat, lng, alt, accuracy, time
		if !a.max(5) {
			return
		}
		lat := a.number(0, "latitude", true)
		lng := a.number(1, "longitude", true)
		alt := a.number(2, "altitude", false)
		acc := a.number(3, "accuracy", false)
		e.Time, e.TimeText = a.time(4)
		if a.bad {
			return
		}
		// Type per the docs; the text is the fake's choice (unverified).
		e.Type, e.Text = "c8y_LocationUpdate", "Location updated"
		e.Position = &Position{Lat: *lat, Lng: *lng, Alt: alt, Accuracy: acc}
	}
	if a.bad {
		return
	}
	dev := x.device()
	e.Source = dev.ID
	x.st.addEvent(e)
	if a.id == "402" {
		p := *e.Position
		dev.Position = &p
	}
}
