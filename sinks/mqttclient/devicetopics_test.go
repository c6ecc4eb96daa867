package mqttclient

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"wittra-gateway/internal/testutil"
	"wittra-gateway/sinks"
	"wittra-gateway/sinks/devicetopics"
	"wittra-gateway/sinks/devicetopics/hatest"
)

const haTag = "D00124B001E2A1B2C" // the device of fixture f1

func lastPayloads(got []testutil.Received) map[string]string {
	last := map[string]string{}
	for _, r := range got {
		last[r.Topic] = r.Payload
	}
	return last
}

// haClient connects a client that publishes like Home Assistant does.
func haClient(t *testing.T, url string) paho.Client {
	t.Helper()
	c := paho.NewClient(paho.NewClientOptions().AddBroker(url).SetClientID("ha-test").SetAutoReconnect(false).SetConnectTimeout(5 * time.Second))
	if tok := c.Connect(); !tok.WaitTimeout(waitLong) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(50) })
	return c
}

// The mqtt sink announces its devices to Home Assistant on an external
// broker (mosquitto), publishes the state topic, republishes the configs
// when Home Assistant comes online, and keeps listening across a broker
// restart (each connection subscribes again).
func TestHomeAssistantMosquitto(t *testing.T) {
	m := testutil.StartMosquitto(t, testutil.MosquittoOptions{})
	body, err := os.ReadFile(filepath.Join("..", "..", "wittra", "testdata", "f1_data_tag.json"))
	if err != nil {
		t.Fatal(err)
	}
	s, _ := newSink(t, Config{URL: m.URL(), QoS: 1, Values: true, Devices: devicetopics.Options{
		State: true, RepublishSpread: 200 * time.Millisecond, HomeAssistant: devicetopics.HomeAssistant{Enabled: true},
	}})
	waitConnected(t, s)
	all := testutil.Subscribe(t, m.URL(), "#", 1, testutil.SubscriberOptions{})
	stateTopic := DefaultTopicPrefix + "/" + testProject + "/" + haTag + "/state"
	publishAll(t, s, []sinks.Message{{Seq: 1, Received: time.Now(), Project: testProject, Device: haTag, Kind: sinks.KindData, Body: body}})

	got := all.WaitFor(t, waitLong, "state topic", func(r []testutil.Received) bool { return len(r) > 0 && r[len(r)-1].Topic == stateTopic })
	cfgs, err := hatest.Announced("homeassistant", lastPayloads(got))
	if err != nil {
		t.Error(err)
	}
	if len(cfgs) != 11 {
		t.Fatalf("%d configs, want 11 (gateway + 10 keys of f1)", len(cfgs))
	}
	if got[len(got)-1].Payload[0] != '{' {
		t.Errorf("state %q", got[len(got)-1].Payload)
	}
	countConfigs := func(r []testutil.Received) int {
		n := 0
		for _, x := range r {
			if cfgs[x.Topic].Topic != "" {
				n++
			}
		}
		return n
	}
	// Retained (the sink's retain is off: only values are not).
	late := testutil.Subscribe(t, m.URL(), "homeassistant/#", 1, testutil.SubscriberOptions{})
	late.WaitFor(t, waitLong, "retained configs", func(r []testutil.Received) bool { return countConfigs(r) == len(cfgs) })
	for _, r := range late.Messages() {
		if !r.Retain {
			t.Errorf("%s not retained", r.Topic)
		}
	}

	// Home Assistant restarts: its birth message brings every config again.
	ha := haClient(t, m.URL())
	ha.Publish("homeassistant/status", 1, false, "online").WaitTimeout(waitLong)
	all.WaitFor(t, 30*time.Second, "configs republished", func(r []testutil.Received) bool { return countConfigs(r) == 2*len(cfgs) })

	// A broker restart without persistence loses every retained config;
	// the sink's new connection subscribes again, so Home Assistant's next
	// birth message restores them.
	m.Stop(syscall.SIGKILL)
	m.Start()
	waitConnected(t, s)
	ha = haClient(t, m.URL())
	fresh := testutil.Subscribe(t, m.URL(), "homeassistant/#", 1, testutil.SubscriberOptions{})
	deadline := time.Now().Add(30 * time.Second)
	for countConfigs(fresh.Messages()) < len(cfgs) {
		if time.Now().After(deadline) {
			t.Fatalf("configs not restored after the broker restart: %d of %d", countConfigs(fresh.Messages()), len(cfgs))
		}
		// The sink subscribes once its connection is up: say online until it hears.
		ha.Publish("homeassistant/status", 1, false, "online").WaitTimeout(waitLong)
		time.Sleep(500 * time.Millisecond)
	}
	again := testutil.Subscribe(t, m.URL(), "homeassistant/#", 1, testutil.SubscriberOptions{})
	again.WaitFor(t, waitLong, "retained configs after the restart", func(r []testutil.Received) bool { return countConfigs(r) == len(cfgs) })
}
