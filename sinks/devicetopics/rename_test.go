package devicetopics_test

import (
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"wittra-gateway/sinks"
	"wittra-gateway/sinks/devicetopics"
)

// notifying is a directory that says when its answers change, as the
// Wittra API client does.
type notifying struct {
	directory
	chMu sync.Mutex
	ch   chan struct{}
}

func (d *notifying) Changed() <-chan struct{} {
	d.chMu.Lock()
	defer d.chMu.Unlock()
	return d.ch
}

func (d *notifying) rename(device string, i sinks.DeviceInfo) {
	d.set(device, i)
	d.chMu.Lock()
	close(d.ch)
	d.ch = make(chan struct{})
	d.chMu.Unlock()
}

// A name edited in the Wittra portal reaches Home Assistant without waiting
// for Home Assistant to restart: the configs are published again.
func TestRepublishOnRename(t *testing.T) {
	dir := &notifying{directory: directory{m: map[string]sinks.DeviceInfo{}}, ch: make(chan struct{})}
	dir.set(tag, sinks.DeviceInfo{Name: "Forklift 7", Type: "tag"})
	tp := newTopics(t, devicetopics.Options{Values: true, Directory: dir, RepublishSpread: 100 * time.Millisecond,
		HomeAssistant: devicetopics.HomeAssistant{Enabled: true}})
	tp.Add(nil, message(tag, fixture(t, "f1_data_tag.json")))

	got := make(chan sinks.Publication, 1000)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tp.Republish(stop, func(p sinks.Publication) error { got <- p; return nil })
	}()
	defer func() { close(stop); <-done }()

	dir.rename(tag, sinks.DeviceInfo{Name: "Forklift 8", Type: "tag"})
	deadline := time.After(30 * time.Second)
	for {
		select {
		case p := <-got:
			if !strings.Contains(p.Topic, strings.ToLower(tag)) && !strings.Contains(p.Topic, tag) {
				continue
			}
			var c struct {
				Device struct {
					Name string `json:"name"`
				} `json:"device"`
			}
			if err := json.Unmarshal(p.Payload, &c); err != nil {
				t.Fatalf("config %s: %v", p.Topic, err)
			}
			if c.Device.Name != "Forklift 8" {
				t.Fatalf("config %s republished with device name %q, want the new name", p.Topic, c.Device.Name)
			}
			return
		case <-deadline:
			t.Fatal("no config republished after the rename")
		}
	}
}
