package cumulocity

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"wittra-gateway/sinks"
	"wittra-gateway/sinks/cumulocity/c8yfake"
)

// regOf returns the first registration step op concerning managed object
// id (or external id ext when id is "").
func regOf(f *c8yfake.Server, op, id, ext string) (c8yfake.Registration, bool) {
	for _, r := range f.Registrations() {
		if r.Op == op && r.Status/100 == 2 && ((id != "" && r.ID == id) || (id == "" && r.ExternalID == ext)) {
			return r, true
		}
	}
	return c8yfake.Registration{}, false
}

func TestRESTRegistrationOrder(t *testing.T) {
	f := startFake(t)
	s := newSink(t, f, ModeREST, nil)
	deliverAll(t, s, []sinks.Message{message(t, fixture(t, "f1_data_tag.json")), message(t, fixture(t, "f2_data_lpth_event.json"))}, 10*time.Second)

	gw, ok := f.DeviceBySerial(testGateway)
	if !ok {
		t.Fatal("no gateway device")
	}
	gwCreate, _ := regOf(f, "create", gw.ID, "")
	gwBind, _ := regOf(f, "bind", "", testGateway)
	if !(gwCreate.Seq > 0 && gwCreate.Seq < gwBind.Seq) {
		t.Errorf("gateway: create @%d, bind @%d", gwCreate.Seq, gwBind.Seq)
	}
	for _, dev := range []string{tagID, lpthID} {
		mo, ok := f.DeviceBySerial(dev)
		if !ok {
			t.Fatalf("no device %s", dev)
		}
		create, _ := regOf(f, "create", mo.ID, "")
		bind, _ := regOf(f, "bind", "", dev)
		link, _ := regOf(f, "link", mo.ID, "")
		data := firstMeasurementSeq(f, dev)
		seqs := []uint64{gwBind.Seq, create.Seq, bind.Seq, link.Seq, data}
		if !slices.IsSorted(seqs) || slices.Contains(seqs, 0) {
			t.Errorf("%s: gateway bound @%d, child created @%d, bound @%d, linked @%d, first data @%d; want increasing",
				dev, gwBind.Seq, create.Seq, bind.Seq, link.Seq, data)
		}
		if link.Parent != gw.ID {
			t.Errorf("%s linked under %s, want the gateway %s", dev, link.Parent, gw.ID)
		}
		if mo.Type != sensorType || !mo.IsDevice {
			t.Errorf("%s: type %q device %v", dev, mo.Type, mo.IsDevice)
		}
	}
}

func TestRESTQuoting(t *testing.T) { testQuoting(t, ModeREST) }

// Every injected fault is followed by complete delivery.
func TestRESTFaults(t *testing.T) {
	const n = 40
	cases := []struct {
		name       string
		timeout    time.Duration
		inject     func(f *c8yfake.Server)
		retryAfter time.Duration // the delivery must have waited at least this
	}{
		{"TooManyRequests", 2 * time.Second, func(f *c8yfake.Server) {
			f.InjectHTTP(c8yfake.HTTPFault{Status: http.StatusTooManyRequests, RetryAfter: "1", PathPrefix: "/measurement"}, 2)
		}, 2 * time.Second},
		{"InternalError", 2 * time.Second, func(f *c8yfake.Server) {
			f.InjectHTTP(c8yfake.HTTPFault{Status: http.StatusInternalServerError}, 2)
		}, 0},
		{"Unavailable", 2 * time.Second, func(f *c8yfake.Server) {
			f.InjectHTTP(c8yfake.HTTPFault{Status: http.StatusServiceUnavailable, RetryAfter: "1"}, 1)
		}, time.Second},
		{"Unauthorized", 2 * time.Second, func(f *c8yfake.Server) {
			f.InjectHTTP(c8yfake.HTTPFault{Status: http.StatusUnauthorized}, 1)
		}, 0},
		{"SlowReply", 400 * time.Millisecond, func(f *c8yfake.Server) {
			f.InjectHTTP(c8yfake.HTTPFault{Delay: 700 * time.Millisecond, PathPrefix: "/measurement"}, 1)
		}, 0},
		{"ResetAfterStore", 2 * time.Second, func(f *c8yfake.Server) {
			f.InjectHTTP(c8yfake.HTTPFault{ResetAfterStore: true, PathPrefix: "/measurement"}, 2)
		}, 0},
		{"RegistrationFails", 2 * time.Second, func(f *c8yfake.Server) {
			f.InjectHTTP(c8yfake.HTTPFault{Status: http.StatusBadGateway, Method: http.MethodPost, PathPrefix: "/identity/globalIds/"}, 1)
		}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f, d := faultRun(t, ModeREST, n, tc.timeout, tc.name != "RegistrationFails", tc.inject)
			if len(f.FaultsFired()) == 0 || len(d.failures) == 0 {
				t.Errorf("fault never fired or never seen")
			}
			if tc.retryAfter > 0 && d.elapsed < tc.retryAfter {
				t.Errorf("took %v, Retry-After asked for %v", d.elapsed, tc.retryAfter)
			}
		})
	}
}

