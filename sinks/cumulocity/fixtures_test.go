package cumulocity

import (
	"slices"
	"strings"
	"testing"
	"time"

	"wittra-gateway/sinks"
)

// What every mapping row (docs/contract.md#cumulocity) gives for the shared fixtures, identical
// in both modes (see flat for the line format).
var fixtureWant = map[string][]string{
	tagID: {
		// f1: temperature, battery, location, usage, accelerometer
		"M c8y_TemperatureMeasurement 2024-03-12T08:15:42.517Z c8y_TemperatureMeasurement.T=21.75 C",
		"M c8y_Battery 2024-03-12T08:15:42.517Z c8y_Battery.level=75 %",
		"M c8y_Battery 2024-03-12T08:15:42.517Z c8y_Battery.voltage=3.92 V",
		"L 2024-03-12T08:15:42.517Z 59.33258 18.06491 1.1 0.8",
		"M wittra_location 2024-03-12T08:15:42.517Z wittra_location.level=2 ",
		"M wittra_usage 2024-03-12T08:15:42.517Z wittra_usage.moving=42 s",
		"M wittra_usage 2024-03-12T08:15:42.517Z wittra_usage.stationary=258 s",
		"M wittra_accelerometer 2024-03-12T08:15:42.517Z wittra_accelerometer.x=0.01 ",
		"M wittra_accelerometer 2024-03-12T08:15:42.517Z wittra_accelerometer.y=-0.02 ",
		"M wittra_accelerometer 2024-03-12T08:15:42.517Z wittra_accelerometer.z=0.99 ",
		// f3: portal event
		"E wittra_DEVICE_UPDATED 2024-03-12T09:00:00.000Z name: null -> Forklift 7",
		// f6: legacy binaryData
		"M c8y_TemperatureMeasurement 2022-01-27T15:17:54.000Z c8y_TemperatureMeasurement.T=21.5 C",
		"M wittra_usage 2022-01-27T15:17:54.000Z wittra_usage.moving=12 s",
		"M wittra_usage 2022-01-27T15:17:54.000Z wittra_usage.stationary=288 s",
	},
	lpthID: {
		// f2: LPTH and current meter
		"M c8y_HumidityMeasurement 2024-03-12T08:16:03.004Z c8y_HumidityMeasurement.h=41.2 %RH",
		"M wittra_humidity 2024-03-12T08:16:03.004Z wittra_humidity.temperature=22.4 C",
		"M c8y_PressureMeasurement 2024-03-12T08:16:03.004Z c8y_PressureMeasurement.P=1008.6 hPa",
		"M wittra_pressure 2024-03-12T08:16:03.004Z wittra_pressure.temperature=22.1 C",
		"M c8y_LightMeasurement 2024-03-12T08:16:03.004Z c8y_LightMeasurement.e=312 lux",
		"M wittra_currentmeter 2024-03-12T08:16:03.004Z wittra_currentmeter.average=3.41 A",
		"M wittra_currentmeter 2024-03-12T08:16:03.004Z wittra_currentmeter.max=5.02 A",
		"M wittra_currentmeter 2024-03-12T08:16:03.004Z wittra_currentmeter.min=0.12 A",
		"M wittra_currentmeter 2024-03-12T08:16:03.004Z wittra_currentmeter.nbr_of_samples=15 ",
		"M wittra_currentmeter 2024-03-12T08:16:03.004Z wittra_currentmeter.temperature=24.0 C",
		"M wittra_currentmeter 2024-03-12T08:16:03.004Z wittra_currentmeter.voltage=3945 mV",
		// f4: Data 2.0
		"M wittra_wittra_tag_temperature 2025-04-24T10:05:11.000Z wittra_wittra_tag_temperature.temperature=22.9 C",
		"M wittra_wittra_lpth_light 2025-04-24T10:05:11.000Z wittra_wittra_lpth_light.light=280 lux",
		"M wittra_wittra_lpth_pressure 2025-04-24T10:05:11.000Z wittra_wittra_lpth_pressure.pressure=1009.2 hPa",
		"M wittra_wittra_lpth_humidity 2025-04-24T10:05:11.000Z wittra_wittra_lpth_humidity.humidity=40.5 %RH",
		"M wittra_wittra_lpth_humidity 2025-04-24T10:05:11.000Z wittra_wittra_lpth_humidity.temperature=22.6 C",
		"M wittra_wittra_tag_uptime 2025-04-24T10:05:11.000Z wittra_wittra_tag_uptime.uptime=86400 ",
	},
}

// fixtureSkipped is what the mapper leaves out of the fixtures: f1's
// battery.chargingStatus, location.label and neighbors.
const fixtureSkipped = 3

var fixtureFiles = []string{"f1_data_tag.json", "f2_data_lpth_event.json", "f3_event_device_updated.json", "f4_data20.json", "f6_legacy_binary.json"}

func fixtureMessages(t *testing.T) []sinks.Message {
	var msgs []sinks.Message
	for _, f := range fixtureFiles {
		msgs = append(msgs, message(t, fixture(t, f)))
	}
	return msgs
}

// testFixtures delivers every fixture through a sink of mode and checks
// what Cumulocity stored against fixtureWant.
func testFixtures(t *testing.T, mode string) {
	f := startFake(t)
	s := newSink(t, f, mode, nil)
	d := deliverAll(t, s, fixtureMessages(t), 20*time.Second)
	if len(d.rejected) > 0 {
		t.Fatalf("rejected %v", d.rejected)
	}
	for dev, want := range fixtureWant {
		got, counts := flat(f, dev)
		want = slices.Sorted(slices.Values(want))
		if !slices.Equal(got, want) {
			t.Errorf("device %s:%s", dev, diffLines(got, want))
		}
		if n := duplicates(counts); n != 0 {
			t.Errorf("device %s: %d duplicates without any fault", dev, n)
		}
	}
	if got := s.Skipped(); got != fixtureSkipped {
		t.Errorf("Skipped() = %d, want %d", got, fixtureSkipped)
	}
	mo, _ := f.DeviceBySerial(tagID)
	if mo.Position == nil || mo.Position.Lat != 59.33258 || mo.Position.Lng != 18.06491 {
		t.Errorf("tag position = %+v, want lat 59.33258 lng 18.06491", mo.Position)
	}
	if mo.Type != sensorType || mo.Name != "Wittra "+tagID {
		t.Errorf("child device = %q %q, want %q %q", mo.Name, mo.Type, "Wittra "+tagID, sensorType)
	}
	gw, ok := f.DeviceBySerial(testGateway)
	if !ok || gw.Type != gatewayType || gw.Name != "Wittra gateway "+testGateway {
		t.Errorf("gateway device = %+v", gw)
	}
	if !slices.Contains(gw.Children, mo.ID) {
		t.Errorf("gateway children %v lack %s", gw.Children, mo.ID)
	}
	for _, e := range f.Errors() {
		expected := e.Text == "41,100,Device already existing" || // repeated 100
			strings.HasPrefix(e.Text, "404 GET /identity/externalIds/") // lookup before creation
		if !expected {
			t.Errorf("Cumulocity error: %+v", e)
		}
	}
}

func TestMQTTFixtures(t *testing.T) { testFixtures(t, ModeMQTT) }

func TestRESTFixtures(t *testing.T) { testFixtures(t, ModeREST) }
