package bridge

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"wittra-gateway/buffer"
	"wittra-gateway/sinks"
)

func seenEntry(project, device, body string) buffer.Entry {
	return buffer.Entry{Data: appendEnvelope(nil, sinks.KindData, project, device, []byte(body))}
}

func TestDeviceTableKeepsTheMostRecentWithinItsBound(t *testing.T) {
	tab := newDeviceTable(3)
	t0 := time.Unix(1_700_000_000, 0)
	for i := range 5 {
		tab.note([]buffer.Entry{seenEntry("p", fmt.Sprintf("D%d", i), fmt.Sprintf(`{"n":%d}`, i))}, t0.Add(time.Duration(i)*time.Second))
	}
	// D2 again, so it is the most recent; D0 and D1 were evicted.
	tab.note([]buffer.Entry{seenEntry("p", "D2", `{"n":"again"}`)}, t0.Add(time.Minute))
	got := tab.snapshot()
	var ids []string
	for _, d := range got {
		ids = append(ids, d.ID)
	}
	if strings.Join(ids, ",") != "D2,D4,D3" {
		t.Fatalf("devices %v, want D2,D4,D3", ids)
	}
	if d := got[0]; d.Messages != 2 || string(d.Body) != `{"n":"again"}` || !d.LastSeen.Equal(t0.Add(time.Minute)) || d.Project != "p" {
		t.Fatalf("D2: %+v", d)
	}
	// The snapshot is a copy: the table reuses its own buffers.
	got[0].Body[0] = 'X'
	tab.note([]buffer.Entry{seenEntry("p", "D2", `{"n":"third"}`)}, t0.Add(2*time.Minute))
	if again := tab.snapshot(); string(again[0].Body) != `{"n":"third"}` || string(got[0].Body) != `X"n":"again"}` {
		t.Fatalf("snapshot aliases the table: %q / %q", again[0].Body, got[0].Body)
	}
	if len(tab.byID) != 3 || tab.lru.Len() != 3 {
		t.Fatalf("table holds %d/%d entries, bound 3", len(tab.byID), tab.lru.Len())
	}
}

func TestDeviceTableSeparatesProjectsAndDropsLargeBodies(t *testing.T) {
	tab := newDeviceTable(0)
	if tab.max != DefaultMaxDevices {
		t.Fatalf("default bound %d", tab.max)
	}
	big := `{"x":"` + strings.Repeat("a", MaxSeenBody) + `"}`
	now := time.Now()
	tab.note([]buffer.Entry{seenEntry("a", "D1", `{}`), seenEntry("b", "D1", big), {Data: []byte("not an envelope")}}, now)
	got := tab.snapshot()
	if len(got) != 2 {
		t.Fatalf("want D1 in two projects, got %+v", got)
	}
	if got[0].Project != "b" || got[0].Body != nil || got[0].BodyLen != len(big) {
		t.Fatalf("large body kept: project %s body %d bytes, len %d", got[0].Project, len(got[0].Body), got[0].BodyLen)
	}
}

func TestReceiverRecordsDevicesAndLastRequest(t *testing.T) {
	in := newIntake(t, buffer.Config{})
	if !in.recv.LastRequest().IsZero() || len(in.recv.Devices()) != 0 {
		t.Fatal("fresh receiver has seen something")
	}
	before := time.Now()
	body := fixture(t, "f1_data_tag.json")
	if r := in.post(t, "POST", "/wittra", "application/json", body, nil); r.code != 200 {
		t.Fatalf("post: %+v", r)
	}
	// Refused requests count as requests but record no device.
	in.post(t, "POST", "/wittra", "text/plain", body, nil)
	devs := in.recv.Devices()
	if len(devs) != 1 || devs[0].ID != "D00124B001E2A1B2C" || devs[0].Project != "P4nB8vQ2wE6rT1yU3iOa" || string(devs[0].Body) != body {
		t.Fatalf("devices: %+v", devs)
	}
	if lr := in.recv.LastRequest(); lr.Before(devs[0].LastSeen) || lr.Before(before) {
		t.Fatalf("last request %v, device seen %v", lr, devs[0].LastSeen)
	}
	// A duplicate still says the device is alive.
	in.post(t, "POST", "/wittra", "application/json", body, nil)
	if devs := in.recv.Devices(); devs[0].Messages != 2 {
		t.Fatalf("after a duplicate: %+v", devs[0])
	}
}

// BenchmarkDeviceTableNote is what the intake pays per accepted message
// for the status page: one envelope decode, an LRU move and a body copy.
func BenchmarkDeviceTableNote(b *testing.B) {
	body := `{"deviceId":"D","payloadId":"p","payloadType":"DATA","timestamp":"2024-03-12T08:15:42.517Z","payload":{"temperature":21.75,"battery":{"percentage":75,"voltage":3.01},"humidity":{"humidity":41.2},"light":312}}`
	entries := make([][]buffer.Entry, 2000) // twice the bound: evictions too
	for i := range entries {
		entries[i] = []buffer.Entry{seenEntry("proj", fmt.Sprintf("D%016X", i), body)}
	}
	tab := newDeviceTable(DefaultMaxDevices)
	now := time.Now()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		tab.note(entries[i%len(entries)], now)
	}
}
