package main

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"wittra-gateway/internal/wmsg"
)

// backlogWatch subscribes (QoS 1) to a filled backlog's data topic and
// notes every distinct message of it: a drain is judged done when the
// backlog's last message was delivered, not when a depth reads 0 (live
// traffic on top keeps a few messages in flight, and a live-first sink
// delivers live messages before the backlog's end).
type backlogWatch struct {
	c     paho.Client
	n     uint64
	start time.Time

	mu   sync.Mutex
	seen []uint64 // bitset of fill sequences 0..n-1
	got  atomic.Uint64
	dups atomic.Uint64
	done chan struct{}
	took time.Duration
}

// watchBacklog connects to the broker at url and subscribes to topic
// (bench/fill's messages: sequences 0..n-1). Times count from start.
func watchBacklog(url, topic string, n uint64, start time.Time) (*backlogWatch, error) {
	w := &backlogWatch{n: n, start: start, seen: make([]uint64, (n+63)/64), done: make(chan struct{})}
	opts := paho.NewClientOptions().AddBroker(url).SetClientID(fmt.Sprintf("bench-backlog-%d", time.Now().UnixNano())).
		SetCleanSession(true).SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(100 * time.Millisecond).
		SetOrderMatters(false).SetOnConnectHandler(func(c paho.Client) {
		c.Subscribe(topic, 1, w.onMessage)
	})
	w.c = paho.NewClient(opts)
	if t := w.c.Connect(); !t.WaitTimeout(10*time.Second) || t.Error() != nil {
		w.c.Disconnect(0)
		return nil, fmt.Errorf("backlog subscriber: connect %s: %v", url, t.Error())
	}
	return w, nil
}

func (w *backlogWatch) onMessage(_ paho.Client, m paho.Message) {
	p, err := wmsg.Parse(m.Payload())
	if err != nil || p.Seq >= w.n {
		return
	}
	seq := p.Seq
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.seen[seq/64]&(1<<(seq%64)) != 0 {
		w.dups.Add(1)
		return
	}
	w.seen[seq/64] |= 1 << (seq % 64)
	if w.got.Add(1) == w.n {
		w.took = time.Since(w.start)
		close(w.done)
	}
}

// wait returns the time from start to the backlog's last message, or 0
// when it did not arrive within d.
func (w *backlogWatch) wait(d time.Duration) time.Duration {
	select {
	case <-w.done:
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.took
	case <-time.After(d):
		return 0
	}
}

func (w *backlogWatch) close() { w.c.Disconnect(100) }
