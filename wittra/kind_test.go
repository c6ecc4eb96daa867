package wittra_test

import (
	"testing"

	"wittra-gateway/wittra"
)

// Values tells what JSON type each value had, so that sinks can put it
// back into JSON (the state topic) or tell numbers from text (Home
// Assistant's state class).
func TestValueKinds(t *testing.T) {
	vals, err := wittra.Values([]byte(`{"payload":{"n":-1.5e3,"s":"12","b":true,"f":false,"a":[1],"location":{"latitude":1},"o":{"value":"x"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]wittra.ValueKind{
		"n": wittra.KindNumber, "s": wittra.KindString, "b": wittra.KindBool, "f": wittra.KindBool,
		"a": wittra.KindJSON, "location": wittra.KindJSON, "o": wittra.KindString,
	}
	if len(vals) != len(want) {
		t.Fatalf("got %d values, want %d", len(vals), len(want))
	}
	for _, v := range vals {
		if k, ok := want[v.Path]; !ok || v.Kind != k {
			t.Errorf("%s (%s): kind %d, want %d", v.Path, v.Payload, v.Kind, k)
		}
	}
}
