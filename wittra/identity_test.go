package wittra_test

import (
	"errors"
	"strings"
	"testing"

	"wittra-gateway/internal/testutil"
	"wittra-gateway/wittra"
)

// fixtures are the example bodies in testdata (copies of shared/fixtures,
// plus f5, a location record as Wittra documents it).
var fixtures = []string{
	"f1_data_tag.json",
	"f2_data_lpth_event.json",
	"f3_event_device_updated.json",
	"f4_data20.json",
	"f5_location_record.json",
	"f6_legacy_binary.json",
}

func fixture(tb testing.TB, name string) []byte {
	return testutil.ReadFile(tb, "testdata", name)
}

func TestIdentifyFixtures(t *testing.T) {
	tests := map[string]wittra.Identity{
		"f1_data_tag.json": {Device: "D00124B001E2A1B2C", Project: "P4nB8vQ2wE6rT1yU3iOa", PayloadID: "a1B2c3D4e5F6g7H8i9J0"},
		"f2_data_lpth_event.json": {Device: "D00124B001E2D3E4F", Project: "P4nB8vQ2wE6rT1yU3iOa",
			PayloadID: "3f0c9a7e-5b1d-4e2a-9c44-0d1e2f3a4b5c"},
		"f3_event_device_updated.json": {Device: "D00124B001E2A1B2C", Project: "P4nB8vQ2wE6rT1yU3iOa",
			PayloadID: "Zr5Yt6Uw7Iq8Oe9Pa0Sd", Event: true},
		"f4_data20.json":          {Device: "D00124B001E2D3E4F"},
		"f5_location_record.json": {Device: "D00124B001E2A1B2C", PayloadID: "7d9e1c2a-3b4f-4a5e-8f60-718293a4b5c6"},
		"f6_legacy_binary.json":   {Device: "D00124B001E2A1B2C"},
	}
	for _, name := range fixtures {
		t.Run(name, func(t *testing.T) {
			want, ok := tests[name]
			if !ok {
				t.Fatalf("no expectation for %s", name)
			}
			got, err := wittra.Identify(fixture(t, name))
			if err != nil {
				t.Fatalf("Identify: %v", err)
			}
			if got != want {
				t.Errorf("got %+v, want %+v", got, want)
			}
		})
	}
}

func TestIdentify(t *testing.T) {
	tests := []struct {
		name string
		body string
		want wittra.Identity
	}{
		{"Empty", `{}`, wittra.Identity{}},
		{"NoIdentityFields", `{"payload":{"temperature":1},"timestamp":"x"}`, wittra.Identity{}},
		{"NullsAreAbsent", `{"deviceId":null,"projectId":null,"payloadId":null,"payloadType":null,"payload":null,"gatewayInfo":null}`,
			wittra.Identity{}},
		{"TopLevelWins", `{"payload":{"deviceId":"P"},"deviceId":"T","gatewayInfo":{"delegatedDeviceId":"G"}}`,
			wittra.Identity{Device: "T"}},
		{"PayloadBeforeGatewayInfo", `{"gatewayInfo":{"delegatedDeviceId":"G"},"payload":{"deviceId":"P"}}`,
			wittra.Identity{Device: "P"}},
		{"EmptyDeviceFallsThrough", `{"deviceId":"","gatewayInfo":{"delegatedDeviceId":"G"}}`,
			wittra.Identity{Device: "G"}},
		{"PayloadNotObject", `{"payload":"D1","gatewayInfo":[1]}`, wittra.Identity{}},
		{"UnusedBadPayloadDevice", `{"deviceId":"T","payload":{"deviceId":5}}`, wittra.Identity{Device: "T"}},
		{"EscapedKeyAndValue", `{"device\u0049d":"D\u0030\/1","payloadType":"EV\u0045NT"}`,
			wittra.Identity{Device: "D0/1", Event: true}},
		{"KeysAreCaseSensitive", `{"DeviceId":"X","PAYLOADTYPE":"EVENT"}`, wittra.Identity{}},
		{"LastDuplicateWins", `{"deviceId":"A","deviceId":"B"}`, wittra.Identity{Device: "B"}},
		{"EventIsExact", `{"payloadType":"event"}`, wittra.Identity{}},
		{"Whitespace", " {\n\t\"deviceId\" :\r\n \"D1\" , \"projectId\":\"J\"\n}\n", wittra.Identity{Device: "D1", Project: "J"}},
		{"DeepPayloadIgnored", `{"payload":{"a":{"deviceId":"X"},"b":[{"deviceId":"Y"}]}}`, wittra.Identity{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := wittra.Identify([]byte(tt.body))
			if err != nil {
				t.Fatalf("Identify: %v", err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestIdentifyErrors(t *testing.T) {
	tests := []struct {
		name  string
		body  string
		field string // named in the error
	}{
		{"DeviceNumber", `{"deviceId":5}`, "deviceId"},
		{"ProjectBool", `{"projectId":true,"deviceId":"D"}`, "projectId"},
		{"PayloadIDObject", `{"payloadId":{}}`, "payloadId"},
		{"PayloadTypeArray", `{"payloadType":["EVENT"]}`, "payloadType"},
		{"PayloadDevice", `{"payload":{"deviceId":5}}`, "payload.deviceId"},
		{"DelegatedDevice", `{"gatewayInfo":{"delegatedDeviceId":7}}`, "gatewayInfo.delegatedDeviceId"},
		{"NotObject", `["deviceId"]`, "object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := wittra.Identify([]byte(tt.body))
			if err == nil {
				t.Fatalf("got %+v, want an error", got)
			}
			if !errors.Is(err, wittra.ErrMalformed) {
				t.Errorf("errors.Is(%v, ErrMalformed) = false, want true", err)
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Errorf("got error %q, want it to name %q", err, tt.field)
			}
		})
	}
}

func TestCheckID(t *testing.T) {
	tests := []struct {
		name string
		id   string
		bad  string // substring of the error; "" for a good id
	}{
		{"Device", "D00124B001E2A1B2C", ""},
		{"Project", "P4nB8vQ2wE6rT1yU3iOa", ""},
		{"UUID", "3f0c9a7e-5b1d-4e2a-9c44-0d1e2f3a4b5c", ""},
		{"Unicode", "hall-ö-✓", ""},
		{"Dots", "..", ""},
		{"MaxLength", strings.Repeat("a", wittra.MaxIDLen), ""},
		{"Slash", "a/b", `'/' at byte 1`},
		{"Plus", "a+b", `'+' at byte 1`},
		{"Hash", "#", `'#' at byte 0`},
		{"NUL", "ab\x00", `'\x00' at byte 2`},
		{"Empty", "", "empty"},
		{"InvalidUTF8", "ab\xffc", "invalid UTF-8 at byte 2"},
		{"TruncatedUTF8", "ab\xc3", "invalid UTF-8 at byte 2"},
		{"TooLong", strings.Repeat("a", wittra.MaxIDLen+1), "257 bytes long"},
		{"LongWithSlash", strings.Repeat("a", 100) + "/", `'/' at byte 100`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := wittra.CheckID(tt.id)
			if tt.bad == "" {
				if err != nil {
					t.Errorf("got %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("got nil, want an error containing %q", tt.bad)
			}
			if !errors.Is(err, wittra.ErrInvalidID) {
				t.Errorf("errors.Is(%v, ErrInvalidID) = false, want true", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.bad) {
				t.Errorf("got %q, want it to contain %q", msg, tt.bad)
			}
			if len(tt.id) > 64 && strings.Contains(msg, tt.id[:64]) {
				t.Errorf("got %q, want a long id left out", msg)
			}
		})
	}
}
