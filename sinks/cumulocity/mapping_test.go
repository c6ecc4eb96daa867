package cumulocity

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"wittra-gateway/sinks"
)

// render shows a mapping as SmartREST lines (compact and complete).
func render(mp mapped) []string {
	return smartRESTLines(mp.records, formatTime(mp.time))
}

func TestMapMessage(t *testing.T) {
	cases := []struct {
		name    string
		body    string
		device  string // want mapped.device
		lines   []string
		skipped []string
	}{
		{
			name:   "UnknownNumericAndNonNumeric",
			body:   `{"deviceId":"D1","timestamp":"2024-01-01T00:00:00Z","payload":{"rssi":-70,"mode":"eco","flags":{"on":true,"level":3,"deep":{"a":{"value":1.5}}},"list":[1,2]}}`,
			device: "D1",
			lines: []string{
				"201,wittra_rssi,2024-01-01T00:00:00.000Z,wittra_rssi,rssi,-70,",
				"201,wittra_flags,2024-01-01T00:00:00.000Z,wittra_flags,level,3,,wittra_flags,deep_a,1.5,",
			},
			skipped: []string{"mode", "flags/on", "list"},
		},
		{
			name:   "NamesSanitised",
			body:   `{"deviceId":"D1","timestamp":"2024-01-01T00:00:00Z","payload":{"wittra lpth.x":{"a-b":1,"a_b":2,"ö":3}}}`,
			device: "D1",
			lines: []string{
				"201,wittra_wittra_lpth_x,2024-01-01T00:00:00.000Z,wittra_wittra_lpth_x,a_b,1,,wittra_wittra_lpth_x,a_b_2,2,,wittra_wittra_lpth_x,_,3,",
			},
		},
		{
			name:    "NumbersBeyondFloat64Skipped",
			body:    `{"deviceId":"D1","timestamp":"2024-01-01T00:00:00Z","payload":{"temperature":1e999,"light":5}}`,
			device:  "D1",
			lines:   []string{"201,c8y_LightMeasurement,2024-01-01T00:00:00.000Z,c8y_LightMeasurement,e,5,lux"},
			skipped: []string{"temperature"},
		},
		{
			name:    "LegacyBatteryVolts",
			body:    `{"deviceId":"D1","timestamp":"2024-01-01T00:00:00Z","payload":{"battery":3.6,"neighbours":[{"id":"x"}]}}`,
			device:  "D1",
			lines:   []string{"201,c8y_Battery,2024-01-01T00:00:00.000Z,c8y_Battery,voltage,3.6,V"},
			skipped: []string{"neighbours"},
		},
		{
			name:   "LocationWithoutHeight",
			body:   `{"deviceId":"D1","timestamp":"2024-01-01T00:00:00Z","payload":{"location":{"latitude":59.1,"longitude":18.2}}}`,
			device: "D1",
			lines:  []string{"402,59.1,18.2,,,2024-01-01T00:00:00.000Z"},
		},
		{
			name:    "LocationWithoutCoordinates",
			body:    `{"deviceId":"D1","timestamp":"2024-01-01T00:00:00Z","payload":{"location":{"level":3,"label":"x"}}}`,
			device:  "D1",
			lines:   []string{"201,wittra_location,2024-01-01T00:00:00.000Z,wittra_location,level,3,"},
			skipped: []string{"location/label"},
		},
		{
			name:   "EventWithoutDeviceGoesToGateway",
			body:   `{"payloadType":"EVENT","eventType":"PROJECT_UPDATED","timestamp":"2024-01-01T00:00:00Z","payload":{"changes":{"name":{"old":"a","new":"b"}}}}`,
			device: "",
			lines:  []string{"400,wittra_PROJECT_UPDATED,name: a -> b,2024-01-01T00:00:00.000Z"},
		},
		{
			name:   "EventWithoutChanges",
			body:   `{"payloadType":"EVENT","eventType":"DEVICE_REMOVED","timestamp":"2024-01-01T00:00:00Z","payload":{"deviceId":"D1"}}`,
			device: "D1",
			lines:  []string{"400,wittra_DEVICE_REMOVED,Wittra portal event DEVICE_REMOVED,2024-01-01T00:00:00.000Z"},
		},
		{
			name:   "ReceiveTimeWithoutTimestamp",
			body:   `{"deviceId":"D1","payload":{"temperature":20}}`,
			device: "D1",
			lines:  []string{"211,20,2024-05-01T12:00:00.000Z"},
		},
		{
			name:   "SpaceSeparatedTimestampWithOffset",
			body:   `{"deviceId":"D1","timestamp":"2025-06-10 02:18:57.123456+02:00","payload":{"temperature":20}}`,
			device: "D1",
			lines:  []string{"211,20,2025-06-10T00:18:57.123Z"},
		},
		{
			name:   "ValueObjectsInPayload",
			body:   `{"deviceId":"D1","timestamp":"2024-01-01T00:00:00Z","payload":{"temperature":{"value":19.5},"humidity":{"humidity":{"value":40}}}}`,
			device: "D1",
			lines: []string{
				"211,19.5,2024-01-01T00:00:00.000Z",
				"201,c8y_HumidityMeasurement,2024-01-01T00:00:00.000Z,c8y_HumidityMeasurement,h,40,%RH",
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mp, err := mapMessage(message(t, []byte(tc.body)))
			if err != nil {
				t.Fatalf("mapMessage: %v", err)
			}
			if mp.device != tc.device {
				t.Errorf("device = %q, want %q", mp.device, tc.device)
			}
			if got := render(mp); !slices.Equal(got, tc.lines) {
				t.Errorf("lines:\n got %q\nwant %q", got, tc.lines)
			}
			if !slices.Equal(mp.skipped, tc.skipped) {
				t.Errorf("skipped = %q, want %q", mp.skipped, tc.skipped)
			}
		})
	}
}

