package broker

import (
	"bytes"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"wittra-gateway/internal/clock"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/rs/zerolog"
)

// retainedHook takes the gateway's own retained publishes out of mochi's
// retained index and serves them from retainedStores:
//   - OnPublish: a retained publish of the gateway (inline client) under an
//     owned prefix is stored here and passed on with Retain cleared, so
//     mochi routes it to current subscribers but never indexes it;
//   - OnSubscribe/OnSubscribed/OnPacketSent(SUBACK): after the SUBACK of a
//     subscription, its matching retained topics are sent to the client
//     (by a sender goroutine per client, values read at send time), as
//     mochi's publishRetainedToClient does for its own index (which
//     still serves retained messages of other clients): no retained
//     messages for $share filters, RetainHandling 1 and 2 honoured, the
//     ACL asked per topic, QoS the lower of the stored and granted one;
//   - a sweep clears devices not heard of for their policy's MaxAge.
//
// A topic a bound clears is announced to current subscribers with an empty,
// non-retained publish: an empty retained one would come through OnPublish
// and delete a value that arrived in the meantime.
type retainedHook struct {
	mqtt.HookBase
	srv  *mqtt.Server
	acl  func(cl *mqtt.Client, topic string, write bool) bool
	now  func() time.Time
	log  zerolog.Logger
	maxQ byte // server's maximum QoS

	mu      sync.RWMutex
	stores  []*retainedStore // owned prefixes, longest first; a few (one per broker sink)
	pending map[*mqtt.Client]*pendingSubscribe
	senders map[*mqtt.Client]*sender // bound: connected clients with a delivery under way
	wg      sync.WaitGroup           // sender goroutines

	lastCapLog   atomic.Int64 // unix nanoseconds of the last "cap reached" log
	evictedSince atomic.Uint64
}

// pendingSubscribe is a SUBSCRIBE between OnSubscribe and its SUBACK. A
// client's packets are processed one at a time, so there is at most one per
// client (bound: connected clients); OnDisconnect drops leftovers.
type pendingSubscribe struct {
	packetID uint16
	filters  packets.Subscriptions
	existed  []bool
	granted  []byte
}

// sender delivers one client's retained messages, one subscription after
// the other, on its own goroutine: the client's read loop stays free to
// process the acks that make room in its in-flight window.
type sender struct {
	jobs []packets.Subscription // bound: maxQueuedDeliveries
}

const (
	// capLogInterval rate-limits the "retained cap reached" warning.
	capLogInterval = time.Minute
	// maxQueuedDeliveries bounds the subscriptions waiting for their
	// retained messages per client; past it a subscription gets none.
	maxQueuedDeliveries = 256
	// inflightWait is how long a QoS>0 delivery waits for the client to
	// ack something when its in-flight window is full before giving up.
	inflightWait = 30 * time.Second
)

func newRetainedHook(srv *mqtt.Server, acl func(*mqtt.Client, string, bool) bool, now func() time.Time, log zerolog.Logger) *retainedHook {
	if now == nil {
		now = time.Now
	}
	return &retainedHook{srv: srv, acl: acl, now: now, log: log, maxQ: srv.Options.Capabilities.MaximumQos,
		pending: make(map[*mqtt.Client]*pendingSubscribe), senders: make(map[*mqtt.Client]*sender)}
}

func (h *retainedHook) ID() string { return "wittra-retained" }

func (h *retainedHook) Provides(b byte) bool {
	return bytes.Contains([]byte{mqtt.OnPublish, mqtt.OnSubscribe, mqtt.OnSubscribed, mqtt.OnPacketSent, mqtt.OnDisconnect}, []byte{b})
}

// own makes the hook store the gateway's retained topics under prefix.
// A prefix owned twice (two sinks) keeps the smaller bounds.
func (h *retainedHook) own(prefix string, p RetainPolicy, pinned ...string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var st *retainedStore
	for _, s := range h.stores {
		if s.prefix == prefix {
			st = s
		}
	}
	if st == nil {
		st = newRetainedStore(prefix, p, h.now)
		h.stores = append(h.stores, st)
		// Longest prefix first, so a nested prefix's store wins.
		for i := len(h.stores) - 1; i > 0 && len(h.stores[i].prefix) > len(h.stores[i-1].prefix); i-- {
			h.stores[i], h.stores[i-1] = h.stores[i-1], h.stores[i]
		}
	} else {
		np := p.withDefaults()
		st.mu.Lock()
		st.policy.MaxAge = min(st.policy.MaxAge, np.MaxAge)
		st.policy.MaxTopics = min(st.policy.MaxTopics, np.MaxTopics)
		st.policy.MaxBytes = min(st.policy.MaxBytes, np.MaxBytes)
		st.mu.Unlock()
	}
	for _, t := range pinned {
		st.pin(t)
	}
}

func (h *retainedHook) storeFor(topic string) *retainedStore {
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, s := range h.stores {
		if s.owns(topic) {
			return s
		}
	}
	return nil
}

func (h *retainedHook) allStores() []*retainedStore {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return append([]*retainedStore(nil), h.stores...)
}

