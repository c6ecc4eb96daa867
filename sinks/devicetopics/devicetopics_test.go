package devicetopics_test

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"wittra-gateway/internal/testutil"
	"wittra-gateway/sinks"
	"wittra-gateway/sinks/devicetopics"
	"wittra-gateway/sinks/devicetopics/hatest"
)

const (
	project = "P4nB8vQ2wE6rT1yU3iOa"
	tag     = "D00124B001E2A1B2C" // f1: temperature, battery, location, neighbours, ...
	lpth    = "D00124B001E2D3E4F" // f2 and f4: humidity, pressure, light, current meter
)

// directory is a small in-memory sinks.Directory.
type directory struct {
	mu sync.Mutex
	m  map[string]sinks.DeviceInfo
}

func (d *directory) Device(project, device string) (sinks.DeviceInfo, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	i, ok := d.m[project+"/"+device]
	return i, ok
}

func (d *directory) set(device string, i sinks.DeviceInfo) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.m[project+"/"+device] = i
}

func fixture(t testing.TB, name string) []byte {
	return testutil.ReadFile(t, "..", "..", "wittra", "testdata", name)
}

func message(device string, body []byte) sinks.Message {
	return sinks.Message{Seq: 1, Received: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Project: project, Device: device, Kind: sinks.KindData, Body: body}
}

func newTopics(t testing.TB, o devicetopics.Options) *devicetopics.Topics {
	t.Helper()
	if o.TopicPrefix == "" {
		o.TopicPrefix = "wittra"
	}
	if o.GatewayID == "" {
		o.GatewayID = "gw1"
	}
	tp, err := devicetopics.New(o, zerolog.Nop())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return tp
}

// configs splits the discovery configs out of pubs, checked against the
// Home Assistant documentation, by unique id.
func configs(t *testing.T, pubs []sinks.Publication) map[string]hatest.Config {
	t.Helper()
	out := map[string]hatest.Config{}
	for _, p := range pubs {
		if !strings.HasPrefix(p.Topic, "homeassistant/") {
			continue
		}
		if !p.Retain {
			t.Errorf("%s: config not retained", p.Topic)
		}
		c, err := hatest.Check("homeassistant", p.Topic, p.Payload)
		if err != nil {
			t.Error(err)
			continue
		}
		out[c.Str("unique_id")] = c
	}
	return out
}