func TestMapMessagePermanent(t *testing.T) {
	cases := map[string]string{
		"NoDevice":        `{"payload":{"temperature":1}}`,
		"NothingNumeric":  `{"deviceId":"D1","payload":{"battery":{"chargingStatus":"CHARGING"}}}`,
		"BadBinaryData":   `{"gatewayInfo":{"delegatedDeviceId":"D1"},"binaryData":"%%%"}`,
		"BinaryNotObject": `{"gatewayInfo":{"delegatedDeviceId":"D1"},"binaryData":"WzEsMl0="}`,
		"OtherPayload":    `{"deviceId":"D1","payloadType":"CONFIG","payload":{"temperature":1}}`,
		"NotObject":       `[1]`,
	}
	for name, body := range cases {
		t.Run(name, func(t *testing.T) {
			m := sinks.Message{Seq: 1, Received: time.Now(), Device: "D1", Body: []byte(body)}
			if name == "NoDevice" {
				m.Device = "_unknown"
			}
			_, err := mapMessage(m)
			if !errors.Is(err, sinks.ErrPermanent) {
				t.Errorf("err = %v, want ErrPermanent", err)
			}
		})
	}
}

func TestQuoteField(t *testing.T) {
	cases := []struct{ in, want string }{
		{"plain", "plain"},
		{"", ""},
		{"Hall Ö 7", "Hall Ö 7"},
		{"a,b", `"a,b"`},
		{`say "hi"`, `"say ""hi"""`},
		{"tab\there", "\"tab\there\""},
		{"line\nbreak", "\"line\nbreak\""},
		{"cr\rx", "\"cr\rx\""},
		{" lead", `" lead"`},
		{"trail ", `"trail "`},
		{"\u00a0nbsp", "\"\u00a0nbsp\""},
		{`c\"d`, `"c""d"`},          // no \" in the output (see quoteField)
		{`x\\"y`, `"x""y"`},         // a whole run of backslashes
		{`path, C:\`, `"path, C:"`}, // nor a backslash before the closing quote
		{`a\b, c`, `"a\b, c"`},      // other backslashes stay
	}
	for _, tc := range cases {
		if got := quoteField(tc.in); got != tc.want {
			t.Errorf("quoteField(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestPackLinesAtLimit(t *testing.T) {
	const topic = "s/us/D1"
	overhead := packetSize(topic, 1000) - 1000             // at this size the varint has 2 bytes
	exact := strings.Repeat("a", MaxPacketSize-overhead-1) // one byte short of the limit...
	if packetSize(topic, len(exact)) != MaxPacketSize-1 {
		t.Fatalf("arithmetic: %d", packetSize(topic, len(exact)))
	}
	exact += "b" // ...and now exactly at it
	pl, bad := packLines(topic, []string{exact}, MaxPacketSize)
	if bad != -1 || len(pl) != 1 || packetSize(topic, len(pl[0])) != MaxPacketSize {
		t.Errorf("a line filling the packet exactly: %d payloads, tooLong %d", len(pl), bad)
	}
	if _, bad := packLines(topic, []string{exact + "c"}, MaxPacketSize); bad != 0 {
		t.Errorf("a line one byte over: tooLong %d, want 0", bad)
	}
	// two lines that fit alone but not together are split; small ones join
	half := strings.Repeat("h", MaxPacketSize/2)
	pl, bad = packLines(topic, []string{"x", half, half, "y"}, MaxPacketSize)
	if bad != -1 || len(pl) != 2 || string(pl[0]) != "x\n"+half || string(pl[1]) != half+"\ny" {
		t.Errorf("packed into %d payloads (tooLong %d)", len(pl), bad)
	}
	// the remaining-length varint grows at 128 bytes
	// (remaining = 2+1+2+payload; header = 1 byte + varint)
	if got := packetSize("t", 122); got != 1+1+127 {
		t.Errorf("packetSize below the varint step = %d", got)
	}
	if got := packetSize("t", 123); got != 1+2+128 {
		t.Errorf("packetSize at the varint step = %d", got)
	}
}