// OnPublish keeps the gateway's retained publishes under owned prefixes.
func (h *retainedHook) OnPublish(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	if !pk.FixedHeader.Retain {
		return pk, nil
	}
	st := h.storeFor(pk.TopicName)
	if st == nil {
		return pk, nil
	}
	if !cl.Net.Inline {
		// A client may publish under an owned prefix only where it is not
		// reserved (the Home Assistant discovery prefix): its retained
		// message replaces the gateway's, which mochi's index then holds
		// (an empty one, Home Assistant deleting an entity, removes both).
		st.set(pk.TopicName, nil, 0)
		return pk, nil
	}
	cleared := st.set(pk.TopicName, pk.Payload, pk.FixedHeader.Qos)
	pk.FixedHeader.Retain = false
	if len(cleared) > 0 {
		h.capBit(st, len(cleared))
		h.announce(st, cleared)
	}
	return pk, nil
}

// capBit logs evictions, at most once per capLogInterval.
func (h *retainedHook) capBit(st *retainedStore, topics int) {
	n := h.evictedSince.Add(uint64(topics))
	now := h.now().UnixNano()
	last := h.lastCapLog.Load()
	if now-last < int64(capLogInterval) || !h.lastCapLog.CompareAndSwap(last, now) {
		return
	}
	h.evictedSince.Add(-n)
	st.mu.Lock()
	p, stats := st.policy, st.stats
	st.mu.Unlock()
	h.log.Warn().Str("prefix", st.prefix).Int("max_topics", p.MaxTopics).Int64("max_bytes", p.MaxBytes).
		Int("topics", stats.Topics).Int64("bytes", stats.Bytes).Uint64("evicted_topics", n).
		Msg("retained cap reached: cleared the devices heard of longest ago")
}

// announce tells current subscribers that cleared topics hold nothing now,
// unless a new value arrived meanwhile.
func (h *retainedHook) announce(st *retainedStore, cleared []clearedTopic) {
	for _, c := range cleared {
		if st.has(c.topic) {
			continue
		}
		if err := h.srv.Publish(c.topic, nil, false, c.qos); err != nil {
			h.log.Debug().Err(err).Str("topic", c.topic).Msg("announce cleared retained topic")
		}
	}
}

// sweep clears devices past their MaxAge in every store.
func (h *retainedHook) sweep() {
	for _, st := range h.allStores() {
		cleared := st.sweep()
		if len(cleared) == 0 {
			continue
		}
		h.log.Info().Str("prefix", st.prefix).Int("topics", len(cleared)).Stringer("max_age", st.policy.MaxAge).
			Msg("retained topics of silent devices cleared")
		h.announce(st, cleared)
	}
}

// sweepLoop runs sweep every interval until done closes.
func (h *retainedHook) sweepLoop(interval time.Duration, done <-chan struct{}) {
	clock.Every(done, interval, h.sweep)
}

func (h *retainedHook) stats() RetainedStats {
	var out RetainedStats
	for _, st := range h.allStores() {
		s := st.statsNow()
		out.Topics += s.Topics
		out.Devices += s.Devices
		out.Bytes += s.Bytes
		out.EvictedTopics += s.EvictedTopics
		out.EvictedDevices += s.EvictedDevices
		out.ExpiredTopics += s.ExpiredTopics
		out.ExpiredDevices += s.ExpiredDevices
	}
	return out
}

// OnSubscribe notes which filters the client held already (RetainHandling 1
// sends retained messages only for new subscriptions).
func (h *retainedHook) OnSubscribe(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if cl.Net.Inline {
		return pk
	}
	p := &pendingSubscribe{packetID: pk.PacketID, filters: pk.Filters, existed: make([]bool, len(pk.Filters))}
	for i, f := range pk.Filters {
		_, p.existed[i] = cl.State.Subscriptions.Get(f.Filter)
	}
	h.mu.Lock()
	h.pending[cl] = p
	h.mu.Unlock()
	return pk
}

// OnSubscribed records the granted QoS of each filter (≥ 0x80: refused).
func (h *retainedHook) OnSubscribed(cl *mqtt.Client, pk packets.Packet, reasonCodes []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if p := h.pending[cl]; p != nil && p.packetID == pk.PacketID {
		p.filters = pk.Filters
		p.granted = append([]byte(nil), reasonCodes...)
	}
}

// OnPacketSent queues the retained topics of a subscription for delivery
// once its SUBACK is out.
func (h *retainedHook) OnPacketSent(cl *mqtt.Client, pk packets.Packet, _ []byte) {
	if pk.FixedHeader.Type != packets.Suback {
		return
	}
	h.mu.Lock()
	p := h.pending[cl]
	if p != nil && p.packetID == pk.PacketID {
		delete(h.pending, cl)
	} else {
		p = nil
	}
	h.mu.Unlock()
	if p == nil || len(p.granted) != len(p.filters) {
		return
	}
	for i, sub := range p.filters {
		if p.granted[i] >= packets.ErrUnspecifiedError.Code {
			continue
		}
		if mqtt.IsSharedFilter(sub.Filter) { // no retained messages for $share
			continue
		}
		if sub.RetainHandling == 2 || sub.RetainHandling == 1 && p.existed[i] {
			continue
		}
		sub.Qos = p.granted[i]
		h.enqueue(cl, sub)
	}
}

