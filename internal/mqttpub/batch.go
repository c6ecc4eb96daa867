package mqttpub

import (
	"context"
	"fmt"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"wittra-gateway/sinks"
)

// Batch publishes the messages of one sink Publish call on one connection,
// in order, with at most Window publications in flight, and counts the
// leading messages proven delivered. Publications go to paho through a
// feeder goroutine: paho's Publish can block (up to its write timeout) when
// the connection dies under it, and the Batch must not. After its first
// error a Batch only returns that error.
type Batch struct {
	p         *Publisher
	ctx       context.Context
	c         *Conn
	delivered int                    // leading messages proven delivered
	err       error                  // the first error; final
	reqs      chan sinks.Publication // to the feeder
	toks      chan paho.Token        // from the feeder, in the order of reqs
	stop      chan struct{}          // closed at End
	assigned  int                    // in-flight entries, from the oldest, that have their token
}

// pending is one publication in flight.
type pending struct {
	tok      paho.Token // nil until the feeder has handed it to paho
	topic    string
	msg      int  // index of its message in the batch
	last     bool // last publication of that message
	deadline time.Time
}

// Begin waits for a usable connection (until ctx ends or, if positive,
// maxWait passed) and starts a Batch on it. One Batch runs at a time: the
// next Begin waits for End.
func (p *Publisher) Begin(ctx context.Context, maxWait time.Duration) (*Batch, error) {
	c, err := p.waitReady(ctx, maxWait)
	if err != nil {
		return nil, err
	}
	p.batchMu.Lock()
	b := &Batch{
		p:   p,
		ctx: ctx,
		c:   c,
		// At most Window publications are in flight, so neither channel
		// ever blocks its sender.
		reqs: make(chan sinks.Publication, p.o.Window),
		toks: make(chan paho.Token, p.o.Window),
		stop: make(chan struct{}),
	}
	go feed(c.client, p.o.QoS, b.reqs, b.toks, b.stop)
	return b, nil
}

// feed publishes reqs on c in order until reqs is closed or stop is. It may
// outlive its Batch by up to paho's write timeout when paho blocks.
func feed(c paho.Client, qos byte, reqs <-chan sinks.Publication, toks chan<- paho.Token, stop <-chan struct{}) {
	for p := range reqs {
		select {
		case <-stop:
			return
		default:
		}
		toks <- c.Publish(p.Topic, qos, p.Retain, p.Payload)
	}
}

// End stops the feeder and forgets the publications in flight.
func (b *Batch) End() {
	close(b.stop)
	close(b.reqs)
	b.p.inflight.reset()
	b.p.batchMu.Unlock()
}

// Delivered returns how many leading messages are proven delivered.
func (b *Batch) Delivered() int { return b.delivered }

// Send publishes p as part of message msg (last: its last publication),
// retained when p.Retain says so, first waiting
// while the window is full. It never hands paho a publication without a
// live connection of the Batch's epoch.
func (b *Batch) Send(p sinks.Publication, msg int, last bool) error {
	topic := p.Topic
	q := &b.p.inflight
	for b.err == nil && q.n > 0 {
		// Settle what has completed; block only while the window is full.
		if ok := b.settle(q.n >= len(q.buf)); !ok {
			break
		}
	}
	if b.err == nil && !b.c.current() {
		b.err = fmt.Errorf("publish %s: %w", topic, ErrConnectionLost)
	}
	if b.err != nil {
		return b.err
	}
	q.push(pending{topic: topic, msg: msg, last: last, deadline: time.Now().Add(b.p.o.AckTimeout)})
	b.reqs <- p
	return nil
}

// Flush waits until everything sent is proven delivered.
func (b *Batch) Flush() error {
	for b.err == nil && b.p.inflight.n > 0 {
		b.settle(true)
	}
	return b.err
}

// assign gives tok to the oldest in-flight publication without a token.
func (b *Batch) assign(tok paho.Token) {
	b.p.inflight.at(b.assigned).tok = tok
	b.assigned++
}

