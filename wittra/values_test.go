package wittra_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"wittra-gateway/wittra"
)

// lines renders values as "path=payload" lines, for comparison and messages.
func lines(vals []wittra.Value) []string {
	out := make([]string, 0, len(vals))
	for _, v := range vals {
		out = append(out, v.Path+"="+string(v.Payload))
	}
	return out
}

func checkValues(t *testing.T, body []byte, want []string) {
	t.Helper()
	vals, err := wittra.Values(body)
	if err != nil {
		t.Fatalf("Values: %v", err)
	}
	if got := lines(vals); !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestValuesFixtures(t *testing.T) {
	tests := []struct {
		name string
		want []string
	}{
		{"f1_data_tag.json", []string{
			"accelerometer/x=0.01",
			"accelerometer/y=-0.02",
			"accelerometer/z=0.99",
			"battery/chargingStatus=NOT_PLUGGED",
			"battery/percentage=75",
			"battery/voltage=3.92",
			`location={"latitude":59.33258,"longitude":18.06491,"accuracy":0.8,"level":2,"height":1.1,"label":"Hall B"}`,
			`neighbors=[{"id":"D00124B001E2C0FFE","rssi":-67},{"id":"D00124B001E2BEEF1","rssi":-81}]`,
			"temperature=21.75",
			"usage/moving=42",
			"usage/stationary=258",
		}},
		{"f2_data_lpth_event.json", []string{
			"currentmeter/average=3.41",
			"currentmeter/max=5.02",
			"currentmeter/min=0.12",
			"currentmeter/nbr_of_samples=15",
			"currentmeter/temperature=24.0",
			"currentmeter/voltage=3945",
			"humidity/humidity=41.2",
			"humidity/temperature=22.4",
			"light=312",
			"pressure/pressure=1008.6",
			"pressure/temperature=22.1",
		}},
		{"f3_event_device_updated.json", []string{}},
		{"f4_data20.json", []string{
			"wittra-lpth-humidity/humidity=40.5",
			"wittra-lpth-humidity/temperature=22.6",
			"wittra-lpth-light/light=280",
			"wittra-lpth-pressure/pressure=1009.2",
			"wittra-tag-temperature/temperature=22.9",
			"wittra-tag-uptime/uptime=86400",
		}},
		{"f5_location_record.json", []string{}}, // shape E has no payload: a record, not a webhook body
		{"f6_legacy_binary.json", []string{
			"temperature=21.5",
			"usage/moving=12",
			"usage/stationary=288",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkValues(t, fixture(t, tt.name), tt.want)
		})
	}
}

func TestValues(t *testing.T) {
	tests := []struct {
		name string
		body string
		want []string
	}{
		{"ValueCollapse", `{"payload":{"a":{"value":1.50},"b":{"value":{"c":{"value":"x"}}},"c":{"value":1,"unit":"C"},"d":{"value":null}}}`,
			[]string{"a=1.50", "b/c=x", "c/unit=C", "c/value=1"}},
		{"ValueCollapseToArray", `{"payload":{"a":{"value":[1, 2]}}}`, []string{"a=[1,2]"}},
		{"NumberText", `{"payload":{"a":1e3,"b":-0,"c":1E+02,"d":123456789012345678901234567890,"e":0.10,"f":-1.5e-7}}`,
			[]string{"a=1e3", "b=-0", "c=1E+02", "d=123456789012345678901234567890", "e=0.10", "f=-1.5e-7"}},
		{"Strings", `{"payload":{"s":"a\"b\u00e9\n\/","e":"","u":"ö✓"}}`, []string{"e=", "s=a\"bé\n/", "u=ö✓"}},
		{"Booleans", `{"payload":{"t":true,"f":false}}`, []string{"f=false", "t=true"}},
		{"NullAndEmptySkipped", `{"payload":{"n":null,"o":{},"p":{"q":{}},"r":{"s":null}}}`, []string{}},
		{"EmptyArray", `{"payload":{"neighbors":[]}}`, []string{"neighbors=[]"}},
		{"NestedArrays", `{"payload":{"m":[[1, 2.50], [ {"x" : 1.0, "y":[ ]} ], "a b", null]}}`,
			[]string{`m=[[1,2.50],[{"x":1.0,"y":[]}],"a b",null]`}},
		{"ArrayStringsKeepEscapes", `{"payload":{"a":["x\"y", "\u00e9 \n"]}}`, []string{`a=["x\"y","\u00e9 \n"]`}},
		{"LocationKeyOrder", `{"payload":{"location":{ "z":1, "a":{"b":2} }}}`, []string{`location={"z":1,"a":{"b":2}}`}},
		{"NestedLocation", `{"payload":{"x":{"location":{"lat":1}}}}`, []string{`x/location={"lat":1}`}},
		{"LocationScalar", `{"payload":{"location":"Hall B"}}`, []string{"location=Hall B"}},
		{"LocationValueCollapse", `{"payload":{"location":{"value":{"lat":1,"lon":2}}}}`, []string{`location={"lat":1,"lon":2}`}},
		{"LocationEmpty", `{"payload":{"location":{}}}`, []string{}},
		{"UnsafeKeysSkipped", `{"payload":{"a/b":1,"c+":2,"#":3,"":4,"n\u0000":5,"ok":6,"x":{"+":7}}}`, []string{"ok=6"}},
		{"LongKeySkipped", `{"payload":{"` + strings.Repeat("k", 257) + `":1,"` + strings.Repeat("k", 256) + `":2}}`,
			[]string{strings.Repeat("k", 256) + "=2"}},
		{"EscapedKeys", `{"payload":{"t\u00e9mp":1,"\u0076alue":2,"a\/b":3}}`, []string{"témp=1", "value=2"}},
		{"ReservedTopLevel", `{"payload":{"data":1,"event":2,"x":{"data":3,"event":4}}}`, []string{"x/data=3", "x/event=4"}},
		{"DuplicateKeyLastWins", `{"payload":{"a":1,"a":2}}`, []string{"a=2"}},
		{"EnvelopeNotValues", `{"deviceId":"D1","gatewayId":"G1","projectId":"J","payloadId":"p","payloadType":"DATA","source":"p","timestamp":"2024-01-01T00:00:00Z","temperature":5}`,
			[]string{}},
		{"PayloadTypeAbsent", `{"deviceId":"D1","payload":{"temperature":21.75}}`, []string{"temperature=21.75"}},
		{"PayloadTypeNull", `{"payloadType":null,"payload":{"temperature":1}}`, []string{"temperature=1"}},
		{"PayloadTypeOther", `{"payloadType":"STATUS","payload":{"temperature":1},"wittra-tag-x":{"x":{"value":2}}}`,
			[]string{"wittra-tag-x/x=2"}},
		{"PayloadNotObject", `{"payload":"temperature"}`, []string{}},
		{"PayloadRootValueNotCollapsed", `{"payload":{"value":5}}`, []string{"value=5"}},
		{"EventWithData20Keys", `{"wittra-tag-x":{"x":{"value":2}},"payloadType":"EVENT","payload":{"deviceId":"D1"}}`, []string{}},
		{"Data20RootValue", `{"wittra-tag-temperature":{"value":22.9},"wittra-x":5,"wittra-/y":1,"wittra":2}`,
			[]string{"wittra-tag-temperature=22.9", "wittra-x=5"}},
		{"MixedSourcesSorted", `{"wittra-b":{"v":1},"payload":{"c":2,"a":3},"binaryData":"eyJiYiI6NH0="}`,
			[]string{"a=3", "bb=4", "c=2", "wittra-b/v=1"}},
		{"BinaryUnpadded", `{"binaryData":"eyJiYiI6NH0"}`, []string{"bb=4"}},
		{"BinaryNull", `{"binaryData":null,"payload":{"a":1}}`, []string{"a=1"}},
		{"Whitespace", " {\n\t\"payload\" :\r\n { \"a\" : { \"value\" : 1 } ,\"b\":[ 1 ,2 ] }\n}\n", []string{"a=1", "b=[1,2]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkValues(t, []byte(tt.body), tt.want)
		})
	}
}

// TestValuesBinaryEscaped checks that binaryData is read as a JSON string:
// a '/' of the base64 may be escaped as "\/".
func TestValuesBinaryEscaped(t *testing.T) {
	// {"a":"???"} in base64 is eyJhIjoiPz8/In0=.
	checkValues(t, []byte(`{"binaryData":"eyJhIjoiPz8\/In0="}`), []string{"a=???"})
}

// TestValuesDepth checks that objects nested deeper than the walk limit are
// published whole rather than lost.
func TestValuesDepth(t *testing.T) {
	const levels = 20
	var b strings.Builder
	b.WriteString(`{"payload":`)
	for range levels {
		b.WriteString(`{"k":`)
	}
	b.WriteString("1")
	for range levels + 1 {
		b.WriteString("}")
	}
	vals, err := wittra.Values([]byte(b.String()))
	if err != nil {
		t.Fatalf("Values: %v", err)
	}
	if len(vals) != 1 {
		t.Fatalf("got %q, want one value", lines(vals))
	}
	path, payload := vals[0].Path, string(vals[0].Payload)
	depth := strings.Count(path, "/") + 1
	if depth >= levels || !strings.HasPrefix(payload, `{"k":`) {
		t.Errorf("got %s=%s, want a shorter path holding the rest as JSON", path, payload)
	}
	if got, want := depth+strings.Count(payload, `{"k":`), levels; got != want {
		t.Errorf("got %d levels in path and payload, want %d", got, want)
	}
}

// TestValuesPayloadIsolated checks that payloads do not share memory with
// the body or with each other's spare capacity.
func TestValuesPayloadIsolated(t *testing.T) {
	body := []byte(`{"payload":{"a":12,"b":34}}`)
	vals, err := wittra.Values(body)
	if err != nil {
		t.Fatalf("Values: %v", err)
	}
	for i := range body {
		body[i] = 'x'
	}
	_ = append(vals[0].Payload, '9') // must not overwrite vals[1]
	if got, want := lines(vals), []string{"a=12", "b=34"}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestValuesErrors(t *testing.T) {
	tests := []struct {
		name string
		body string
		msg  string
	}{
		{"NotJSON", `{"payload":`, "not valid JSON"},
		{"Array", `[{"payload":{"a":1}}]`, "not a JSON object"},
		{"Empty", ``, "not valid JSON"},
		{"PayloadTypeNumber", `{"payloadType":1,"payload":{"a":1}}`, "payloadType"},
		{"BinaryNotBase64", `{"binaryData":"!!not base64!!"}`, "binaryData"},
		{"BinaryNotJSON", `{"binaryData":"aGVsbG8="}`, "binaryData"},       // "hello"
		{"BinaryArray", `{"binaryData":"WzFd"}`, "binaryData"},             // [1]
		{"BinaryTruncatedJSON", `{"binaryData":"eyJhIjox"}`, "binaryData"}, // {"a":1
		{"BinaryNumber", `{"binaryData":5}`, "binaryData"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vals, err := wittra.Values([]byte(tt.body))
			if err == nil {
				t.Fatalf("got %q, want an error", lines(vals))
			}
			if !errors.Is(err, wittra.ErrMalformed) {
				t.Errorf("errors.Is(%v, ErrMalformed) = false, want true", err)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("got error %q, want it to contain %q", err, tt.msg)
			}
		})
	}
}

func ExampleValues() {
	vals, _ := wittra.Values([]byte(`{"deviceId":"D00124B001E2A1B2C","payload":{"temperature":21.75,"battery":{"percentage":75}}}`))
	for _, v := range vals {
		fmt.Printf("%s = %s\n", v.Path, v.Payload)
	}
	// Output:
	// battery/percentage = 75
	// temperature = 21.75
}
