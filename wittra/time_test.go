package wittra_test

import (
	"errors"
	"testing"
	"time"

	"wittra-gateway/wittra"
)

func TestParseTime(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want time.Time
	}{
		{"RFC3339Micro", "2021-06-04T13:47:48.256000+00:00", time.Date(2021, 6, 4, 13, 47, 48, 256e6, time.UTC)},
		{"RFC3339NoFraction", "2025-04-24T10:05:11+00:00", time.Date(2025, 4, 24, 10, 5, 11, 0, time.UTC)},
		{"RFC3339Z", "2024-03-12T08:15:42Z", time.Date(2024, 3, 12, 8, 15, 42, 0, time.UTC)},
		{"RFC3339Nano", "2024-03-12T08:15:42.123456789Z", time.Date(2024, 3, 12, 8, 15, 42, 123456789, time.UTC)},
		{"RFC3339Offset", "2024-03-12T10:15:42.517+02:00", time.Date(2024, 3, 12, 8, 15, 42, 517e6, time.UTC)},
		{"SpaceNoFraction", "2025-06-10 00:18:57+00:00", time.Date(2025, 6, 10, 0, 18, 57, 0, time.UTC)},
		{"SpaceFraction", "2025-06-10 00:18:57.25-01:00", time.Date(2025, 6, 10, 1, 18, 57, 250e6, time.UTC)},
		{"SpaceZ", "2025-06-10 00:18:57Z", time.Date(2025, 6, 10, 0, 18, 57, 0, time.UTC)},
		{"NoZoneFraction", "2021-06-04T13:47:48.256000", time.Date(2021, 6, 4, 13, 47, 48, 256e6, time.UTC)},
		{"NoZoneNoFraction", "2021-06-04T13:47:48", time.Date(2021, 6, 4, 13, 47, 48, 0, time.UTC)},
		{"NoZoneSpace", "2021-06-04 13:47:48.5", time.Date(2021, 6, 4, 13, 47, 48, 500e6, time.UTC)},
		{"NoZoneSpaceNoFraction", "2021-06-04 13:47:48", time.Date(2021, 6, 4, 13, 47, 48, 0, time.UTC)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := wittra.ParseTime(tt.in)
			if err != nil {
				t.Fatalf("ParseTime(%q): %v", tt.in, err)
			}
			if !got.Equal(tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
			if got.Location() != time.UTC {
				t.Errorf("got location %v, want UTC", got.Location())
			}
		})
	}
}

func TestParseTimeErrors(t *testing.T) {
	tests := []struct{ name, in string }{
		{"Empty", ""},
		{"Word", "yesterday"},
		{"Epoch", "1712345678"},
		{"DateOnly", "2024-03-12"},
		{"BadMonth", "2024-13-01T00:00:00Z"},
		{"BadHour", "2024-03-12T25:00:00"},
		{"OffsetNoColon", "2024-03-12T08:15:42+0000"},
		{"Trailing", "2024-03-12T08:15:42Z junk"},
		{"Slashes", "2024/03/12 08:15:42"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := wittra.ParseTime(tt.in)
			if err == nil {
				t.Fatalf("got %v, want an error", got)
			}
			if !errors.Is(err, wittra.ErrTime) {
				t.Errorf("errors.Is(%v, ErrTime) = false, want true", err)
			}
		})
	}
}

func TestTimestamp(t *testing.T) {
	tests := []struct {
		name string
		body []byte
		want time.Time // zero: ok=false expected
	}{
		{"f1", fixture(t, "f1_data_tag.json"), time.Date(2024, 3, 12, 8, 15, 42, 517e6, time.UTC)},
		{"f2", fixture(t, "f2_data_lpth_event.json"), time.Date(2024, 3, 12, 8, 16, 3, 4e6, time.UTC)},
		{"f3", fixture(t, "f3_event_device_updated.json"), time.Date(2024, 3, 12, 9, 0, 0, 0, time.UTC)},
		{"f4", fixture(t, "f4_data20.json"), time.Date(2025, 4, 24, 10, 5, 11, 0, time.UTC)},
		{"f5LocationTimestamp", fixture(t, "f5_location_record.json"), time.Date(2025, 6, 10, 0, 18, 57, 0, time.UTC)},
		{"f6", fixture(t, "f6_legacy_binary.json"), time.Date(2022, 1, 27, 15, 17, 54, 0, time.UTC)},
		{"TopLevelBeatsLocation", []byte(`{"location":{"timestamp":"2020-01-01T00:00:00Z"},"timestamp":"2021-01-01T00:00:00Z"}`),
			time.Date(2021, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"NullFallsBackToLocation", []byte(`{"timestamp":null,"location":{"timestamp":"2020-01-01 00:00:00"}}`),
			time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"Absent", []byte(`{"deviceId":"D1"}`), time.Time{}},
		{"Number", []byte(`{"timestamp":1712345678}`), time.Time{}},
		{"Unparseable", []byte(`{"timestamp":"soon","location":{"timestamp":"2020-01-01T00:00:00Z"}}`), time.Time{}},
		{"PayloadTimestampIgnored", []byte(`{"payload":{"timestamp":"2020-01-01T00:00:00Z"}}`), time.Time{}},
		{"LocationNotObject", []byte(`{"location":"2020-01-01T00:00:00Z"}`), time.Time{}},
		{"NotObject", []byte(`"2020-01-01T00:00:00Z"`), time.Time{}},
		{"Truncated", []byte(`{"timestamp":"2020-01-01T00:00:00Z`), time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := wittra.Timestamp(tt.body)
			if wantOK := !tt.want.IsZero(); ok != wantOK {
				t.Fatalf("got ok=%v (%v), want ok=%v", ok, got, wantOK)
			}
			if ok && !got.Equal(tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}
