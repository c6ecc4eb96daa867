package wmsg

import (
	"encoding/json"
	"testing"
	"time"

	"wittra-gateway/wittra"
)

func TestRoundTrip(t *testing.T) {
	run := NewRunID(time.Now())
	if err := CheckRunID(run); err != nil {
		t.Fatal(err)
	}
	sent := time.Date(2025, 4, 24, 10, 5, 11, 123456789, time.UTC)
	for _, shape := range []string{ShapeSmall, ShapeFull} {
		s := Spec{Run: run, Project: "bench", Devices: 1000, Shape: shape}
		for _, seq := range []uint64{0, 1, 61, 62, 999_999, 1 << 40, ^uint64(0)} {
			body := s.Append(nil, seq, sent)
			if !json.Valid(body) {
				t.Fatalf("seq %d: invalid JSON %s", seq, body)
			}
			id, err := wittra.Identify(body)
			if err != nil {
				t.Fatalf("Identify: %v", err)
			}
			if len(id.PayloadID) != 20 || id.Project != "bench" || id.Device == "" {
				t.Fatalf("identity %+v", id)
			}
			if ts, ok := wittra.Timestamp(body); !ok || !ts.Equal(sent) {
				t.Fatalf("gateway reads timestamp %v %v, want %v", ts, ok, sent)
			}
			p, err := Parse(body)
			if err != nil {
				t.Fatalf("Parse(%s): %v", body, err)
			}
			if p.Seq != seq || string(p.Run) != run || !p.Sent.Equal(sent) {
				t.Fatalf("Parse = %d %s %v, want %d %s %v", p.Seq, p.Run, p.Sent, seq, run, sent)
			}
		}
		t.Logf("%s: %d bytes", shape, len(s.Append(nil, 12345, sent)))
	}
	arr := (&Spec{Run: run, Devices: 3}).AppendBody(nil, 10, 3, sent)
	var v []map[string]any
	if err := json.Unmarshal(arr, &v); err != nil || len(v) != 3 {
		t.Fatalf("array body: %v %d", err, len(v))
	}
}
