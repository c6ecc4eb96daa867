//go:build unix

package mqttclient

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"wittra-gateway/internal/testutil"
	"wittra-gateway/sinks"
)

const (
	testProject = "P1"
	testGateway = "gw1"
	waitLong    = 15 * time.Second
)

// ---------------------------------------------------------------------------
// sink and messages

// newSink creates a sink with test defaults and closes it at cleanup.
func newSink(t testing.TB, cfg Config) (*Sink, *testutil.LogBuffer) {
	t.Helper()
	if cfg.GatewayID == "" {
		cfg.GatewayID = testGateway
	}
	if cfg.MaxReconnectInterval == 0 {
		cfg.MaxReconnectInterval = time.Second
	}
	log, buf := testutil.Logger(t)
	s, err := New(cfg, log)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Close(ctx)
	})
	return s, buf
}

func waitConnected(t testing.TB, s *Sink) {
	t.Helper()
	if !testutil.Poll(waitLong, s.Connected) {
		t.Fatal("sink did not connect")
	}
}

var seq atomic.Uint64

// message returns a data message of device whose body names its sequence
// number, padded with spaces to at least size bytes.
func message(device string, size int) sinks.Message {
	n := seq.Add(1)
	body := fmt.Sprintf(`{"deviceId":%q,"payloadId":"p%08d","payloadType":"DATA","timestamp":"2024-03-12T08:15:42.517Z","payload":{"temperature":21.75,"counter":%d}}`, device, n, n)
	if len(body) < size {
		body = body[:len(body)-1] + strings.Repeat(" ", size-len(body)) + "}"
	}
	return sinks.Message{Seq: n, Received: time.Now(), Project: testProject, Device: device, Kind: sinks.KindData, Body: []byte(body)}
}

// messages returns n messages alternating over devices.
func messages(n int, devices ...string) []sinks.Message {
	msgs := make([]sinks.Message, n)
	for i := range msgs {
		msgs[i] = message(devices[i%len(devices)], 0)
	}
	return msgs
}

func publishAll(t testing.TB, s *Sink, msgs []sinks.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	n, err := s.Publish(ctx, msgs)
	if err != nil || n != len(msgs) {
		t.Fatalf("Publish = %d, %v; want %d, nil", n, err, len(msgs))
	}
}

func dataTopic(device string) string {
	return DefaultTopicPrefix + "/" + testProject + "/" + device + "/data"
}
