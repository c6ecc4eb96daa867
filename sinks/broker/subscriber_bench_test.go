package broker

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"wittra-gateway/sinks"
)

// BenchmarkSubscriberReplay delivers b.N messages, in batches of 1000 as
// the forwarder does (handing back what an early return left in flight),
// to one durable client (a paho client at QoS 1).
func BenchmarkSubscriberReplay(b *testing.B) {
	log, _ := testLogger()
	srv, err := New(Config{AllowAnonymous: true, Listeners: []Listener{{Address: "127.0.0.1:0"}}, Subscribers: []SubscriberConfig{durableCfg()}}, log)
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	dur, err := NewSubscriber(srv, durableCfg(), log)
	if err != nil {
		b.Fatal(err)
	}
	var got atomic.Int64
	c := paho.NewClient(paho.NewClientOptions().AddBroker(tcpURL(srv)).SetClientID(durableID).SetOrderMatters(true))
	if tok := c.Connect(); !tok.WaitTimeout(waitLong) || tok.Error() != nil {
		b.Fatal(tok.Error())
	}
	defer c.Disconnect(0)
	if tok := c.Subscribe("wittra/#", 1, func(paho.Client, paho.Message) { got.Add(1) }); !tok.WaitTimeout(waitLong) || tok.Error() != nil {
		b.Fatal(tok.Error())
	}
	body := `{"deviceId":"D00124B001E2A0001","payloadId":"x","payload":{"temperature":21.75,"battery":{"percentage":75}}}`
	var batch []sinks.Message
	queued := 0
	b.ResetTimer()
	for done := 0; done < b.N; {
		// What an early return left in flight goes back first, followed
		// by up to one batch of new messages, as the forwarder does.
		for i := 0; i < benchBatch && queued < b.N; i++ {
			batch = append(batch, msg("p", "d", sinks.KindData, body))
			queued++
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		n, err := dur.Publish(ctx, batch)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		done += n
		batch = append(batch[:0], batch[n:]...)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
}

var benchBatch = 1000
