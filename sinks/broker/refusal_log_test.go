package broker

import (
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/zerolog"

	"wittra-gateway/internal/testutil"
)

// A refused publish or subscribe is logged once a minute per client, user
// and topic, naming all three; mochi's own "error processing packet" for
// it is only a debug line.
func TestRefusalLog(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	buf := new(testutil.LogBuffer)
	srv, err := New(Config{
		Listeners: []Listener{{Type: TypeTCP, Address: "127.0.0.1:0"}},
		Users: []User{
			{Username: "pub", Password: "p", Publish: true, PublishTopics: []string{"site/#"}},
			{Username: "reader", Password: "r", Subscribe: []string{"wittra/P1/#"}},
		},
		now: clock,
	}, zerolog.New(buf).Level(zerolog.DebugLevel))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	lines := func(msg string) []string {
		var out []string
		for _, l := range strings.Split(buf.String(), "\n") {
			if strings.Contains(l, msg) {
				out = append(out, l)
			}
		}
		return out
	}
	waitLines := func(msg string, n int) []string {
		t.Helper()
		if !testutil.Poll(waitLong, func() bool { return len(lines(msg)) >= n }) {
			t.Fatalf("want %d lines %q, log:\n%s", n, msg, buf.String())
		}
		return lines(msg)
	}
	wantFields := func(line string, fields ...string) {
		t.Helper()
		for _, f := range fields {
			if !strings.Contains(line, f) {
				t.Errorf("line lacks %s: %s", f, line)
			}
		}
	}

	pub := mustDial(t, clientOpts{url: tcpURL(srv), user: "pub", pass: "p"})
	id := pub.OptionsReader()
	cid := (&id).ClientID()
	// QoS 0: mochi drops the message without a word; twice within the minute.
	for range 2 {
		if tok := pub.Publish("other/x", 0, false, "v"); !tok.WaitTimeout(waitLong) || tok.Error() != nil {
			t.Fatalf("publish: %v", tok.Error())
		}
	}
	// An allowed QoS 1 publish after them: once acknowledged, both refusals were handled.
	if tok := pub.Publish("site/ok", 1, false, "v"); !tok.WaitTimeout(waitLong) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	got := waitLines("broker publish refused", 1)
	if len(got) != 1 {
		t.Fatalf("refusals within a minute logged %d times:\n%s", len(got), strings.Join(got, "\n"))
	}
	wantFields(got[0], `"level":"info"`, `"client":"`+cid+`"`, `"username":"pub"`, `"topic":"other/x"`)

	// A minute later the next one is logged, with the count of those held back.
	mu.Lock()
	now = now.Add(time.Minute)
	mu.Unlock()
	// QoS 1 under MQTT 3.1.1: mochi disconnects the client and logs "error processing packet".
	pub.Publish("other/x", 1, false, "v").WaitTimeout(time.Second)
	got = waitLines("broker publish refused", 2)
	wantFields(got[1], `"topic":"other/x"`, `"suppressed":1`)
	for _, l := range waitLines("error processing packet", 1) {
		wantFields(l, `"level":"debug"`)
	}

	reader := mustDial(t, clientOpts{url: tcpURL(srv), user: "reader", pass: "r"})
	if code := trySubscribe(t, reader, "#", func(paho.Client, paho.Message) {}); code != 0x80 {
		t.Fatalf("subscribe # = %#x, want refused", code)
	}
	got = waitLines("broker subscribe refused", 1)
	wantFields(got[0], `"level":"info"`, `"username":"reader"`, `"topic":"#"`, `"client":"test-`)
}