// A measurement Cumulocity refuses with 422 inside a batch: the batch is
// retried one message at a time, the invalid message is reported
// permanent and the following ones flow.
func TestREST422DeadLettered(t *testing.T) {
	f := startFake(t)
	s := newSink(t, f, ModeREST, nil)
	msgs := dataMessages(t, 6)
	bad := message(t, []byte(`{"deviceId":"D0000000000000002","timestamp":"2024-01-01T01:00:00Z","payload":{"temperature":666.666}}`))
	all := slices.Concat(msgs[:3], []sinks.Message{bad}, msgs[3:])
	f.InjectHTTP(c8yfake.HTTPFault{Status: http.StatusUnprocessableEntity, PathPrefix: "/measurement", BodyContains: "666.666"}, -1)
	d := deliverAll(t, s, all, 10*time.Second)
	if !slices.Equal(d.rejected, []uint64{bad.Seq}) {
		t.Errorf("rejected %v, want [%d]", d.rejected, bad.Seq)
	}
	if dups := checkAllThere(t, f, 6); dups != 0 {
		t.Errorf("%d duplicates", dups)
	}
	for _, m := range f.Measurements() {
		if _, ok := m.Fragments["c8y_TemperatureMeasurement"]["T"]; ok && m.Fragments["c8y_TemperatureMeasurement"]["T"].Text == "666.666" {
			t.Errorf("refused measurement stored: %+v", m)
		}
	}
	if d.attempts > 3 {
		t.Errorf("%d Publish calls, want the batch split in one call", d.attempts)
	}
}

// The fake's own validation (not an injected fault) answers 422 for a
// measurement the mapper would never produce, and the sink classifies it
// as invalid, i.e. permanent for the message.
func TestRESTInvalidIsPermanent(t *testing.T) {
	f := startFake(t)
	s := newSink(t, f, ModeREST, nil)
	deliverAll(t, s, dataMessages(t, 1), 5*time.Second)
	gw, _ := f.DeviceBySerial(testGateway)
	err := s.rest.postMeasurements(context.Background(), [][]byte{[]byte(fmt.Sprintf(
		`{"source":{"id":%q},"type":"x","time":"2024-01-01T00:00:00Z","bad name":{"v":{"value":1}}}`, gw.ID))})
	if !isInvalid(err) {
		t.Errorf("invalid measurement: %v, want a 422", err)
	}
}

// A device deleted in Cumulocity while its id is cached: the 422 it causes
// is not the message's fault; the device is registered again and the data
// delivered.
func TestRESTDeletedDeviceRegisteredAgain(t *testing.T) {
	f := startFake(t)
	s := newSink(t, f, ModeREST, nil)
	msgs := dataMessages(t, 6)
	deliverAll(t, s, msgs[:3], 5*time.Second)
	mo, _ := f.DeviceBySerial(faultDevices[1])
	if !f.DeleteManagedObject(mo.ID) {
		t.Fatal("delete failed")
	}
	d := deliverAll(t, s, msgs[3:], 10*time.Second)
	if len(d.rejected) > 0 {
		t.Fatalf("rejected %v; failures %q", d.rejected, d.failures)
	}
	again, ok := f.DeviceBySerial(faultDevices[1])
	if !ok || again.ID == mo.ID {
		t.Fatalf("device not registered again: %+v", again)
	}
	lines, _ := flat(f, faultDevices[1])
	if len(lines) != 1 { // message 4 only; message 1 went with the deleted object
		t.Errorf("new device has %q", lines)
	}
	gw, _ := f.DeviceBySerial(testGateway)
	if !slices.Contains(gw.Children, again.ID) {
		t.Errorf("new device %s not linked under the gateway (%v)", again.ID, gw.Children)
	}
	t.Logf("transient errors: %q", d.failures)
}

func TestRESTRestartKeepsRegistration(t *testing.T) {
	testRestart(t, ModeREST, func(t *testing.T, f *c8yfake.Server) {
		count := map[string]int{}
		for _, r := range f.Registrations() {
			count[r.Op]++
		}
		// gateway and three children: one lookup, creation and binding
		// each, three links, and nothing more after the restart
		want := map[string]int{"lookup": 4, "create": 4, "bind": 4, "link": 3}
		for op, n := range want {
			if count[op] != n {
				t.Errorf("%s: %d requests, want %d (all: %v)", op, count[op], n, count)
			}
		}
	})
}

// An existing gateway (registered by someone else) is found, not created.
func TestRESTFindsExistingDevices(t *testing.T) {
	f := startFake(t)
	s1 := newSink(t, f, ModeREST, nil)
	deliverAll(t, s1, dataMessages(t, 3), 5*time.Second)
	s2 := newSink(t, f, ModeREST, nil) // fresh memory state, same tenant
	deliverAll(t, s2, dataMessages(t, 3), 5*time.Second)
	n := 0
	for _, r := range f.Registrations() {
		if r.Op == "create" {
			n++
		}
	}
	if n != 4 {
		t.Errorf("%d managed objects created, want 4", n)
	}
}

func TestRESTBadPassword(t *testing.T) {
	f := startFake(t)
	s := newSink(t, f, ModeREST, func(c *Config) { c.Password = "wrong" })
	n, err := s.Publish(context.Background(), dataMessages(t, 1))
	var he *httpError
	if n != 0 || errors.Is(err, sinks.ErrPermanent) || !errors.As(err, &he) || he.status != http.StatusUnauthorized {
		t.Errorf("Publish = %d, %v; want 0 and a transient 401", n, err)
	}
	if !strings.Contains(err.Error(), "security/Unauthorized") {
		t.Errorf("error %q lacks the Cumulocity error", err)
	}
}
