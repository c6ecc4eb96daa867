package cumulocity

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"wittra-gateway/internal/testutil"
	"wittra-gateway/sinks"
	"wittra-gateway/sinks/cumulocity/c8yfake"
)

// series of plain data messages for the fault tests: n messages spread
// over three devices, each with a distinct temperature.
var faultDevices = []string{"D0000000000000001", "D0000000000000002", "D0000000000000003"}

func dataMessages(t *testing.T, n int) []sinks.Message {
	var msgs []sinks.Message
	for i := range n {
		body := fmt.Sprintf(`{"deviceId":%q,"payloadType":"DATA","timestamp":"2024-01-01T00:%02d:%02d.000000+00:00","payload":{"temperature":%d.5}}`,
			faultDevices[i%len(faultDevices)], i/60, i%60, i)
		msgs = append(msgs, message(t, []byte(body)))
	}
	return msgs
}

// checkAllThere fails unless every message of dataMessages(n) is stored at
// least once; it logs duplicates and returns their number.
// faultRun delivers n messages through a sink of mode with RequestTimeout
// timeout, injecting the fault after the first 3 (which register the
// devices) or, with register false, before any; none may be rejected and
// all must be stored.
func faultRun(t *testing.T, mode string, n int, timeout time.Duration, register bool, inject func(*c8yfake.Server)) (*c8yfake.Server, delivery) {
	t.Helper()
	f := startFake(t)
	s := newSink(t, f, mode, func(c *Config) { c.RequestTimeout = timeout })
	msgs := dataMessages(t, n)
	if register {
		deliverAll(t, s, msgs[:3], 10*time.Second) // registers the devices
		msgs = msgs[3:]
	}
	inject(f)
	d := deliverAll(t, s, msgs, 30*time.Second)
	if len(d.rejected) > 0 {
		t.Errorf("rejected %v", d.rejected)
	}
	dups := checkAllThere(t, f, n)
	t.Logf("%d Publish calls, %d duplicates stored; faults fired %v; transient errors: %q",
		d.attempts, dups, f.FaultsFired(), d.failures)
	return f, d
}

func checkAllThere(t *testing.T, f *c8yfake.Server, n int) int {
	t.Helper()
	dups := 0
	got := map[string][]string{}
	for _, d := range faultDevices {
		lines, counts := flat(f, d)
		got[d] = lines
		dups += duplicates(counts)
	}
	for i := range n {
		dev := faultDevices[i%len(faultDevices)]
		want := fmt.Sprintf("M c8y_TemperatureMeasurement 2024-01-01T00:%02d:%02d.000Z c8y_TemperatureMeasurement.T=%d.5 C", i/60, i%60, i)
		if !slices.Contains(got[dev], want) {
			t.Errorf("message %d lost: no %q", i, want)
		}
	}
	return dups
}

// regSeq returns the Seq of the first registration matching op and ext, 0
// when none.
func regSeq(f *c8yfake.Server, op, ext string) uint64 {
	for _, r := range f.Registrations() {
		if r.Op == op && r.ExternalID == ext {
			return r.Seq
		}
	}
	return 0
}

// firstMeasurementSeq returns the Seq of the first measurement of device ext.
func firstMeasurementSeq(f *c8yfake.Server, ext string) uint64 {
	mo, ok := f.DeviceBySerial(ext)
	if !ok {
		return 0
	}
	for _, m := range f.Measurements() {
		if m.Source == mo.ID {
			return m.Seq
		}
	}
	return 0
}

func TestMQTTRegistrationOrder(t *testing.T) {
	f := startFake(t)
	s := newSink(t, f, ModeMQTT, nil)
	deliverAll(t, s, []sinks.Message{message(t, fixture(t, "f1_data_tag.json")), message(t, fixture(t, "f2_data_lpth_event.json"))}, 10*time.Second)

	gw := regSeq(f, "100", testGateway)
	for _, dev := range []string{tagID, lpthID} {
		child, data := regSeq(f, "101", dev), firstMeasurementSeq(f, dev)
		if !(gw > 0 && gw < child && child < data) {
			t.Errorf("%s: order gateway 100 @%d, child 101 @%d, first data @%d; want increasing", dev, gw, child, data)
		}
	}
	gwMO, _ := f.DeviceBySerial(testGateway)
	for _, r := range f.Registrations() {
		switch r.Op {
		case "auto-device", "auto-child":
			t.Errorf("device created implicitly by data: %+v", r)
		case "101":
			if r.Parent != gwMO.ID {
				t.Errorf("101 for %s under %s, want the gateway %s", r.ExternalID, r.Parent, gwMO.ID)
			}
		}
	}
	// The child's "101" went on s/us, its data on s/us/<id>.
	for _, p := range f.Publishes() {
		if strings.HasPrefix(p.Payload, "101,") && p.Topic != "s/us" {
			t.Errorf("101 published on %s", p.Topic)
		}
		if strings.HasPrefix(p.Payload, "211,") && p.Topic != "s/us/"+tagID {
			t.Errorf("tag data published on %s", p.Topic)
		}
	}
}

