package broker

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/rs/zerolog"

	"wittra-gateway/internal/field"
	"wittra-gateway/sinks"
)

// DefaultWindow is how many publications a durable subscriber has
// unacknowledged at most; the rest waits in the queue.
const DefaultWindow = 1000

// maxInflightBytes bounds the encoded bytes unacknowledged (one publication
// may exceed it): what a stalled client has not read then fits in the
// kernel's socket buffers, so a write never blocks on it and a shutdown
// does not wait for the connection's deadline.
const maxInflightBytes = 256 << 10

// SubscriberConfig configures a `type: subscriber` sink: one MQTT client id
// of the embedded broker that receives the queue's messages from its own
// cursor. It must be declared in Config.Subscribers when the broker is
// built, so that its protection holds from the first connection.
type SubscriberConfig struct {
	Name        string // sink name in logs and metrics; default the client id
	ClientID    string // the consumer's MQTT client id; required
	Username    string // with broker users: the only user who may connect with ClientID
	TopicPrefix string // default DefaultTopicPrefix
	Values      bool   // also one topic per measured value
	QoS         byte   // highest QoS sent: 1 (default) or 2
	GatewayID   string // names the status topic, which is not delivered durably; required
	Window      int    // publications unacknowledged at most; default DefaultWindow
}

func errDuplicateClientID(id string) error {
	return fmt.Errorf("durable subscriber client id %q declared twice", id)
}

// Validate reports every problem of c, zero fields standing for their
// defaults. Each is a *field.Error naming the key of a `type: subscriber`
// sink in the config file.
func (c SubscriberConfig) Validate() error {
	var errs field.List
	switch c.ClientID {
	case "":
		errs.Add("client_id", "required for type subscriber (the consumer's MQTT client id)")
	case sentinelClient:
		errs.Add("client_id", "%q is reserved", c.ClientID)
	case c.GatewayID, "wittra-" + c.GatewayID:
		errs.Add("client_id", "must not be the gateway's own id")
	}
	if err := sinks.CheckTopicPart(cmp.Or(c.TopicPrefix, DefaultTopicPrefix), true); err != nil {
		errs.Add("topic_prefix", "%v", err)
	}
	if err := sinks.CheckTopicPart(c.GatewayID, false); err != nil {
		errs.Add("/gateway.id", "%v", err)
	}
	if c.QoS > 2 {
		errs.Add("qos", "must be 1 or 2 for type subscriber (the cursor moves on the client's acknowledgement)")
	}
	if c.Window < 0 || c.Window > 60000 {
		errs.Add("", "window must be 1..60000")
	}
	return errs.Err()
}

func (c SubscriberConfig) withDefaults() SubscriberConfig {
	if c.Name == "" {
		c.Name = c.ClientID
	}
	if c.TopicPrefix == "" {
		c.TopicPrefix = DefaultTopicPrefix
	}
	if c.QoS == 0 {
		c.QoS = 1
	}
	if c.Window == 0 {
		c.Window = DefaultWindow
	}
	return c
}

// Subscriber is the sink of one durable client. Delivery is the client's
// acknowledgement: a message counts as delivered once the client sent
// PUBACK (PUBCOMP at QoS 2), on the connection it was sent on, for every
// publication of the message that matches one of its subscriptions. A
// message matching none of them counts as delivered without being sent.
// While the client is away, or connected without a subscription, Publish
// waits: the messages stay in the queue.
type Subscriber struct {
	srv *Server
	d   *durable
	cfg SubscriberConfig
	log zerolog.Logger

	closed  atomic.Bool
	stats   SubscriberStats
	started time.Time

	// Reused across Publish calls (Publish is not concurrent).
	items []item
	left  []int // per message: publications not done
	first []int // per message: index of its first item
	pubs  []sinks.Publication
	wbuf  bytes.Buffer // encoded publications not yet written
	qos0  []int        // items in wbuf sent at QoS 0
}