func TestDiscoveryConfigs(t *testing.T) {
	dir := &directory{m: map[string]sinks.DeviceInfo{}}
	dir.set(tag, sinks.DeviceInfo{Name: "Forklift 7", Type: "tag"})
	tp := newTopics(t, devicetopics.Options{Values: true, HomeAssistant: devicetopics.HomeAssistant{Enabled: true}, Directory: dir, Version: "1.2.3"})

	own := []sinks.Publication{{Topic: "wittra/" + project + "/" + tag + "/data"}}
	pubs := tp.Add(append([]sinks.Publication(nil), own...), message(tag, fixture(t, "f1_data_tag.json")))
	// Configs come first, so Home Assistant subscribes before the values arrive.
	if last := pubs[len(pubs)-1]; last.Topic != own[0].Topic {
		t.Errorf("last publication %s, want the message's own %s", last.Topic, own[0].Topic)
	}
	pubs = tp.Add(pubs, message(lpth, fixture(t, "f2_data_lpth_event.json")))
	pubs = tp.Add(pubs, message(lpth, fixture(t, "f4_data20.json")))
	got := configs(t, pubs)

	type want struct{ component, class, unit, stateTopic string }
	base := "wittra/" + project + "/"
	wants := map[string]want{
		"wittra_gateway_gw1":                                     {"binary_sensor", "connectivity", "", "wittra/gateway/gw1/status"},
		"wittra_" + tag + "_temperature":                         {"sensor", "temperature", "°C", base + tag + "/temperature"},
		"wittra_" + tag + "_battery_percentage":                  {"sensor", "battery", "%", base + tag + "/battery/percentage"},
		"wittra_" + tag + "_battery_voltage":                     {"sensor", "voltage", "V", base + tag + "/battery/voltage"},
		"wittra_" + tag + "_battery_chargingStatus":              {"sensor", "", "", base + tag + "/battery/chargingStatus"},
		"wittra_" + tag + "_accelerometer_x":                     {"sensor", "", "", base + tag + "/accelerometer/x"},
		"wittra_" + tag + "_location":                            {"device_tracker", "", "", ""},
		"wittra_" + lpth + "_humidity_humidity":                  {"sensor", "humidity", "%", base + lpth + "/humidity/humidity"},
		"wittra_" + lpth + "_pressure_pressure":                  {"sensor", "pressure", "hPa", base + lpth + "/pressure/pressure"},
		"wittra_" + lpth + "_light":                              {"sensor", "illuminance", "lx", base + lpth + "/light"},
		"wittra_" + lpth + "_currentmeter_voltage":               {"sensor", "voltage", "mV", base + lpth + "/currentmeter/voltage"},
		"wittra_" + lpth + "_currentmeter_average":               {"sensor", "current", "A", base + lpth + "/currentmeter/average"},
		"wittra_" + lpth + "_currentmeter_nbr_of_samples":        {"sensor", "", "", base + lpth + "/currentmeter/nbr_of_samples"},
		"wittra_" + lpth + "_wittra-lpth-light_light":            {"sensor", "illuminance", "lx", base + lpth + "/wittra-lpth-light/light"},
		"wittra_" + lpth + "_wittra-tag-temperature_temperature": {"sensor", "temperature", "°C", base + lpth + "/wittra-tag-temperature/temperature"},
	}
	for uid, w := range wants {
		c, ok := got[uid]
		if !ok {
			t.Errorf("no config %s", uid)
			continue
		}
		if c.Component != w.component || c.Str("device_class") != w.class || c.Str("unit_of_measurement") != w.unit || c.Str("state_topic") != w.stateTopic {
			t.Errorf("%s: %s class %q unit %q state_topic %q; want %+v", uid, c.Component, c.Str("device_class"), c.Str("unit_of_measurement"), c.Str("state_topic"), w)
		}
	}
	if _, ok := got["wittra_"+tag+"_neighbors"]; ok {
		t.Error("the neighbour list (a JSON array) got a sensor")
	}

	for uid, c := range got {
		dev := c.Device()
		if uid == "wittra_gateway_gw1" {
			if dev["name"] != "Wittra gateway gw1" || c.Str("payload_on") != "online" || c.Str("payload_off") != "offline" {
				t.Errorf("gateway config: %v", c.Raw)
			}
			continue
		}
		if c.Str("availability_topic") != "wittra/gateway/gw1/status" {
			t.Errorf("%s: availability_topic %q", uid, c.Str("availability_topic"))
		}
		if dev["via_device"] != "wittra_gateway_gw1" || dev["manufacturer"] != "Wittra" {
			t.Errorf("%s: device %v", uid, dev)
		}
		if o := c.Raw["origin"].(map[string]any); o["name"] != "wittra-gateway" || o["sw_version"] != "1.2.3" {
			t.Errorf("%s: origin %v", uid, o)
		}
		numeric := c.Str("device_class") != "" || strings.Contains(uid, "accelerometer") || strings.Contains(uid, "nbr_of_samples")
		if numeric && c.Str("state_class") != "measurement" {
			t.Errorf("%s: numeric key without state_class measurement", uid)
		}
		if strings.HasSuffix(uid, "chargingStatus") && c.Str("state_class") != "" {
			t.Errorf("%s: a text value has state_class %q", uid, c.Str("state_class"))
		}
	}
	// Names: from the directory, else "Wittra <id>"; model = type.
	if d := got["wittra_"+tag+"_temperature"].Device(); d["name"] != "Forklift 7" || d["model"] != "tag" || d["identifiers"].([]any)[0] != "wittra_"+tag {
		t.Errorf("named device: %v", d)
	}
	if d := got["wittra_"+lpth+"_light"].Device(); d["name"] != "Wittra "+lpth || d["model"] != nil {
		t.Errorf("unnamed device: %v", d)
	}
	loc := got["wittra_"+tag+"_location"]
	if loc.Str("json_attributes_topic") != base+tag+"/location" || loc.Str("source_type") != "gps" || loc.Str("state_topic") != "" {
		t.Errorf("location tracker: %v", loc.Raw)
	}
	if loc.Topic != "homeassistant/device_tracker/wittra_"+tag+"_location/config" {
		t.Errorf("location topic %s", loc.Topic)
	}

	// Once announced, a key's config is not published again with each message.
	again := tp.Add(nil, message(tag, fixture(t, "f1_data_tag.json")))
	if n := len(configs(t, again)); n != 0 {
		t.Errorf("second message of the same device published %d configs, want 0", n)
	}
}

