package main

import (
	"fmt"
	"testing"
	"time"

	"wittra-gateway/internal/testutil"
	"wittra-gateway/sinks/cumulocity/c8yfake"
)

// TestCumulocityThroughTheGateway posts a Wittra tag message to the webhook
// and finds it in the Cumulocity fake, in both modes, next to the embedded
// broker sink: registration of the gateway and the child, then the child's
// measurements.
func TestCumulocityThroughTheGateway(t *testing.T) {
	for _, mode := range []string{"mqtt", "rest"} {
		t.Run(mode, func(t *testing.T) {
			fake, err := c8yfake.Start(c8yfake.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { fake.Close() })
			url := fake.MQTTURL()
			if mode == "rest" {
				url = fake.URL()
			}
			tg := startTestGateway(t, t.TempDir(), map[string]string{
				"sinks": fmt.Sprintf(`sinks:
  - {name: local, type: broker}
  - {name: c8y, type: cumulocity, mode: %s, url: %q, tenant: %s, username: %s, password: %s}`,
					mode, url, c8yfake.DefaultTenant, c8yfake.DefaultUser, c8yfake.DefaultPassword),
			})
			if code, reply := tg.post(t, "/wittra", readFixture(t, "f1_data_tag.json")); code != 200 {
				t.Fatalf("post: %d %s", code, reply)
			}
			const child = "D00124B001E2A1B2C"
			var temps []float64
			if !testutil.Poll(15*time.Second, func() bool {
				dev, ok := fake.DeviceBySerial(child)
				temps = temps[:0]
				for _, m := range fake.Measurements() {
					if s, found := m.Fragments["c8y_TemperatureMeasurement"]["T"]; ok && found && m.Source == dev.ID {
						temps = append(temps, s.Value)
					}
				}
				return len(temps) > 0
			}) {
				t.Fatalf("no temperature of child %s in the fake after 15 s; devices %v; errors %v", child, fake.Devices(), fake.Errors())
			}
			if temps[0] != 21.75 {
				t.Fatalf("temperature = %v, want 21.75", temps[0])
			}
			if _, ok := fake.DeviceBySerial("test-gw"); !ok {
				t.Fatalf("the gateway device (external id test-gw) was not registered")
			}
		})
	}
}