// The gateway is announced again on every reconnect; Cumulocity's "41,100"
// answer is expected and harmless.
func TestMQTTAnnouncesOnReconnect(t *testing.T) {
	f := startFake(t)
	s := newSink(t, f, ModeMQTT, nil)
	deliverAll(t, s, dataMessages(t, 1), 10*time.Second)
	f.DropConnections()
	testutil.WaitFor(t, 10*time.Second, "second 100", func() bool {
		n := 0
		for _, r := range f.Registrations() {
			if r.Op == "100" {
				n++
			}
		}
		return n >= 2
	})
	found := false
	for _, e := range f.Errors() {
		found = found || e.Text == "41,100,Device already existing"
	}
	if !found {
		t.Errorf("no 41,100 after the second announcement; errors: %+v", f.Errors())
	}
}

func TestMQTTQuoting(t *testing.T) {
	testQuoting(t, ModeMQTT)
}

// testQuoting sends a device id and event texts with commas, quotes,
// tabs, newlines, edge blanks and non-ASCII, and checks they arrive intact.
func testQuoting(t *testing.T, mode string) {
	f := startFake(t)
	s := newSink(t, f, mode, nil)
	const dev = `Dev "7", Hall Ö`
	event := `{"eventType":"DEVICE_UPDATED","payloadType":"EVENT","timestamp":"2024-03-12T09:00:00Z",
		"payload":{"deviceId":"D00124B001E2A1B2C","changes":{
			"name":{"old":"Forklift 7","new":"Truck \"7\", Hall Ö"},
			"note":{"old":null,"new":" tab\there\nnew line "},
			"tags":{"old":[],"new":["a,b","c\"d"]}}}}`
	data := fmt.Sprintf(`{"deviceId":%q,"timestamp":"2024-03-12T09:00:01Z","payload":{"temperature":1.5}}`, dev)
	d := deliverAll(t, s, []sinks.Message{message(t, []byte(event)), message(t, []byte(data))}, 10*time.Second)
	if len(d.rejected) > 0 {
		t.Fatalf("rejected %v", d.rejected)
	}
	wantText := `name: Forklift 7 -> Truck "7", Hall Ö; note: null ->  tab` + "\there\nnew line " + `; tags: [] -> ["a,b","c\"d"]`
	if mode == ModeMQTT {
		// SmartREST never carries a backslash before a quote (see quoteField)
		wantText = strings.ReplaceAll(wantText, `\"`, `"`)
	}
	events := f.Events()
	if len(events) != 1 || events[0].Text != wantText || events[0].Type != "wittra_DEVICE_UPDATED" {
		t.Errorf("events = %+v\nwant text %q", events, wantText)
	}
	mo, ok := f.DeviceBySerial(dev)
	if !ok {
		t.Fatalf("no device with external id %q; devices: %+v", dev, f.Devices())
	}
	if mo.Name != "Wittra "+dev {
		t.Errorf("name = %q, want %q", mo.Name, "Wittra "+dev)
	}
	if lines, _ := flat(f, dev); len(lines) != 1 || !strings.Contains(lines[0], "T=1.5 C") {
		t.Errorf("data of %q = %q", dev, lines)
	}
	for _, e := range f.Errors() {
		if !strings.HasPrefix(e.Text, "41,100,") && !strings.HasPrefix(e.Text, "404 GET /identity/") {
			t.Errorf("Cumulocity error: %+v", e)
		}
	}
}

