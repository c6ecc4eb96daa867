package broker

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/rs/zerolog"
)

// The durable-subscriber machinery inside mochi (v2.7.9). A durable client
// is one MQTT client id declared in Config.Subscribers; its Subscriber sink
// sends it the queue's messages itself and moves the queue cursor only on
// the client's PUBACK (PUBCOMP at QoS 2). This hook:
//   - keeps the client out of mochi's ordinary fan-out for the topics the
//     durable path covers (OnSelectSubscribers; mochi calls it only when a
//     $share subscription matches, hence one sentinel $share subscription
//     per durable topic prefix, held by a client id nobody may use);
//   - refuses a connection with that client id under another username
//     (OnConnect answers CONNACK "not authorized" itself: mochi OR-s the
//     OnConnectAuthenticate hooks, so a second hook cannot refuse there);
//   - follows the client's connections, subscriptions and acknowledgements.
//     PUBACKs are read in OnPacketRead: mochi's Inflight map is shared by
//     both directions, so its own bookkeeping (OnQosComplete) can be fooled
//     by a client publish reusing a packet id, the packet read cannot;
//   - counts what mochi drops for ordinary subscribers, per client.

const (
	// sentinelClient holds the sentinel subscriptions; connections with
	// this id are refused.
	sentinelClient = "$wittra-durable-sentinel"
	sentinelGroup  = "wittra-durable"

	// DefaultSubscribeSettle is how long after a durable client's first
	// subscription on a fresh connection a message matching none of its
	// subscriptions waits for the SUBSCRIBEs that usually follow instead of
	// being skipped: a client subscribing to "data" and then to "event"
	// must not lose the events in between. Matching messages go at once.
	DefaultSubscribeSettle = 500 * time.Millisecond
)

// subscriberHook is the one mochi hook of every durable client.
type subscriberHook struct {
	mqtt.HookBase
	srv    *mqtt.Server
	log    zerolog.Logger
	users  bool                // broker users exist: a durable id belongs to its username
	byID   map[string]*durable // fixed once the broker serves
	list   []*durable
	drops  *dropCounter
	settle time.Duration
}

func newSubscriberHook(srv *mqtt.Server, cfgs []SubscriberConfig, users bool, log zerolog.Logger) (*subscriberHook, error) {
	h := &subscriberHook{
		srv:    srv,
		log:    log,
		users:  users,
		byID:   make(map[string]*durable, len(cfgs)),
		drops:  newDropCounter(log),
		settle: DefaultSubscribeSettle,
	}
	prefixes := map[string]bool{}
	for _, c := range cfgs {
		if err := c.Validate(); err != nil {
			return nil, fmt.Errorf("durable subscriber %s: %w", c.ClientID, err)
		}
		if _, dup := h.byID[c.ClientID]; dup {
			return nil, errDuplicateClientID(c.ClientID)
		}
		d := &durable{cfg: c.withDefaults(), wake: make(chan struct{}, 1)}
		h.byID[c.ClientID] = d
		h.list = append(h.list, d)
		prefixes[d.cfg.TopicPrefix] = true
	}
	for p := range prefixes {
		srv.Topics.Subscribe(sentinelClient, packets.Subscription{Filter: "$share/" + sentinelGroup + "/" + p + "/#"})
	}
	return h, nil
}

// ID returns the hook's name in mochi's logs.
func (h *subscriberHook) ID() string { return "wittra-durable-subscribers" }

// Provides lists the events the hook handles.
func (h *subscriberHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnPublishDropped:
		return true
	case mqtt.OnConnect, mqtt.OnSessionEstablish, mqtt.OnSessionEstablished, mqtt.OnDisconnect,
		mqtt.OnSubscribed, mqtt.OnUnsubscribed, mqtt.OnPacketRead, mqtt.OnPacketProcessed, mqtt.OnSelectSubscribers:
		return len(h.list) > 0
	}
	return false
}

