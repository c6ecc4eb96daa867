package wittraapi

import (
	"encoding/json"
	"fmt"
	"testing"

	"wittra-gateway/wittraapi/wittrafake"
)

// BenchmarkParseDevices: one answer of 1000 devices shaped like the v4
// list (with latest data), as the client parses it every refresh.
func BenchmarkParseDevices(b *testing.B) {
	var list []map[string]any
	for i := range 1000 {
		list = append(list, wittrafake.Device(fmt.Sprintf("D%016d", i), fmt.Sprintf("Sensor %d", i), "tag"))
	}
	body, _ := json.Marshal(list)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := parseDevices(body); err != nil {
			b.Fatal(err)
		}
	}
}
