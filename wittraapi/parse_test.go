package wittraapi

import (
	"strings"
	"testing"
)

func TestParseDevicesLenient(t *testing.T) {
	body := `[
	  {"deviceId":"D1","name":"Freezer 2","deviceType":"tag","latest":{"telemetryId":"x"},"lastSeen":null},
	  {"deviceId":"D2","name":null,"deviceType":null},
	  {"deviceId":"D3","name":42,"deviceType":["tag"]},
	  {"deviceId":"  "},
	  {"deviceId":7},
	  "D4",
	  null,
	  {"deviceId":"D1","name":"Freezer 2b\n","deviceType":"tag"},
	  {"deviceId":"D5","name":"` + strings.Repeat("é", 100) + `"}
	]`
	devs, skipped, err := parseDevices([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if skipped != 4 {
		t.Errorf("skipped = %d, want 4", skipped)
	}
	want := []Device{{ID: "D1", Name: "Freezer 2b", Type: "tag"}, {ID: "D2"}, {ID: "D3"}}
	if len(devs) != 4 {
		t.Fatalf("devices = %+v", devs)
	}
	for i, w := range want {
		if devs[i] != w {
			t.Errorf("devices[%d] = %+v, want %+v", i, devs[i], w)
		}
	}
	if n := devs[3].Name; len(n) > maxNameLen || !strings.HasPrefix(n, "éé") || strings.ToValidUTF8(n, "?") != n {
		t.Errorf("long name not clipped on a rune boundary: %q (%d bytes)", n, len(n))
	}
	for _, bad := range []string{``, `{}`, `{"data":[]}`, `null`, `[{"deviceId":"D1"}`, `"x"`} {
		if _, _, err := parseDevices([]byte(bad)); err == nil {
			t.Errorf("%q accepted as a device list", bad)
		}
	}
	if devs, _, err := parseDevices([]byte(" []\n")); err != nil || len(devs) != 0 {
		t.Errorf("empty list: %v, %v", devs, err)
	}
}