// OnConnect refuses the sentinel id, and a durable id under a username
// other than its own (when the broker has users), with CONNACK "not
// authorized"; the existing session is left untouched.
func (h *subscriberHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	refuse := cl.ID == sentinelClient
	if d := h.byID[cl.ID]; d != nil && h.users && string(pk.Connect.Username) != d.cfg.Username {
		refuse = true
	}
	if !refuse {
		return nil
	}
	h.log.Warn().Str("client", cl.ID).Str("username", string(pk.Connect.Username)).Str("remote", cl.Net.Remote).
		Str("listener", cl.Net.Listener).Msg("broker connect refused: this client id is a durable subscriber of another user")
	code := packets.ErrNotAuthorized // 0x87
	if cl.Properties.ProtocolVersion < 5 {
		// mochi maps this one to the v3 return code 5 "not authorized"
		// (it leaves 0x87 unmapped, which a v3 client cannot read).
		code = packets.ErrBadUsernameOrPassword
	}
	_ = h.srv.SendConnack(cl, code, false, nil)
	return packets.ErrNotAuthorized
}

// OnSessionEstablish runs before mochi hands an existing session over to
// the new connection: the old connection's unacknowledged publications are
// taken out of the session first, so mochi does not resend them (the sink
// resends from its cursor).
func (h *subscriberHook) OnSessionEstablish(cl *mqtt.Client, _ packets.Packet) {
	d := h.byID[cl.ID]
	if d == nil {
		return
	}
	if old, ok := h.srv.Clients.Get(cl.ID); ok {
		d.detach(old, &h.srv.Info.Inflight)
	}
}

// OnSessionEstablished makes cl the durable client's connection.
func (h *subscriberHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	if d := h.byID[cl.ID]; d != nil {
		d.attach(cl)
	}
}

// OnDisconnect ends delivery on cl. After a takeover it may arrive after the
// new connection's OnSessionEstablished; detach ignores a connection that is
// no longer current.
func (h *subscriberHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	if d := h.byID[cl.ID]; d != nil {
		d.detach(cl, &h.srv.Info.Inflight)
	}
}

// OnSubscribed and OnUnsubscribed make the sink reread the subscriptions.
func (h *subscriberHook) OnSubscribed(cl *mqtt.Client, _ packets.Packet, codes []byte) {
	d := h.byID[cl.ID]
	if d == nil {
		return
	}
	granted := false
	for _, c := range codes {
		granted = granted || c <= 2
	}
	d.subscribed(cl, granted, h.settle)
}

func (h *subscriberHook) OnUnsubscribed(cl *mqtt.Client, _ packets.Packet) {
	if d := h.byID[cl.ID]; d != nil {
		d.subscribed(cl, false, 0)
	}
}

// OnPacketRead takes the client's PUBACK and PUBCOMP (and a refusing
// PUBREC, which ends a QoS 2 flow) as the acknowledgement of the
// publication the sink sent with that packet id on that connection.
func (h *subscriberHook) OnPacketRead(cl *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	switch pk.FixedHeader.Type {
	case packets.Puback, packets.Pubcomp:
	case packets.Pubrec:
		if pk.ReasonCode < packets.ErrUnspecifiedError.Code {
			return pk, nil
		}
	default:
		return pk, nil
	}
	if d := h.byID[cl.ID]; d != nil {
		d.acked(cl, pk.PacketID, pk.ReasonCode >= packets.ErrUnspecifiedError.Code)
	}
	return pk, nil
}

// OnPacketProcessed restores the sink's Inflight entry that mochi deleted
// because the client published with the same packet id (mochi keeps both
// directions in one map): the id stays reserved, so mochi's own fan-out to
// the client cannot reuse it while the sink's publication is unacknowledged.
func (h *subscriberHook) OnPacketProcessed(cl *mqtt.Client, pk packets.Packet, _ error) {
	if pk.FixedHeader.Type != packets.Publish && pk.FixedHeader.Type != packets.Pubrel {
		return
	}
	if d := h.byID[cl.ID]; d != nil && pk.PacketID != 0 {
		d.restore(cl, pk.PacketID, &h.srv.Info.Inflight)
	}
}

