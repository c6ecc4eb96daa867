package c8yfake

import (
	"strings"
	"testing"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// JSON inventory updates rename (and add fragments to) the connection's
// own devices, by external id or managed object id; anything else is
// refused and recorded, and acknowledged either way.
func TestInventoryUpdate(t *testing.T) {
	s, err := Start(Options{Users: map[string]string{DefaultUser: DefaultPassword, "other": "pw"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	d := connect(t, s, "gw1")
	d.pub(t, "s/us", "100,Gateway,wittra_Gateway")
	d.pub(t, "s/us", "101,kid1,Wittra kid1,wittra_Sensor")
	d.pub(t, "inventory/managedObjects/update/kid1", `{"name":"Freezer 2","wittra_Device":{"type":"tag"}}`)
	kid, _ := s.DeviceBySerial("kid1")
	if kid.Name != "Freezer 2" || string(kid.Fragments["wittra_Device"]) != `{"type":"tag"}` {
		t.Fatalf("after update by external id: %+v", kid)
	}
	d.pub(t, "inventory/managedObjects/update/"+kid.ID, `{"name":"Freezer 3"}`)
	if kid, _ = s.DeviceBySerial("kid1"); kid.Name != "Freezer 3" {
		t.Fatalf("after update by id: %q", kid.Name)
	}
	d.pub(t, "inventory/managedObjects/update/kid1", `["not","an","object"]`)
	d.pub(t, "inventory/managedObjects/update/nobody", `{"name":"x"}`)

	other := paho.NewClient(connectOpts(s, "gw2", s.Tenant()+"/other", "pw"))
	if tok := other.Connect(); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("connect: %v", tok.Error())
	}
	defer other.Disconnect(0)
	if tok := other.Publish("inventory/managedObjects/update/kid1", 1, false, `{"name":"stolen"}`); !tok.WaitTimeout(wait) || tok.Error() != nil {
		t.Fatalf("publish: %v", tok.Error())
	}
	if kid, _ = s.DeviceBySerial("kid1"); kid.Name != "Freezer 3" {
		t.Fatalf("another user renamed the child: %q", kid.Name)
	}
	var errs []string
	for _, e := range s.Errors() {
		if e.Channel == "error" {
			errs = append(errs, e.Text)
		}
	}
	want := []string{"not a JSON object", `no managed object with external id or id "nobody"`, "not owned by other"}
	if len(errs) != len(want) {
		t.Fatalf("errors %q, want %d", errs, len(want))
	}
	for i, w := range want {
		if !strings.Contains(errs[i], w) {
			t.Errorf("error %d = %q, want it to say %q", i, errs[i], w)
		}
	}
	// A deeper topic is not an inventory update: refused like any other.
	d.c.Publish("inventory/managedObjects/update/a/b", 1, false, `{}`).WaitTimeout(wait)
	refused := false
	for _, e := range s.Errors() {
		refused = refused || (e.Channel == "mqtt" && strings.Contains(e.Text, `"inventory/managedObjects/update/a/b" refused`))
	}
	if !refused {
		t.Fatalf("publish to a deeper inventory topic not refused: %+v", s.Errors())
	}
}
