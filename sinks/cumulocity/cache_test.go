package cumulocity

import (
	"fmt"
	"testing"
)

// The per-device caches of what State holds stay bounded under device
// churn: a long-running box sees ever new device ids.
func TestDeviceCachesAreBounded(t *testing.T) {
	l := &mqttLink{children: map[string]bool{}}
	r := &restLink{ids: map[string]string{}}
	for i := range 3 * maxCachedDevices {
		d := fmt.Sprintf("D%06d", i)
		l.rememberChild(d)
		r.remember(d, "mo-"+d)
		if len(l.children) > maxCachedDevices || len(r.ids) > maxCachedDevices {
			t.Fatalf("after %d devices: %d children, %d ids cached; bound %d", i+1, len(l.children), len(r.ids), maxCachedDevices)
		}
	}
	last := fmt.Sprintf("D%06d", 3*maxCachedDevices-1)
	if !l.children[last] || r.ids[last] != "mo-"+last {
		t.Fatal("the newest device is not cached")
	}
}