// OnSelectSubscribers removes each durable client from the fan-out of the
// topics its sink delivers itself, and the sentinel from every share group.
func (h *subscriberHook) OnSelectSubscribers(subs *mqtt.Subscribers, pk packets.Packet) *mqtt.Subscribers {
	for _, d := range h.list {
		if d.covers(pk.TopicName) {
			delete(subs.Subscriptions, d.cfg.ClientID)
			for _, group := range subs.Shared {
				delete(group, d.cfg.ClientID)
			}
		}
	}
	for name, group := range subs.Shared {
		delete(group, sentinelClient)
		if len(group) == 0 {
			delete(subs.Shared, name)
		}
	}
	return subs
}

// OnPublishDropped counts a message mochi dropped because the client's
// outbound queue was full.
func (h *subscriberHook) OnPublishDropped(cl *mqtt.Client, _ packets.Packet) {
	h.drops.add(cl.ID)
}

// ---------------------------------------------------------------------------
// One durable client's state, shared by the hook and the sink.

// pubKey names one publication: number n of the message with queue seq.
type pubKey struct {
	seq uint64
	n   int
}

// durable is one durable client id.
type durable struct {
	cfg  SubscriberConfig
	wake chan struct{} // capacity 1: something changed for the sink

	mu      sync.Mutex
	cur     *dconn    // nil while the client is away
	sink    bool      // a Subscriber is attached
	changed time.Time // when the client last connected, subscribed or left
}

// dconn is one connection of a durable client.
type dconn struct {
	cl       *mqtt.Client
	dead     bool
	readyAt  time.Time // zero until it holds a subscription
	settle   time.Time // until then an unmatched message waits instead of being skipped
	subsGen  uint64    // bumped when the subscriptions change
	inflight map[uint16]inflightEntry
	inBytes  int        // encoded bytes of the inflight publications
	acked    []ackedKey // acknowledgements the sink has not consumed yet
	// roomWait: the sink waits for room in its window to send more; an
	// acknowledgement wakes it only once at most roomCount publications
	// and roomBytes bytes are in flight (one wake-up per few hundred
	// acknowledgements instead of one each).
	roomWait  bool
	roomCount int
	roomBytes int
}

type inflightEntry struct {
	key   pubKey
	qos   byte
	bytes int
}

type ackedKey struct {
	key     pubKey
	refused bool // a v5 PUBACK/PUBREC with an error reason code
}

func (d *durable) signal() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

func (d *durable) attach(cl *mqtt.Client) {
	d.mu.Lock()
	c := &dconn{cl: cl, inflight: make(map[uint16]inflightEntry)}
	if cl.State.Subscriptions.Len() > 0 {
		c.readyAt = time.Now() // a resumed session: its subscriptions are all there
	}
	if d.cur != nil {
		d.cur.dead = true
	}
	d.cur = c
	d.changed = time.Now()
	d.mu.Unlock()
	d.signal()
}

// detach ends delivery on cl if it is the current connection, and takes
// the sink's unacknowledged publications out of cl's session.
func (d *durable) detach(cl *mqtt.Client, infoInflight *int64) {
	d.mu.Lock()
	c := d.cur
	if c == nil || c.cl != cl {
		d.mu.Unlock()
		return
	}
	c.dead = true
	d.cur = nil
	d.changed = time.Now()
	for id := range c.inflight {
		if cl.State.Inflight.Delete(id) {
			atomic.AddInt64(infoInflight, -1)
		}
	}
	clear(c.inflight)
	c.inBytes = 0
	d.mu.Unlock()
	d.signal()
}

func (d *durable) subscribed(cl *mqtt.Client, granted bool, settle time.Duration) {
	d.mu.Lock()
	if c := d.cur; c != nil && c.cl == cl {
		c.subsGen++
		if granted && c.readyAt.IsZero() {
			c.readyAt = time.Now()
			c.settle = c.readyAt.Add(settle)
			d.changed = c.readyAt
		}
	}
	d.mu.Unlock()
	d.signal()
}

