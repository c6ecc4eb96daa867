package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"wittra-gateway/internal/testutil"
	"wittra-gateway/sinks"
)

const statusTopic = "wittra/gateway/" + testGateway + "/status"

func TestSinkStatus(t *testing.T) {
	srv := startServer(t, Config{AllowAnonymous: true})
	s, _ := newSink(t, srv, SinkConfig{Name: "local"})

	live := subscribe(t, mustDial(t, clientOpts{url: tcpURL(srv)}), statusTopic, 1)
	if r := live.Next(t, waitLong); r.Payload != "online" || !r.Retain {
		t.Fatalf("first status = %+v, want retained online", r)
	}

	if err := s.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if r := live.Next(t, waitLong); r.Payload != "offline" {
		t.Fatalf("status after Close = %+v, want offline", r)
	}
	late := subscribe(t, mustDial(t, clientOpts{url: tcpURL(srv)}), statusTopic, 1)
	if r := late.Next(t, waitLong); r.Payload != "offline" || !r.Retain {
		t.Fatalf("late status after Close = %+v, want retained offline", r)
	}

	if err := s.Close(context.Background()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if n, err := s.Publish(context.Background(), []sinks.Message{msg("p", "d", sinks.KindData, `{}`)}); n != 0 || !errors.Is(err, ErrSinkClosed) {
		t.Fatalf("Publish after Close = %d, %v; want 0, ErrSinkClosed", n, err)
	}
}

func TestSinkPublishTopics(t *testing.T) {
	tests := []struct {
		name   string
		cfg    SinkConfig
		msg    sinks.Message
		topic  string
		status string
	}{
		{
			name:   "Data",
			msg:    msg(testProject, "D00124B001E2A1B2C", sinks.KindData, fixture(t, "f1_data_tag.json")),
			topic:  "wittra/" + testProject + "/D00124B001E2A1B2C/data",
			status: statusTopic,
		},
		{
			name:   "Event",
			msg:    msg(testProject, "D00124B001E2A1B2C", sinks.KindEvent, fixture(t, "f3_event_device_updated.json")),
			topic:  "wittra/" + testProject + "/D00124B001E2A1B2C/event",
			status: statusTopic,
		},
		{
			name:   "Prefix",
			cfg:    SinkConfig{TopicPrefix: "site/a", GatewayID: "gw9"},
			msg:    msg("default", "_unknown", sinks.KindData, `{"x":1}`),
			topic:  "site/a/default/_unknown/data",
			status: "site/a/gateway/gw9/status",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startServer(t, Config{AllowAnonymous: true})
			s, _ := newSink(t, srv, tt.cfg)
			sub := subscribe(t, mustDial(t, clientOpts{url: tcpURL(srv)}), "#", 2)
			if r := sub.Next(t, waitLong); r.Topic != tt.status || r.Payload != "online" {
				t.Fatalf("first message = %+v, want online on %s", r, tt.status)
			}

			publish(t, s, tt.msg)
			r := sub.Next(t, waitLong)
			if r.Topic != tt.topic {
				t.Fatalf("topic = %s, want %s", r.Topic, tt.topic)
			}
			if r.Payload != string(tt.msg.Body) {
				t.Fatalf("payload differs from the body:\n%s\nwant\n%s", r.Payload, tt.msg.Body)
			}
			if r.Retain || r.QoS != 2 {
				t.Fatalf("retain=%v qos=%d, want false 2", r.Retain, r.QoS)
			}
			sub.Quiet(t, 200*time.Millisecond) // no value topics without Values
		})
	}
}