// A message whose lines exceed one packet is split over several publishes,
// each within the limit, and arrives whole.
func TestMQTTSplitsPayloads(t *testing.T) {
	f := startFake(t)
	s := newSink(t, f, ModeMQTT, nil)
	var b strings.Builder
	b.WriteString(`{"deviceId":"D0000000000000009","timestamp":"2024-01-01T00:00:00Z","payload":{`)
	const groups, fields = 30, 40
	for g := range groups {
		if g > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"group_%02d":{`, g)
		for k := range fields {
			if k > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `"a_rather_long_series_name_%02d":%d.25`, k, g*100+k)
		}
		b.WriteByte('}')
	}
	b.WriteString(`}}`)
	m := message(t, []byte(b.String()))
	d := deliverAll(t, s, []sinks.Message{m}, 10*time.Second)
	if len(d.rejected) > 0 || d.attempts != 1 {
		t.Fatalf("rejected %v after %d attempts; failures %q", d.rejected, d.attempts, d.failures)
	}
	var dataPubs []c8yfake.Publish
	for _, p := range f.Publishes() {
		if p.Packet > MaxPacketSize {
			t.Errorf("publish of %d bytes over the %d limit", p.Packet, MaxPacketSize)
		}
		if p.Topic == "s/us/D0000000000000009" {
			dataPubs = append(dataPubs, p)
		}
	}
	total := 0
	for _, p := range dataPubs {
		total += p.Lines
	}
	if len(dataPubs) < 2 || total != groups {
		t.Errorf("%d publishes with %d lines, want several with %d", len(dataPubs), total, groups)
	}
	lines, _ := flat(f, "D0000000000000009")
	if len(lines) != groups*fields {
		t.Errorf("%d series stored, want %d", len(lines), groups*fields)
	}
	t.Logf("one message of %d lines went as %d publishes", groups, len(dataPubs))
	for _, e := range f.Errors() {
		if !strings.HasPrefix(e.Text, "41,100,") {
			t.Errorf("Cumulocity error: %+v", e)
		}
	}
}

// A single line that cannot fit a packet makes its message permanent; the
// next message still goes through. So do a data message without device
// and one with nothing Cumulocity can store.
func TestMQTTPermanentMessagesSkipped(t *testing.T) {
	f := startFake(t)
	s := newSink(t, f, ModeMQTT, nil)
	huge := fmt.Sprintf(`{"payloadType":"EVENT","eventType":"X","payload":{"deviceId":"D0000000000000001","changes":{"blob":{"old":null,"new":%q}}}}`,
		strings.Repeat("x", MaxPacketSize))
	msgs := dataMessages(t, 3)
	bad := []sinks.Message{
		message(t, []byte(huge)),
		message(t, []byte(`{"payloadType":"DATA","payload":{"temperature":1}}`)),                                // no device
		message(t, []byte(`{"deviceId":"D0000000000000002","payload":{"neighbors":[{"id":"D1","rssi":-60}]}}`)), // nothing numeric
		message(t, []byte(`{"deviceId":"D0000000000000002","binaryData":"not base64!"}`)),                       // undecodable
	}
	all := []sinks.Message{msgs[0], bad[0], msgs[1], bad[1], bad[2], bad[3], msgs[2]}
	d := deliverAll(t, s, all, 10*time.Second)
	var want []uint64
	for _, m := range bad {
		want = append(want, m.Seq)
	}
	if !slices.Equal(d.rejected, want) {
		t.Errorf("rejected %v, want %v", d.rejected, want)
	}
	if dups := checkAllThere(t, f, 3); dups != 0 {
		t.Errorf("%d duplicates", dups)
	}
	for _, e := range f.Errors() {
		if !strings.HasPrefix(e.Text, "41,100,") {
			t.Errorf("Cumulocity error: %+v", e)
		}
	}
}

// Every injected fault is followed by complete delivery: nothing lost,
// duplicates allowed and logged.
func TestMQTTFaults(t *testing.T) {
	const n = 40
	cases := []struct {
		name    string
		timeout time.Duration // RequestTimeout
		inject  func(f *c8yfake.Server)
	}{
		{"DropConnection", 2 * time.Second, func(f *c8yfake.Server) {
			// hold one publish in the broker, then cut the network under it
			f.InjectMQTT(c8yfake.MQTTFault{Delay: 300 * time.Millisecond, Skip: 10}, 1)
			go func() {
				time.Sleep(150 * time.Millisecond)
				f.DropConnections()
			}()
		}},
		{"PubackWithheld", 700 * time.Millisecond, func(f *c8yfake.Server) {
			f.InjectMQTT(c8yfake.MQTTFault{Mode: c8yfake.DropPublish, Skip: 7}, 1)
		}},
		{"StoredPubackWithheld", 700 * time.Millisecond, func(f *c8yfake.Server) {
			f.InjectMQTT(c8yfake.MQTTFault{Mode: c8yfake.StoreNoPuback, Skip: 7}, 2)
		}},
		{"StoreThenDisconnect", 2 * time.Second, func(f *c8yfake.Server) {
			f.InjectMQTT(c8yfake.MQTTFault{Mode: c8yfake.StoreAndDisconnect, Skip: 12}, 1)
		}},
		{"SlowPuback", 500 * time.Millisecond, func(f *c8yfake.Server) {
			f.InjectMQTT(c8yfake.MQTTFault{Delay: 800 * time.Millisecond, Skip: 5}, 1)
		}},
		{"MidSessionConnack", 2 * time.Second, func(f *c8yfake.Server) {
			f.InjectMQTT(c8yfake.MQTTFault{Delay: 200 * time.Millisecond, Skip: 10}, 1)
			go func() {
				time.Sleep(100 * time.Millisecond)
				f.KickWithConnack(3)
			}()
		}},
		{"ReconnectRefused", 2 * time.Second, func(f *c8yfake.Server) {
			f.RefuseConnects(5, 2)
			f.DropConnections()
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f, _ := faultRun(t, ModeMQTT, n, tc.timeout, true, tc.inject)
			if len(f.FaultsFired()) == 0 {
				t.Errorf("fault never fired")
			}
		})
	}
}

// A restart with the same State does not register the children again.
func TestMQTTRestartKeepsRegistration(t *testing.T) {
	testRestart(t, ModeMQTT, func(t *testing.T, f *c8yfake.Server) {
		for _, dev := range faultDevices {
			n := 0
			for _, r := range f.Registrations() {
				if r.Op == "101" && r.ExternalID == dev {
					n++
				}
			}
			if n != 1 {
				t.Errorf("%s: %d child registrations, want 1", dev, n)
			}
		}
	})
}

func testRestart(t *testing.T, mode string, check func(*testing.T, *c8yfake.Server)) {
	f := startFake(t)
	dir := t.TempDir()
	msgs := dataMessages(t, 12)

	q, kv := openKV(t, dir)
	s1 := newSink(t, f, mode, func(c *Config) { c.State = kv })
	deliverAll(t, s1, msgs[:6], 10*time.Second)
	if err := s1.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}

	q, kv = openKV(t, dir)
	defer q.Close()
	s2 := newSink(t, f, mode, func(c *Config) { c.State = kv })
	deliverAll(t, s2, msgs[6:], 10*time.Second)
	_ = s2.Close(context.Background())
	if dups := checkAllThere(t, f, len(msgs)); dups != 0 {
		t.Errorf("%d duplicates", dups)
	}
	check(t, f)
}

// New never waits for the network; Publish without a connection fails
// transiently once the request timeout passes.
func TestMQTTUnreachable(t *testing.T) {
	f := startFake(t)
	url := f.MQTTURL()
	_ = f.Close()
	start := time.Now()
	s := newSink(t, f, ModeMQTT, func(c *Config) { c.URL = url; c.RequestTimeout = 300 * time.Millisecond })
	if d := time.Since(start); d > 100*time.Millisecond {
		t.Errorf("New took %v", d)
	}
	n, err := s.Publish(context.Background(), dataMessages(t, 2))
	if n != 0 || err == nil || errors.Is(err, sinks.ErrPermanent) {
		t.Errorf("Publish = %d, %v; want 0 and a transient error", n, err)
	}
	if err := s.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Publish(context.Background(), dataMessages(t, 1)); !errors.Is(err, ErrClosed) {
		t.Errorf("Publish after Close: %v, want ErrClosed", err)
	}
}

// Wrong credentials: CONNACK refused, Publish fails transiently.
func TestMQTTBadPassword(t *testing.T) {
	f := startFake(t)
	s := newSink(t, f, ModeMQTT, func(c *Config) { c.Password = "wrong"; c.RequestTimeout = 400 * time.Millisecond })
	n, err := s.Publish(context.Background(), dataMessages(t, 1))
	if n != 0 || err == nil || errors.Is(err, sinks.ErrPermanent) {
		t.Errorf("Publish = %d, %v; want 0 and a transient error", n, err)
	}
	found := false
	for _, e := range f.Errors() {
		found = found || strings.HasPrefix(e.Text, "CONNACK 4")
	}
	if !found {
		t.Errorf("no CONNACK 4 recorded: %+v", f.Errors())
	}
}
