package bridge

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"wittra-gateway/buffer"
	"wittra-gateway/wittra"
)

// FuzzEntries: any body is either refused with an error or split into
// entries whose envelopes decode back to topic-safe ids and a body that is
// valid JSON taken verbatim from the request.
func FuzzEntries(f *testing.F) {
	files, _ := filepath.Glob("../testdata/*.json")
	for _, file := range files {
		b, _ := os.ReadFile(file)
		f.Add(b)
	}
	f.Add([]byte(`[{"deviceId":"D1"},{"payload":{"deviceId":"D2"}},{}]`))
	f.Add([]byte(`[1, {"deviceId": "a/b"}]`))
	f.Add([]byte(` {"deviceId":"D\u0000"} `))
	rt := &route{Route: Route{Path: "/w", Project: "proj", DevicePrefixes: nil}}
	f.Fuzz(func(t *testing.T, body []byte) {
		entries, _, err := rt.entries(body)
		if err != nil {
			return
		}
		for _, e := range entries {
			m, err := DecodeRecord(buffer.Record{Seq: 1, Data: e.Data})
			if err != nil {
				t.Fatalf("entry does not decode: %v", err)
			}
			if wittra.CheckID(m.Device) != nil || wittra.CheckID(m.Project) != nil {
				t.Fatalf("unsafe ids stored: %q %q", m.Device, m.Project)
			}
			if !json.Valid(m.Body) || !bytes.Contains(body, bytes.TrimSpace(m.Body)) {
				t.Fatalf("stored body %q is not valid JSON taken from the request", m.Body)
			}
		}
	})
}
