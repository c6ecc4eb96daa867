package sinks

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPublications(t *testing.T) {
	body, err := os.ReadFile("../testdata/f1_data_tag.json")
	if err != nil {
		t.Fatal(err)
	}
	m := Message{Project: "P", Device: "D1", Kind: KindData, Body: body}
	pubs, err := Publications(nil, "wittra", m, false)
	if err != nil || len(pubs) != 1 || pubs[0].Topic != "wittra/P/D1/data" || !bytes.Equal(pubs[0].Payload, body) {
		t.Fatalf("without values: %v %v", pubs, err)
	}
	pubs, err = Publications(pubs[:0], "site/a", m, true)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, p := range pubs {
		got[p.Topic] = string(p.Payload)
	}
	for topic, want := range map[string]string{
		"site/a/P/D1/data":               string(body),
		"site/a/P/D1/temperature":        "21.75",
		"site/a/P/D1/battery/percentage": "75",
		"site/a/P/D1/usage/moving":       "42",
	} {
		if got[topic] != want {
			t.Errorf("%s = %q, want %q", topic, got[topic], want)
		}
	}
	m.Kind = KindEvent
	if pubs, _ := Publications(nil, "wittra", m, true); pubs[0].Topic != "wittra/P/D1/event" {
		t.Errorf("event topic = %s", pubs[0].Topic)
	}
	if got := StatusTopic("wittra", "gw1"); got != "wittra/gateway/gw1/status" {
		t.Errorf("StatusTopic = %s", got)
	}
}

// FuzzPublications: every topic derived from any body is a valid MQTT
// topic name under the message's own prefix: no wildcard, no NUL, no
// empty level, and the first publication is the body untouched.
func FuzzPublications(f *testing.F) {
	files, _ := filepath.Glob("../testdata/*.json")
	for _, file := range files {
		b, _ := os.ReadFile(file)
		f.Add(b)
	}
	f.Add([]byte(`{"payload":{"a/b":1,"+":2,"#":3,"":4,"x":{"value":{"y":[1,2]}}}}`))
	f.Add([]byte(`{"wittra-x":{"y":{"value":"z"}},"binaryData":"e30="}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		if !json.Valid(body) {
			return // the queue only ever holds valid JSON
		}
		m := Message{Project: "P", Device: "D", Kind: KindData, Body: body}
		pubs, err := Publications(nil, "wittra", m, true)
		if len(pubs) == 0 || pubs[0].Topic != "wittra/P/D/data" || !bytes.Equal(pubs[0].Payload, body) {
			t.Fatalf("first publication = %+v (err %v), want the body on wittra/P/D/data", pubs, err)
		}
		seen := map[string]bool{}
		for _, p := range pubs[1:] {
			if !strings.HasPrefix(p.Topic, "wittra/P/D/") || strings.ContainsAny(p.Topic, "+#\x00") || strings.Contains(p.Topic, "//") || strings.HasSuffix(p.Topic, "/") {
				t.Fatalf("bad value topic %q", p.Topic)
			}
			if p.Topic == "wittra/P/D/data" || p.Topic == "wittra/P/D/event" {
				t.Fatalf("a value shadows the message topic: %q", p.Topic)
			}
			if seen[p.Topic] {
				t.Fatalf("topic %q published twice for one message", p.Topic)
			}
			seen[p.Topic] = true
		}
	})
}