func TestDiscoveryNeedsValues(t *testing.T) {
	_, err := devicetopics.New(devicetopics.Options{TopicPrefix: "wittra", GatewayID: "gw", HomeAssistant: devicetopics.HomeAssistant{Enabled: true}}, zerolog.Nop())
	if err == nil || !strings.Contains(err.Error(), "values") {
		t.Errorf("discovery without values: err = %v", err)
	}
	for _, p := range []string{"wittra", "wittra/ha", "a/+/b", "ha/"} {
		_, err := devicetopics.New(devicetopics.Options{TopicPrefix: "wittra", GatewayID: "gw", Values: true,
			HomeAssistant: devicetopics.HomeAssistant{Enabled: true, DiscoveryPrefix: p}}, zerolog.Nop())
		if err == nil {
			t.Errorf("discovery prefix %q accepted", p)
		}
	}
	if tp, err := devicetopics.New(devicetopics.Options{TopicPrefix: "wittra", GatewayID: "gw"}, zerolog.Nop()); tp != nil || err != nil {
		t.Errorf("nothing enabled: %v, %v; want nil, nil", tp, err)
	}
}

type stateDoc struct {
	Project, Device string
	Name, Type      *string
	Time            *time.Time
	Values          map[string]struct {
		Value json.RawMessage
		Time  *time.Time
	}
}

func lastState(t *testing.T, pubs []sinks.Publication) stateDoc {
	t.Helper()
	var doc stateDoc
	p := pubs[len(pubs)-1]
	if !strings.HasSuffix(p.Topic, "/state") || !p.Retain {
		t.Fatalf("last publication %s (retain %v), want the retained state", p.Topic, p.Retain)
	}
	if err := json.Unmarshal(p.Payload, &doc); err != nil {
		t.Fatalf("state %s: %v", p.Payload, err)
	}
	return doc
}

func TestStateTopic(t *testing.T) {
	dir := &directory{m: map[string]sinks.DeviceInfo{}}
	tp := newTopics(t, devicetopics.Options{State: true, Directory: dir})

	body := func(ts string, payload string) []byte {
		return []byte(`{"deviceId":"` + lpth + `","payloadType":"DATA","timestamp":"` + ts + `","payload":` + payload + `}`)
	}
	pubs := tp.Add(nil, message(lpth, body("2024-03-12T08:00:00Z", `{"temperature":21.5,"battery":{"chargingStatus":"NOT_PLUGGED","percentage":75},"location":{"latitude":59.3,"longitude":18.0}}`)))
	if len(pubs) != 1 || pubs[0].Topic != "wittra/"+project+"/"+lpth+"/state" {
		t.Fatalf("publications %v, want only the state topic", pubs)
	}
	doc := lastState(t, pubs)
	if doc.Name != nil || doc.Type != nil {
		t.Errorf("unknown name and type: %v %v, want null", doc.Name, doc.Type)
	}

	// A later message with other keys adds to the state; a name appears.
	dir.set(lpth, sinks.DeviceInfo{Name: `Freezer "2" – kök`, Type: "tag"}) // escaping
	doc = lastState(t, tp.Add(nil, message(lpth, body("2024-03-12T09:00:00Z", `{"temperature":-18.25,"light":12}`))))
	if doc.Name == nil || *doc.Name != `Freezer "2" – kök` || *doc.Type != "tag" || doc.Project != project || doc.Device != lpth {
		t.Errorf("state header: %+v", doc)
	}
	want := map[string]struct{ value, time string }{
		"temperature":            {"-18.25", "2024-03-12T09:00:00Z"},
		"light":                  {"12", "2024-03-12T09:00:00Z"},
		"battery/percentage":     {"75", "2024-03-12T08:00:00Z"},
		"battery/chargingStatus": {`"NOT_PLUGGED"`, "2024-03-12T08:00:00Z"},
		"location":               {`{"latitude":59.3,"longitude":18.0}`, "2024-03-12T08:00:00Z"},
	}
	if len(doc.Values) != len(want) {
		t.Errorf("values %v, want %d keys", doc.Values, len(want))
	}
	for k, w := range want {
		v := doc.Values[k]
		if string(v.Value) != w.value || v.Time == nil || v.Time.Format(time.RFC3339) != w.time {
			t.Errorf("%s = %s at %v, want %s at %s", k, v.Value, v.Time, w.value, w.time)
		}
	}
	if doc.Time == nil || doc.Time.Format(time.RFC3339) != "2024-03-12T09:00:00Z" {
		t.Errorf("time %v, want the newest message's", doc.Time)
	}

	// A message measured earlier but delivered later does not replace newer values.
	doc = lastState(t, tp.Add(nil, message(lpth, body("2024-03-12T08:30:00Z", `{"temperature":30,"humidity":{"humidity":40}}`))))
	if v := doc.Values["temperature"]; string(v.Value) != "-18.25" {
		t.Errorf("older message replaced temperature: %s", v.Value)
	}
	if v := doc.Values["humidity/humidity"]; string(v.Value) != "40" || v.Time.Format(time.RFC3339) != "2024-03-12T08:30:00Z" {
		t.Errorf("older message's new key: %s at %v", v.Value, v.Time)
	}
	if doc.Time.Format(time.RFC3339) != "2024-03-12T09:00:00Z" {
		t.Errorf("time went back to %v", doc.Time)
	}

	// Without a timestamp the time the gateway received it is used.
	doc = lastState(t, tp.Add(nil, message(lpth, []byte(`{"deviceId":"x","payload":{"usage":{"moving":3}}}`))))
	if v := doc.Values["usage/moving"]; v.Time == nil || !v.Time.Equal(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)) {
		t.Errorf("receive time not used: %v", v.Time)
	}
	// Events carry no values: no state publication.
	ev := message(lpth, fixture(t, "f3_event_device_updated.json"))
	ev.Kind = sinks.KindEvent
	if pubs := tp.Add(nil, ev); len(pubs) != 0 {
		t.Errorf("event gave %v", pubs)
	}
}