// settle waits for the oldest publication in flight (if block; otherwise
// only looks) and retires it. It reports whether one was retired; a failure
// sets b.err.
func (b *Batch) settle(block bool) bool {
	p := b.p
	for {
		for collecting := true; collecting; {
			select {
			case tok := <-b.toks:
				b.assign(tok)
			default:
				collecting = false
			}
		}
		f := p.inflight.front()
		var done <-chan struct{} // nil until f has its token
		if b.assigned > 0 {
			done = f.tok.Done()
			select {
			case <-done:
				return b.retire()
			default:
			}
		}
		if !block {
			return false
		}
		p.mu.Lock()
		wake := p.wake
		p.mu.Unlock()
		p.timer.Reset(time.Until(f.deadline))
		select {
		case <-done:
			p.timer.Stop()
			return b.retire()
		case tok := <-b.toks:
			p.timer.Stop()
			b.assign(tok)
		case <-wake: // a connection event: is ours still there?
			p.timer.Stop()
		case <-b.ctx.Done():
			p.timer.Stop()
			b.err = b.ctx.Err()
			return false
		case <-p.done:
			p.timer.Stop()
			b.err = ErrClosed
			return false
		case <-p.timer.C:
			if !b.c.current() {
				b.err = fmt.Errorf("publish %s: %w", f.topic, ErrConnectionLost)
				return false
			}
			b.err = fmt.Errorf("publish %s: %w within %v", f.topic, ErrAckTimeout, p.o.AckTimeout)
			p.dropConnection(b.c, b.err)
			return false
		}
		if !b.c.current() {
			b.err = fmt.Errorf("publish %s: %w", f.topic, ErrConnectionLost)
			return false
		}
	}
}

// retire takes the oldest publication, whose token has completed, out of
// flight if the completion proves delivery.
func (b *Batch) retire() bool {
	f := *b.p.inflight.front()
	// Done (like WaitTimeout returning true) only says the flow ended.
	if err := f.tok.Error(); err != nil {
		b.err = fmt.Errorf("publish %s: %w", f.topic, err)
		if b.stuck() {
			// paho failed the publication (e.g. "publish was broken by
			// timeout", "no message IDs available") yet keeps the
			// connection: only a new client gets out of that.
			b.p.dropConnection(b.c, b.err)
		}
		return false
	}
	if !b.c.current() {
		b.err = fmt.Errorf("publish %s: %w", f.topic, ErrConnectionLost)
		return false
	}
	b.p.inflight.pop()
	b.assigned--
	if f.last {
		b.delivered = f.msg + 1
	}
	return true
}

// stuck reports whether the connection still looks current a while after
// a publication failed: paho notices a broken connection itself within
// moments (a failed write ends it), so one it keeps is wedged.
func (b *Batch) stuck() bool {
	t := b.p.timer
	deadline := time.Now().Add(stuckAfter)
	for b.c.current() {
		if time.Now().After(deadline) {
			return true
		}
		t.Reset(stuckAfter / 20)
		select {
		case <-t.C:
		case <-b.ctx.Done():
			t.Stop()
			return false
		case <-b.p.done:
			t.Stop()
			return false
		}
	}
	return false
}

// ring is a FIFO of at most len(buf) publications in flight.
type ring struct {
	buf     []pending
	head, n int
}

func (q *ring) front() *pending { return &q.buf[q.head] }

// at returns the i-th oldest entry.
func (q *ring) at(i int) *pending { return &q.buf[(q.head+i)%len(q.buf)] }

func (q *ring) push(p pending) {
	q.buf[(q.head+q.n)%len(q.buf)] = p
	q.n++
}

func (q *ring) pop() {
	q.buf[q.head] = pending{}
	q.head = (q.head + 1) % len(q.buf)
	q.n--
}

func (q *ring) reset() {
	clear(q.buf)
	q.head, q.n = 0, 0
}