func TestSinkPublishValues(t *testing.T) {
	location := `{"latitude":59.33258,"longitude":18.06491,"accuracy":0.8,"level":2,"height":1.1,"label":"Hall B"}`
	neighbors := `[{"id":"D00124B001E2C0FFE","rssi":-67},{"id":"D00124B001E2BEEF1","rssi":-81}]`
	tests := []struct {
		name string
		msg  sinks.Message
		want map[string]string // leaf under wittra/<project>/<device>/ → payload
		json map[string]bool   // leaves compared as JSON
	}{
		{
			name: "Tag",
			msg:  msg(testProject, "D00124B001E2A1B2C", sinks.KindData, fixture(t, "f1_data_tag.json")),
			want: map[string]string{
				"temperature":            "21.75",
				"battery/percentage":     "75",
				"battery/voltage":        "3.92",
				"battery/chargingStatus": "NOT_PLUGGED",
				"usage/moving":           "42",
				"location":               location,
				"neighbors":              neighbors,
			},
			json: map[string]bool{"location": true, "neighbors": true},
		},
		{
			name: "Data20",
			msg:  msg("default", "D00124B001E2D3E4F", sinks.KindData, fixture(t, "f4_data20.json")),
			want: map[string]string{
				"wittra-lpth-humidity/humidity":    "40.5",
				"wittra-lpth-humidity/temperature": "22.6",
				"wittra-tag-uptime/uptime":         "86400",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startServer(t, Config{AllowAnonymous: true})
			s, logs := newSink(t, srv, SinkConfig{Values: true})
			base := "wittra/" + tt.msg.Project + "/" + tt.msg.Device + "/"
			sub := subscribe(t, mustDial(t, clientOpts{url: tcpURL(srv)}), base+"#", 1)

			publish(t, s, tt.msg)
			if r := sub.Next(t, waitLong); r.Topic != base+"data" || r.Payload != string(tt.msg.Body) {
				t.Fatalf("first = %s, want the body on %sdata", r.Topic, base)
			}
			got := map[string]string{}
			found := 0
			deadline := time.Now().Add(waitLong)
			for found < len(tt.want) {
				r, ok := sub.Poll(time.Until(deadline))
				if !ok {
					break
				}
				leaf := strings.TrimPrefix(r.Topic, base)
				if _, ok := tt.want[leaf]; ok {
					found++
				}
				got[leaf] = r.Payload
			}
			for leaf, want := range tt.want {
				g, ok := got[leaf]
				switch {
				case !ok:
					t.Errorf("%s: not published (values log: %s)", leaf, strings.TrimSpace(logs.String()))
				case tt.json[leaf]:
					if !jsonEqual(t, g, want) {
						t.Errorf("%s = %s, want %s", leaf, g, want)
					}
				case g != want:
					t.Errorf("%s = %q, want %q", leaf, g, want)
				}
			}
		})
	}
}

func jsonEqual(t *testing.T, a, b string) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal([]byte(a), &x); err != nil {
		t.Errorf("not JSON: %s", a)
		return false
	}
	if err := json.Unmarshal([]byte(b), &y); err != nil {
		t.Fatalf("bad want JSON %s", b)
	}
	return reflect.DeepEqual(x, y)
}

// A body whose values cannot be computed is still published on /data and
// counts as delivered; the values error is logged.
func TestSinkValuesError(t *testing.T) {
	srv := startServer(t, Config{AllowAnonymous: true})
	s, logs := newSink(t, srv, SinkConfig{Values: true})
	sub := subscribe(t, mustDial(t, clientOpts{url: tcpURL(srv)}), "wittra/p/+/data", 1)

	// Valid JSON (the queue holds nothing else) whose values fail.
	bad := msg("p", "bad", sinks.KindData, `{"deviceId":"bad","payloadType":5}`)
	good := msg("p", "good", sinks.KindData, `{"deviceId":"good"}`)
	n, err := s.Publish(context.Background(), []sinks.Message{bad, good})
	if n != 2 || err != nil {
		t.Fatalf("Publish = %d, %v; want 2, nil", n, err)
	}
	for _, want := range []string{"wittra/p/bad/data", "wittra/p/good/data"} {
		if r := sub.Next(t, waitLong); r.Topic != want {
			t.Fatalf("topic = %s, want %s", r.Topic, want)
		}
	}
	if l := logs.String(); !strings.Contains(l, `"level":"warn"`) || !strings.Contains(l, fmt.Sprintf(`"seq":%d`, bad.Seq)) {
		t.Fatalf("no warning for the values error in log:\n%s", l)
	}
}