// SubscriberStats are totals since start.
type SubscriberStats struct {
	Sent      atomic.Uint64 // publications written to the client, resends included
	Acked     atomic.Uint64 // publications acknowledged
	Unmatched atomic.Uint64 // publications skipped: no subscription of the client matches
	Refused   atomic.Uint64 // publications the client refused (v5 error reason, or larger than its maximum packet size)
	Resent    atomic.Uint64 // publications sent again after a reconnect
}

type item struct {
	key     pubKey
	msg     int
	topic   string
	payload []byte
	state   uint8
	resent  bool
}

const (
	itemPending uint8 = iota
	itemSent          // on the current connection, unacknowledged
	itemDone
)

var _ sinks.Sink = (*Subscriber)(nil)

// NewSubscriber attaches the sink of a client id declared in
// Config.Subscribers; cfg must be that declaration (Name may differ).
func NewSubscriber(srv *Server, cfg SubscriberConfig, log zerolog.Logger) (*Subscriber, error) {
	if srv == nil {
		return nil, errors.New("subscriber sink: no broker")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	d := srv.subs.byID[cfg.ClientID]
	if d == nil {
		return nil, fmt.Errorf("subscriber sink %s: client id %q was not declared when the broker was built", cfg.Name, cfg.ClientID)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.sink {
		return nil, fmt.Errorf("subscriber sink %s: client id %q already has a sink", cfg.Name, cfg.ClientID)
	}
	d.sink = true
	srv.reserve(cfg.TopicPrefix)
	return &Subscriber{
		srv:     srv,
		d:       d,
		cfg:     cfg,
		log:     log.With().Str("component", "broker").Str("sink", cfg.Name).Str("client", cfg.ClientID).Logger(),
		started: time.Now(),
	}, nil
}

// Name returns the sink's name.
func (s *Subscriber) Name() string { return s.cfg.Name }

// Stats returns the sink's counters.
func (s *Subscriber) Stats() *SubscriberStats { return &s.stats }

// Connected reports whether the client is connected and subscribed.
func (s *Subscriber) Connected() bool { return s.LinkState().Connected }

// LinkState is the client's state for the status page: connected means
// connected and subscribed; LastError says what delivery waits for.
func (s *Subscriber) LinkState() sinks.LinkState {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	ls := sinks.LinkState{Since: s.d.changed}
	if ls.Since.IsZero() {
		ls.Since = s.started
	}
	c := s.d.cur
	switch {
	case c == nil || c.dead:
		ls.LastError = "client " + s.cfg.ClientID + " not connected: its messages wait in the queue"
	case c.readyAt.IsZero() || c.cl.State.Subscriptions.Len() == 0:
		ls.LastError = "client " + s.cfg.ClientID + " connected but not subscribed: its messages wait in the queue"
	default:
		ls.Connected = true
	}
	return ls
}

var _ sinks.Linked = (*Subscriber)(nil)

// Close detaches the sink; the client's protection stays with the broker.
func (s *Subscriber) Close(context.Context) error {
	if s.closed.CompareAndSwap(false, true) {
		s.d.mu.Lock()
		s.d.sink = false
		s.d.mu.Unlock()
	}
	return nil
}

// Publish sends msgs to the client, at most cfg.Window publications
// unacknowledged, and returns when every one is acknowledged or skipped, or
// when ctx ends (with the count acknowledged so far, from the start). A
// reconnect resends, from the first unacknowledged publication, what the
// old connection had not acknowledged.
func (s *Subscriber) Publish(ctx context.Context, msgs []sinks.Message) (int, error) {
	if s.closed.Load() {
		return 0, ErrSinkClosed
	}
	if err := s.build(msgs); err != nil {
		return 0, err
	}
	defer clear(s.items) // don't pin message bodies

	var (
		c       *dconn // the connection the items' "sent" state refers to
		gen     uint64
		subs    []subFilter
		window  int
		next    int // first item that may still need sending on c
		done    int // messages fully acknowledged, from the start
		timer   *time.Timer
		refused uint64
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		d := s.d
		d.mu.Lock()
		if d.cur != c {
			c = d.cur
			next = 0
			for i := range s.items {
				if s.items[i].state == itemSent {
					s.items[i].state = itemPending
					s.items[i].resent = true
				}
			}
			gen = ^uint64(0)
			if c != nil {
				// Publications an earlier Publish call sent on this
				// connection are still awaited, not sent again.
				for _, e := range c.inflight {
					if i, ok := s.find(msgs, e.key); ok && s.items[i].state == itemPending {
						s.items[i].state = itemSent
					}
				}
			}
		}
		inflight, inBytes := 0, 0
		ready, full := false, false
		var settle time.Time
		if c != nil {
			// An acknowledgement of a publication not in this call is kept
			// for the call that hands it back (the forwarder interleaves a
			// live_first sink's two streams); only the newest Window are
			// kept: no more can be in flight, so older ones were given up
			// (their message expired), and dropping one costs a resend.
			keep := c.acked[:0]
			for _, a := range c.acked {
				i, ok := s.find(msgs, a.key)
				if !ok {
					keep = append(keep, a)
					continue
				}
				if s.items[i].state != itemDone {
					s.markDone(i)
					s.stats.Acked.Add(1)
					if a.refused {
						refused++
					}
				}
			}
			if extra := len(keep) - s.cfg.Window; extra > 0 {
				keep = keep[:copy(keep, keep[extra:])]
			}
			c.acked = keep
			inflight, inBytes = len(c.inflight), c.inBytes
			settle = c.settle
			ready = !c.dead && !c.readyAt.IsZero()
			if ready && c.subsGen != gen {
				gen = c.subsGen
				subs = loadSubs(c.cl)
				window = s.cfg.Window
				if rm := int(c.cl.Properties.Props.ReceiveMaximum); rm > 0 && rm < window {
					window = rm
				}
			}
			// Nearly full: wait for a few more acknowledgements and write
			// the next publications as one, rather than one write per
			// acknowledgement; while something waits to be sent, only an
			// acknowledgement that makes that room wakes the sink.
			room := min(64, window/4)
			full = ready && inflight > 0 && (window-inflight < room || inBytes > maxInflightBytes*3/4)
			c.roomWait = full && !s.allSent()
			c.roomCount, c.roomBytes = window-room, maxInflightBytes*3/4
		}
		d.mu.Unlock()
		if refused > 0 {
			s.stats.Refused.Add(refused)
			s.log.Warn().Uint64("publications", refused).Msg("durable subscriber refused publications (error reason code); counted as delivered")
			refused = 0
		}

		for done < len(msgs) && s.left[done] == 0 {
			done++
		}
		if done == len(msgs) {
			return done, nil
		}
		if ready && len(subs) == 0 {
			ready = false // unsubscribed from everything: wait, as if away
		}
		var wait time.Time // an unmatched message waits for more subscriptions until then
		if full {
			ready = false
		}
		if ready {
			next, wait = s.send(c, subs, window, inflight, inBytes, next, settle)
			for done < len(msgs) && s.left[done] == 0 {
				done++
			}
			if done == len(msgs) {
				return done, nil
			}
			if done > 0 && wait.IsZero() && s.allSent() {
				// The rest is written and only awaits its acknowledgements:
				// return what is delivered, so that the forwarder hands the
				// rest back with newer messages behind it while the client
				// reads, instead of the window draining at the end of
				// every batch.
				return done, nil
			}
		}

		var tick <-chan time.Time
		if !wait.IsZero() {
			if timer == nil {
				timer = time.NewTimer(time.Until(wait))
			} else {
				timer.Reset(time.Until(wait))
			}
			tick = timer.C
		}
		select {
		case <-d.wake:
		case <-tick:
		case <-ctx.Done():
			// Say what delivery waits for: the forwarder reports it.
			if ls := s.LinkState(); !ls.Connected {
				return done, fmt.Errorf("%s: %w", ls.LastError, ctx.Err())
			}
			return done, fmt.Errorf("client %s: %d of %d messages acknowledged: %w", s.cfg.ClientID, done, len(msgs), ctx.Err())
		}
	}
}

// send writes pending items on c, from next, while fewer than window are
// unacknowledged, and returns the new next. It stops at an unmatched item
// before settle, and returns settle then.
//
// The publications are encoded here and written with one write per
// maxWriteBytes, under the client's lock as mochi's WritePacket does: one
// syscall per publication would cost more than the rest of the path. (So
// mochi's OnPacketEncode and OnPacketSent hooks do not see them.)
func (s *Subscriber) send(c *dconn, subs []subFilter, window, inflight, inBytes, next int, settle time.Time) (int, time.Time) {
	var wait time.Time
	s.wbuf.Reset()
	s.qos0 = s.qos0[:0]
	sent := 0
	for ; next < len(s.items) && inflight < window && (inflight == 0 || inBytes < maxInflightBytes); next++ {
		it := &s.items[next]
		if it.state != itemPending {
			continue
		}
		qos, ok := matchQoS(subs, it.topic)
		if !ok {
			if time.Now().Before(settle) {
				wait = settle
				break
			}
			s.markDone(next)
			s.stats.Unmatched.Add(1)
			continue
		}
		qos = min(qos, s.cfg.QoS)
		pk := packets.Packet{
			FixedHeader:     packets.FixedHeader{Type: packets.Publish, Qos: qos, Dup: it.resent && qos > 0},
			TopicName:       it.topic,
			Payload:         it.payload,
			Created:         time.Now().Unix(),
			ProtocolVersion: c.cl.Properties.ProtocolVersion,
		}
		pk.Mods.MaxSize = c.cl.Properties.Props.MaximumPacketSize
		pk.Mods.DisallowProblemInfo = c.cl.Properties.Props.RequestProblemInfoFlag && c.cl.Properties.Props.RequestProblemInfo == 0
		if qos > 0 {
			// NextPacketID advances mochi's per-client counter, so mochi's
			// own fan-out to this client cannot pick the same id before
			// this one is in Inflight (it would have to wrap 65535 ids).
			id, err := c.cl.NextPacketID()
			if err != nil {
				break // every id in use: wait for acknowledgements
			}
			pk.PacketID = uint16(id)
		}
		mark := s.wbuf.Len()
		if err := pk.PublishEncode(&s.wbuf); err != nil || (pk.Mods.MaxSize > 0 && uint32(s.wbuf.Len()-mark) > pk.Mods.MaxSize) {
			// Larger than the maximum packet size the client announced:
			// it can never take this one.
			s.wbuf.Truncate(mark)
			s.stats.Refused.Add(1)
			s.log.Warn().Err(err).Str("topic", it.topic).Int("bytes", len(it.payload)).Msg("publication the client cannot take (larger than its maximum packet size); skipped")
			s.markDone(next)
			continue
		}
		if qos > 0 {
			s.d.mu.Lock()
			if c.dead || s.d.cur != c {
				s.d.mu.Unlock()
				s.wbuf.Truncate(mark)
				break
			}
			size := s.wbuf.Len() - mark
			c.inflight[pk.PacketID] = inflightEntry{key: it.key, qos: qos, bytes: size}
			c.inBytes += size
			inBytes += size
			// In mochi's Inflight too, so the id is reserved and mochi
			// runs the QoS 2 exchange (PUBREC → PUBREL).
			if c.cl.State.Inflight.Set(pk) {
				atomic.AddInt64(&s.srv.mochi.Info.Inflight, 1)
				c.cl.State.Inflight.DecreaseSendQuota()
			}
			s.d.mu.Unlock()
			it.state = itemSent
			inflight++
		} else {
			s.qos0 = append(s.qos0, next)
		}
		sent++
		if it.resent {
			s.stats.Resent.Add(1)
		}
		if s.wbuf.Len() >= maxWriteBytes {
			if !s.flush(c, sent) {
				return next + 1, time.Time{}
			}
			sent = 0
		}
	}
	s.flush(c, sent)
	return next, wait
}

// maxWriteBytes bounds one write of encoded publications.
const maxWriteBytes = 64 << 10

// flush writes the encoded publications to c's connection. A failing
// connection is closed, so that its end is noticed and what it had not
// acknowledged is resent on the next one.
func (s *Subscriber) flush(c *dconn, n int) bool {
	if s.wbuf.Len() == 0 {
		return true
	}
	cl := c.cl
	var err error
	if cl.Closed() || cl.Net.Conn == nil {
		err = mqtt.ErrConnectionClosed
	} else {
		cl.Lock()
		_, err = cl.Net.Conn.Write(s.wbuf.Bytes())
		cl.Unlock()
	}
	bytes := s.wbuf.Len()
	s.wbuf.Reset()
	if err != nil {
		s.qos0 = s.qos0[:0]
		cl.Stop(fmt.Errorf("durable subscriber write: %w", err))
		return false
	}
	info := s.srv.mochi.Info
	atomic.AddInt64(&info.BytesSent, int64(bytes))
	atomic.AddInt64(&info.PacketsSent, int64(n))
	atomic.AddInt64(&info.MessagesSent, int64(n))
	s.stats.Sent.Add(uint64(n))
	// A client subscribed at QoS 0 asked for no acknowledgement: handing
	// the publication to its connection is all there is.
	for _, i := range s.qos0 {
		s.markDone(i)
	}
	s.qos0 = s.qos0[:0]
	return true
}

// build turns msgs into items, in order.
func (s *Subscriber) build(msgs []sinks.Message) error {
	s.items = s.items[:0]
	s.left = s.left[:0]
	s.first = s.first[:0]
	for i, m := range msgs {
		pubs, verr := sinks.Publications(s.pubs[:0], s.cfg.TopicPrefix, m, s.cfg.Values)
		s.pubs = pubs
		if verr != nil {
			s.log.Warn().Err(verr).Uint64("seq", m.Seq).Str("project", m.Project).Str("device", m.Device).Msg("values not published")
		}
		s.first = append(s.first, len(s.items))
		s.left = append(s.left, len(pubs))
		for n, p := range pubs {
			s.items = append(s.items, item{key: pubKey{seq: m.Seq, n: n}, msg: i, topic: p.Topic, payload: p.Payload})
		}
	}
	clear(s.pubs)
	return nil
}

// find returns the index of the item k names, if it is in this batch
// (msgs are in increasing seq order).
func (s *Subscriber) find(msgs []sinks.Message, k pubKey) (int, bool) {
	i := sort.Search(len(msgs), func(i int) bool { return msgs[i].Seq >= k.seq })
	if i == len(msgs) || msgs[i].Seq != k.seq {
		return 0, false
	}
	j := s.first[i] + k.n
	if k.n < 0 || j >= len(s.items) || s.items[j].key != k {
		return 0, false
	}
	return j, true
}

// allSent reports whether no item is left to send.
func (s *Subscriber) allSent() bool {
	for i := range s.items {
		if s.items[i].state == itemPending {
			return false
		}
	}
	return true
}

func (s *Subscriber) markDone(i int) {
	if s.items[i].state == itemDone {
		return
	}
	s.items[i].state = itemDone
	s.left[s.items[i].msg]--
}

// subFilter is one subscription of the client: the filter (without a
// $share/<group>/ prefix) and the QoS it asked for.
type subFilter struct {
	f   filter
	qos byte
}

func loadSubs(cl *mqtt.Client) []subFilter {
	all := cl.State.Subscriptions.GetAll()
	out := make([]subFilter, 0, len(all))
	for text, sub := range all {
		if mqtt.IsSharedFilter(text) {
			// A durable client in a share group is served like a plain
			// subscriber: it gets everything the filter matches.
			parts := strings.SplitN(text, "/", 3)
			if len(parts) < 3 {
				continue
			}
			text = parts[2]
		}
		out = append(out, subFilter{f: strings.Split(text, "/"), qos: sub.Qos})
	}
	return out
}

// matchQoS returns the highest QoS of the subscriptions matching topic.
func matchQoS(subs []subFilter, topic string) (byte, bool) {
	var qos byte
	ok := false
	for _, s := range subs {
		if s.f.covers(topic) {
			ok = true
			qos = max(qos, s.qos)
		}
	}
	return qos, ok
}