func TestBoundAndUndelivered(t *testing.T) {
	tp := newTopics(t, devicetopics.Options{State: true, Values: true, MaxDevices: 3, HomeAssistant: devicetopics.HomeAssistant{Enabled: true}})
	body := []byte(`{"payload":{"temperature":1}}`)
	for _, d := range []string{"D1", "D2", "D3", "D4"} {
		tp.Add(nil, message(d, body))
	}
	if s := tp.Stats(); s.Devices != 3 || s.Forgot != 1 || s.Keys != 3 {
		t.Errorf("stats %+v, want 3 devices, 1 forgotten", s)
	}
	// D1 was forgotten: it is announced again; D4 is not.
	if n := len(configs(t, tp.Add(nil, message("D1", body)))); n != 1 {
		t.Errorf("forgotten device: %d configs, want 1", n)
	}
	if n := len(configs(t, tp.Add(nil, message("D4", body)))); n != 0 {
		t.Errorf("remembered device: %d configs, want 0", n)
	}
	// A failed delivery makes the retry announce again (with the gateway's).
	tp.Undelivered([]sinks.Message{message("D4", body)})
	if n := len(configs(t, tp.Add(nil, message("D4", body)))); n != 2 {
		t.Errorf("after Undelivered: %d configs, want 2 (gateway and key)", n)
	}

	// Keys per device are bounded too.
	var b strings.Builder
	b.WriteString(`{"payload":{`)
	for i := range 100 {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`"k` + string(rune('a'+i/26)) + string(rune('a'+i%26)) + `":1`)
	}
	b.WriteString(`}}`)
	tp.Add(nil, message("D9", []byte(b.String())))
	if s := tp.Stats(); s.Keys != 2+64 { // D3 forgotten for D9
		t.Errorf("keys %d, want 2 + 64 (the per-device cap)", s.Keys)
	}
}

func TestRepublishOnOnline(t *testing.T) {
	tp := newTopics(t, devicetopics.Options{Values: true, RepublishSpread: 200 * time.Millisecond, HomeAssistant: devicetopics.HomeAssistant{Enabled: true}})
	tp.Add(nil, message(tag, fixture(t, "f1_data_tag.json")))
	want := len(tp.Configs())
	if want < 10 {
		t.Fatalf("only %d configs", want)
	}
	if tp.StatusTopic() != "homeassistant/status" {
		t.Errorf("status topic %q", tp.StatusTopic())
	}

	var mu sync.Mutex
	var got []sinks.Publication
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tp.Republish(stop, func(p sinks.Publication) error {
			mu.Lock()
			got = append(got, p)
			mu.Unlock()
			return nil
		})
	}()
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(got) }
	waitCount := func(n int) {
		t.Helper()
		if !testutil.Poll(30*time.Second, func() bool { return count() >= n }) {
			t.Fatalf("%d configs republished, want %d", count(), n)
		}
	}
	tp.Online([]byte("offline"))
	tp.Online([]byte("online"))
	waitCount(want)
	tp.Online([]byte("online"))
	waitCount(2 * want)
	close(stop)
	<-done
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2*want {
		t.Errorf("%d configs republished, want %d (offline must not trigger)", len(got), 2*want)
	}
	configs(t, got)
}
