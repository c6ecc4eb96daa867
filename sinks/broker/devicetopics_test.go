package broker

import (
	"encoding/json"
	"testing"
	"time"

	"wittra-gateway/internal/testutil"
	"wittra-gateway/sinks"
	"wittra-gateway/sinks/devicetopics"
	"wittra-gateway/sinks/devicetopics/hatest"
)

// haDirectory names the test devices (the Wittra API's stand-in).
type haDirectory map[string]sinks.DeviceInfo

func (d haDirectory) Device(project, device string) (sinks.DeviceInfo, bool) {
	i, ok := d[project+"/"+device]
	return i, ok
}

const haTag = "D00124B001E2A1B2C" // the device of fixture f1

// checkAnnounced checks the configs among got (see hatest.Announced).
func checkAnnounced(t *testing.T, got []testutil.Received) map[string]hatest.Config {
	t.Helper()
	last := map[string]string{}
	for _, r := range got {
		last[r.Topic] = r.Payload
	}
	cfgs, err := hatest.Announced("homeassistant", last)
	if err != nil {
		t.Error(err)
	}
	return cfgs
}

func TestHomeAssistantEmbeddedBroker(t *testing.T) {
	clk := newClock()
	srv := startServer(t, Config{AllowAnonymous: true, now: clk.Now,
		Users: []User{{Username: "ha", Password: "pw", Publish: true, PublishTopics: []string{"homeassistant/#"}}}})
	s, _ := newSink(t, srv, SinkConfig{Values: true, Devices: devicetopics.Options{
		State: true, Directory: haDirectory{testProject + "/" + haTag: {Name: "Forklift 7", Type: "tag"}},
		RepublishSpread: 200 * time.Millisecond, HomeAssistant: devicetopics.HomeAssistant{Enabled: true},
	}})
	url := tcpURL(srv)
	sub := subscribe(t, mustDial(t, clientOpts{url: url}), "#", 1)
	stateTopic := "wittra/" + testProject + "/" + haTag + "/state"

	publish(t, s, msg(testProject, haTag, sinks.KindData, fixture(t, "f1_data_tag.json")))
	// The retained status reaches a new subscriber after its SUBACK and may
	// come after the publications that followed (mochi sends retained
	// messages once the SUBACK is written): wait for all, in any order.
	seen := map[string]string{}
	testutil.Poll(waitLong, func() bool {
		for _, r := range sub.Messages() {
			seen[r.Topic] = r.Payload
		}
		_, err := hatest.Announced("homeassistant", seen)
		return err == nil && seen[stateTopic] != ""
	})
	cfgs := checkAnnounced(t, sub.Messages())
	if len(cfgs) != 11 { // gateway + 10 keys of f1 (its neighbour list gets none)
		t.Fatalf("%d configs announced, want the gateway's and one per value key", len(cfgs))
	}
	var state struct {
		Name   string
		Values map[string]struct{ Value json.RawMessage }
	}
	if err := json.Unmarshal([]byte(seen[stateTopic]), &state); err != nil || state.Name != "Forklift 7" || string(state.Values["temperature"].Value) != "21.75" {
		t.Errorf("state %s (%v)", seen[stateTopic], err)
	}

	// The configs and the state are retained even though the sink's
	// retain is off: a subscriber that comes later gets them.
	late := subscribe(t, mustDial(t, clientOpts{url: url}), "homeassistant/#", 1)
	retained := map[string]bool{}
	for len(retained) < len(cfgs) {
		r := late.Next(t, waitLong)
		if !r.Retain || cfgs[r.Topic].Topic == "" {
			t.Fatalf("late subscriber got %s (retain %v), want the retained configs", r.Topic, r.Retain)
		}
		retained[r.Topic] = true
	}
	if r := subscribe(t, mustDial(t, clientOpts{url: url}), stateTopic, 1).Next(t, waitLong); !r.Retain {
		t.Error("state topic not retained")
	}

	// Home Assistant restarts and announces itself: every config again.
	ha := mustDial(t, clientOpts{url: url, user: "ha", pass: "pw"})
	if tok := ha.Publish("homeassistant/status", 1, false, "online"); !tok.WaitTimeout(waitLong) || tok.Error() != nil {
		t.Fatalf("publish online: %v", tok.Error())
	}
	again := map[string]bool{}
	if !testutil.Poll(30*time.Second, func() bool {
		if r, ok := late.Poll(100 * time.Millisecond); ok && r.Topic != "homeassistant/status" {
			again[r.Topic] = true
		}
		return len(again) >= len(cfgs)
	}) {
		t.Fatalf("%d of %d configs republished after online", len(again), len(cfgs))
	}

	// Silence past the retained max age clears the device's values, never
	// the discovery configs (Home Assistant needs them after any silence).
	clk.Advance(DefaultRetainMaxAge + time.Hour)
	srv.retained.sweep()
	after := subscribe(t, mustDial(t, clientOpts{url: url}), "#", 1)
	left := map[string]bool{}
	for {
		r, ok := after.Poll(500 * time.Millisecond)
		if !ok {
			break
		}
		left[r.Topic] = true
	}
	for topic := range cfgs {
		if !left[topic] {
			t.Errorf("config %s cleared after %v of silence", topic, DefaultRetainMaxAge)
		}
	}
	if left[stateTopic] || left["wittra/"+testProject+"/"+haTag+"/temperature"] {
		t.Errorf("values of a silent device not cleared: %v", left)
	}

	// Home Assistant deleting an entity (an empty retained config) removes
	// the gateway's retained copy too.
	var gone string
	for topic := range cfgs {
		gone = topic
		break
	}
	if tok := ha.Publish(gone, 1, true, ""); !tok.WaitTimeout(waitLong) || tok.Error() != nil {
		t.Fatalf("delete %s: %v", gone, tok.Error())
	}
	roundTrip(t, ha)
	last := subscribe(t, mustDial(t, clientOpts{url: url}), "homeassistant/#", 1)
	for n := 0; n < len(cfgs)-1; n++ {
		if r := last.Next(t, waitLong); r.Topic == gone {
			t.Fatalf("deleted config %s still retained", gone)
		}
	}
	last.Quiet(t, 300*time.Millisecond)
}