func (d *durable) acked(cl *mqtt.Client, id uint16, refused bool) {
	d.mu.Lock()
	c := d.cur
	if c == nil || c.cl != cl {
		d.mu.Unlock()
		return
	}
	e, ok := c.inflight[id]
	if !ok {
		d.mu.Unlock()
		return
	}
	delete(c.inflight, id)
	c.inBytes -= e.bytes
	c.acked = append(c.acked, ackedKey{key: e.key, refused: refused})
	quiet := c.roomWait && (len(c.inflight) > c.roomCount || c.inBytes > c.roomBytes)
	if !quiet {
		c.roomWait = false
	}
	d.mu.Unlock()
	if !quiet {
		d.signal()
	}
}

func (d *durable) restore(cl *mqtt.Client, id uint16, infoInflight *int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := d.cur
	if c == nil || c.cl != cl {
		return
	}
	e, ok := c.inflight[id]
	if !ok {
		return
	}
	if _, held := cl.State.Inflight.Get(id); held {
		return // the client's own QoS 2 flow holds it until its PUBREL
	}
	stub := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: e.qos}, PacketID: id, Created: time.Now().Unix()}
	if cl.State.Inflight.Set(stub) {
		atomic.AddInt64(infoInflight, 1)
	}
}

// covers reports whether the durable path delivers topic: the data and
// event topics under the prefix, and with values every other topic under
// it but the gateway's status topic.
func (d *durable) covers(topic string) bool {
	rest, ok := strings.CutPrefix(topic, d.cfg.TopicPrefix+"/")
	if !ok {
		return false
	}
	if rest == "gateway/"+d.cfg.GatewayID+"/status" {
		return false
	}
	levels := strings.Count(rest, "/") + 1
	if levels < 3 {
		return false
	}
	if d.cfg.Values {
		return true
	}
	return levels == 3 && (strings.HasSuffix(rest, "/data") || strings.HasSuffix(rest, "/event"))
}

// ---------------------------------------------------------------------------
// Drops of ordinary subscribers.

const (
	// dropReportInterval is the least time between two drop reports of one
	// client in the log.
	dropReportInterval = time.Minute
	// maxDropClients bounds the clients counted by name; the rest are
	// counted under dropOther.
	maxDropClients = 100
	dropOther      = "_other"
)

// dropCounter counts messages mochi dropped per client, and logs at most
// once per dropReportInterval per client how many were lost since the last
// report. It holds at most maxDropClients+1 entries.
type dropCounter struct {
	log      zerolog.Logger
	interval time.Duration
	first    time.Duration // delay of a client's first report, to gather a burst

	mu      sync.Mutex
	clients map[string]*dropEntry
	closed  bool
}

type dropEntry struct {
	total    uint64
	pending  uint64 // since the last report
	last     time.Time
	timer    *time.Timer
	reported bool
}

func newDropCounter(log zerolog.Logger) *dropCounter {
	return &dropCounter{log: log, interval: dropReportInterval, first: time.Second, clients: make(map[string]*dropEntry)}
}

func (c *dropCounter) add(client string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.clients[client]
	if e == nil {
		if len(c.clients) >= maxDropClients {
			client = dropOther
			e = c.clients[client]
		}
		if e == nil {
			e = &dropEntry{}
			c.clients[client] = e
		}
	}
	e.total++
	e.pending++
	if e.timer != nil || c.closed {
		return
	}
	wait := c.first
	if e.reported {
		wait = max(c.first, time.Until(e.last.Add(c.interval)))
	}
	e.timer = time.AfterFunc(wait, func() { c.report(client) })
}

func (c *dropCounter) report(client string) {
	c.mu.Lock()
	e := c.clients[client]
	n, total := e.pending, e.total
	e.pending, e.timer, e.reported, e.last = 0, nil, true, time.Now()
	c.mu.Unlock()
	if n == 0 {
		return
	}
	c.log.Warn().Str("client", client).Uint64("dropped", n).Uint64("dropped_total", total).
		Msg("broker dropped messages for a subscriber that did not keep up (best effort); declare it a sink of type subscriber so that it loses nothing")
}

// totals returns the dropped messages per client since start.
func (c *dropCounter) totals() map[string]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]uint64, len(c.clients))
	for k, e := range c.clients {
		out[k] = e.total
	}
	return out
}

func (c *dropCounter) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for _, e := range c.clients {
		if e.timer != nil {
			e.timer.Stop()
			e.timer = nil
		}
	}
}
