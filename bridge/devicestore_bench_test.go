package bridge

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkDeviceStoreSave: one save of a full table (1000 devices, each
// with a new message of about 400 bytes): one commit of 1000 keys.
func BenchmarkDeviceStoreSave(b *testing.B) {
	q := openStoreQueue(b, filepath.Join(b.TempDir(), "queue.db"))
	defer q.Close()
	table := &seenTable{}
	ds, err := OpenDeviceStore(q.KV("devices_seen"), table.get, DefaultMaxDevices)
	if err != nil {
		b.Fatal(err)
	}
	body := `{"deviceId":"D%04d","timestamp":"2026-01-01T00:00:00Z","payload":{"temperature":21.5,"humidity":40,"battery":{"percentage":80,"voltage":3.9},"location":{"latitude":59.3,"longitude":18.0,"accuracy":0.8},"usage":{"moving":1,"stationary":2}}}`
	t0 := time.Now()
	b.ResetTimer()
	for i := range b.N {
		devs := make([]SeenDevice, DefaultMaxDevices)
		for j := range devs {
			devs[j] = seen("P1", fmt.Sprintf("D%04d", j), t0.Add(time.Duration(i+1)*time.Second), fmt.Sprintf(body, j))
		}
		table.set(devs...)
		if err := ds.Save(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}
