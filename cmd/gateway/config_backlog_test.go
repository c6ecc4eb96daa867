package main

import "testing"

// TestSinkBacklogKey: every sink type takes `backlog`; unset it is
// in_order; anything else is a clear error with its line.
func TestSinkBacklogKey(t *testing.T) {
	dir := t.TempDir()
	cfg := mustParse(t, yml(
		"gateway: {id: gw01}",
		"sinks:",
		"  - {name: local, type: broker, backlog: live_first}",
		"  - {name: plant, type: mqtt, url: 'tcp://127.0.0.1:1883', backlog: in_order}",
		"  - {name: c8y, type: cumulocity, url: 'mqtts://c8y.example', tenant: t, username: u, password: p, backlog: live_first}",
		"  - {name: other, type: mqtt, url: 'tcp://127.0.0.1:1884', client_id: other}",
	), dir)
	want := map[string]string{"local": "live_first", "plant": "in_order", "c8y": "live_first", "other": ""}
	for _, s := range cfg.Sinks {
		if s.Backlog != want[s.Name] {
			t.Errorf("sink %s: backlog %q, want %q", s.Name, s.Backlog, want[s.Name])
		}
	}
	if d := mustParse(t, "", dir); len(d.Sinks) != 1 || (d.Sinks[0].Backlog != "" && d.Sinks[0].Backlog != "in_order") {
		t.Errorf("default sink: %+v", d.Sinks)
	}
	errs := parseErrs(t, yml(
		"gateway: {id: gw01}",
		"sinks:",
		"  - {name: local, type: broker, backlog: newest}",
	), dir)
	wantProblem(t, errs, "line 3", "sinks[0].backlog", "in_order or live_first", "newest")
}