func TestSinkRetain(t *testing.T) {
	for _, retain := range []bool{true, false} {
		t.Run(fmt.Sprintf("Retain=%v", retain), func(t *testing.T) {
			srv := startServer(t, Config{AllowAnonymous: true})
			s, _ := newSink(t, srv, SinkConfig{Retain: retain})
			m := msg(testProject, "D00124B001E2A1B2C", sinks.KindData, fixture(t, "f1_data_tag.json"))
			publish(t, s, m)

			topic := "wittra/" + testProject + "/D00124B001E2A1B2C/data"
			late := subscribe(t, mustDial(t, clientOpts{url: tcpURL(srv)}), "wittra/#", 1)
			got := late.Until(t, statusTopic, waitLong) // the status is always retained
			var data []testutil.Received
			for _, r := range got {
				if r.Topic == topic {
					data = append(data, r)
				}
			}
			if retain && len(data) == 0 {
				// retained messages come in no particular order
				data = append(data, late.Next(t, waitLong))
			}
			late.Quiet(t, 200*time.Millisecond)
			if !retain {
				if len(data) != 0 {
					t.Fatalf("late subscriber got %v without retain", data)
				}
				return
			}
			if len(data) != 1 || data[0].Topic != topic || data[0].Payload != string(m.Body) || !data[0].Retain {
				t.Fatalf("late subscriber got %+v, want the retained body on %s", data, topic)
			}
		})
	}
}

func TestSinkOrder(t *testing.T) {
	const n = 500
	srv := startServer(t, Config{AllowAnonymous: true})
	s, _ := newSink(t, srv, SinkConfig{})
	sub := subscribe(t, mustDial(t, clientOpts{url: tcpURL(srv)}), "wittra/p/D1/data", 1)

	msgs := make([]sinks.Message, n)
	for i := range msgs {
		msgs[i] = msg("p", "D1", sinks.KindData, fmt.Sprintf(`{"deviceId":"D1","n":%d}`, i))
	}
	for i := 0; i < n; i += 50 { // batches, as a forwarder sends them
		publish(t, s, msgs[i:i+50]...)
	}
	for i := range n {
		r := sub.Next(t, waitLong)
		if want := string(msgs[i].Body); r.Payload != want {
			t.Fatalf("message %d = %s, want %s", i, r.Payload, want)
		}
		if r.QoS != 1 {
			t.Fatalf("message %d qos = %d, want 1", i, r.QoS)
		}
	}
}

func TestSinkPublishCancelled(t *testing.T) {
	srv := startServer(t, Config{AllowAnonymous: true})
	s, _ := newSink(t, srv, SinkConfig{})
	sub := subscribe(t, mustDial(t, clientOpts{url: tcpURL(srv)}), "wittra/p/#", 1)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	n, err := s.Publish(ctx, []sinks.Message{msg("p", "d", sinks.KindData, `{}`)})
	if n != 0 || !errors.Is(err, context.Canceled) {
		t.Fatalf("Publish = %d, %v; want 0, context.Canceled", n, err)
	}
	sub.Quiet(t, 200*time.Millisecond)
}

func TestNewSinkErrors(t *testing.T) {
	srv := startServer(t, Config{})
	log, _ := testLogger()
	tests := []struct {
		name string
		srv  *Server
		cfg  SinkConfig
	}{
		{"NoServer", nil, SinkConfig{GatewayID: "gw"}},
		{"NoGatewayID", srv, SinkConfig{}},
		{"GatewayIDSlash", srv, SinkConfig{GatewayID: "a/b"}},
		{"PrefixWildcard", srv, SinkConfig{GatewayID: "gw", TopicPrefix: "wittra/#"}},
		{"PrefixEmptyLevel", srv, SinkConfig{GatewayID: "gw", TopicPrefix: "wittra/"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if s, err := NewSink(tt.srv, tt.cfg, log); err == nil {
				_ = s.Close(context.Background())
				t.Fatalf("NewSink(%+v) = nil error", tt.cfg)
			}
		})
	}
}

// Several sinks may share one server; closing a sink leaves it running.
func TestSinksShareServer(t *testing.T) {
	srv := startServer(t, Config{AllowAnonymous: true})
	a, _ := newSink(t, srv, SinkConfig{Name: "a", TopicPrefix: "a"})
	b, _ := newSink(t, srv, SinkConfig{Name: "b", TopicPrefix: "b"})
	if err := a.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	sub := subscribe(t, mustDial(t, clientOpts{url: tcpURL(srv)}), "b/p/+/data", 1)
	publish(t, b, msg("p", "d", sinks.KindData, `{"k":1}`))
	if r := sub.Next(t, waitLong); r.Topic != "b/p/d/data" {
		t.Fatalf("got %+v", r)
	}
}