// enqueue hands sub to cl's sender, starting one if none runs.
func (h *retainedHook) enqueue(cl *mqtt.Client, sub packets.Subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	sd := h.senders[cl]
	if sd == nil {
		sd = &sender{}
		h.senders[cl] = sd
		h.wg.Add(1)
		go h.run(cl, sd)
	}
	if len(sd.jobs) >= maxQueuedDeliveries {
		h.log.Warn().Str("client", cl.ID).Str("filter", sub.Filter).Msg("too many subscriptions waiting for retained messages: none sent for this one")
		return
	}
	sd.jobs = append(sd.jobs, sub)
}

// run delivers sd's jobs until none is left.
func (h *retainedHook) run(cl *mqtt.Client, sd *sender) {
	defer h.wg.Done()
	for {
		h.mu.Lock()
		if len(sd.jobs) == 0 || cl.Closed() {
			delete(h.senders, cl)
			h.mu.Unlock()
			return
		}
		sub := sd.jobs[0]
		sd.jobs = sd.jobs[1:]
		h.mu.Unlock()
		h.deliver(cl, sub)
	}
}

// wait returns once every sender has stopped (their clients are closed).
func (h *retainedHook) wait() { h.wg.Wait() }

// OnDisconnect drops a SUBSCRIBE whose SUBACK was never sent.
func (h *retainedHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	h.mu.Lock()
	delete(h.pending, cl)
	h.mu.Unlock()
}

// deliver sends every retained topic sub matches to cl.
func (h *retainedHook) deliver(cl *mqtt.Client, sub packets.Subscription) {
	f := strings.Split(sub.Filter, "/")
	var batch []retainedMsg
	for _, st := range h.allStores() {
		for _, d := range st.candidates(f) {
			batch = st.matches(batch[:0], d, f)
			for _, m := range batch {
				if cl.Closed() {
					return
				}
				if !h.acl(cl, m.topic, false) {
					continue
				}
				if !h.send(cl, sub, m) {
					return
				}
			}
		}
	}
}

// send writes one retained message to cl with the QoS bookkeeping mochi's
// publishToClient does (it is unexported): a QoS>0 message is put in the
// client's inflight store before it is written, so the client's ack
// completes it and a persistent session resends it after a reconnect.
// Unlike mochi, a full in-flight window is waited out (up to inflightWait
// without progress) instead of dropping the rest. false: stop delivering.
func (h *retainedHook) send(cl *mqtt.Client, sub packets.Subscription, m retainedMsg) bool {
	out := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Retain: true, Qos: min(m.qos, sub.Qos, h.maxQ)},
		TopicName:   m.topic,
		Payload:     []byte(m.payload),
		Created:     h.now().Unix(),
		Origin:      mqtt.InlineClientId,
	}
	if sub.Identifier > 0 && cl.Properties.ProtocolVersion == 5 {
		out.Properties.SubscriptionIdentifier = []int{sub.Identifier}
	}
	if out.FixedHeader.Qos > 0 {
		window := int(h.srv.Options.Capabilities.MaximumInflight)
		if rm := int(cl.Properties.Props.ReceiveMaximum); rm > 0 {
			window = min(window, rm)
		}
		if !waitInflightRoom(cl, window) {
			atomic.AddInt64(&h.srv.Info.InflightDropped, 1)
			h.log.Info().Str("client", cl.ID).Str("filter", sub.Filter).Msg("retained delivery stopped: the client acks nothing")
			return false
		}
		id, err := cl.NextPacketID()
		if err != nil {
			atomic.AddInt64(&h.srv.Info.InflightDropped, 1)
			return false
		}
		out.PacketID = uint16(id)
		if cl.State.Inflight.Set(out) {
			atomic.AddInt64(&h.srv.Info.Inflight, 1)
			cl.State.Inflight.DecreaseSendQuota()
		}
	}
	if err := cl.WritePacket(out); err != nil {
		h.log.Debug().Err(err).Str("client", cl.ID).Str("topic", m.topic).Msg("send retained message")
		return false
	}
	return true
}

// waitInflightRoom waits until cl has fewer than window messages in
// flight, polling: mochi signals no ack to hooks but OnQosComplete, which
// its own quirks make unreliable (client ids reused for inbound QoS).
func waitInflightRoom(cl *mqtt.Client, window int) bool {
	deadline := time.Now().Add(inflightWait)
	last := cl.State.Inflight.Len()
	for n := last; n >= window; n = cl.State.Inflight.Len() {
		if cl.Closed() {
			return false
		}
		if n < last { // progress: the client acks
			deadline = time.Now().Add(inflightWait)
		}
		last = n
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

var _ mqtt.Hook = (*retainedHook)(nil)
