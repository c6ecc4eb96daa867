package mqttclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/zerolog"

	"wittra-gateway/sinks"
	"wittra-gateway/sinks/devicetopics"
)

// Errors a Publish or Close can wrap.
var (
	ErrClosed         = errors.New("mqtt sink closed")
	ErrConnectionLost = errors.New("connection lost before acknowledgement")
	ErrAckTimeout     = errors.New("no acknowledgement in time")
)

const (
	// closeWait bounds how long Close waits for the broker to acknowledge
	// the retained "offline" status.
	closeWait = 2 * time.Second
	// disconnectQuiesce is how long (ms) paho may take to send DISCONNECT.
	disconnectQuiesce = 250
	// pollInterval is how often a waiting Publish re-checks the connection
	// besides being woken by the supervisor.
	pollInterval = 250 * time.Millisecond
	// stuckAfter is how long a connection may still look fine after paho
	// failed a publication on it before the sink takes it for wedged.
	stuckAfter = time.Second
	// stableAfter is how long after a connection loss another loss counts
	// as a separate incident, retried at once, rather than a flapping
	// connection, retried with backoff.
	stableAfter = 10 * time.Second
)

// Sink publishes messages to an external MQTT broker (see the package doc
// for what counts as delivered).
//
// Each connection is its own paho client, with AutoReconnect off: a
// supervisor goroutine connects a client, watches it until the connection
// is lost (or the sink drops it), discards it and connects a new one with
// backoff. paho's own reconnect is not used because it does not keep
// order: a Publish blocked inside paho when the connection drops is
// written on the next connection ahead of the older packets paho resends
// from its store, and it completes the resent packets' old tokens without
// a PUBACK (#563). A client that is never reconnected completes a token
// only on PUBACK (QoS 1), PUBCOMP (QoS 2) or the write (QoS 0) on its one
// connection, and fails the rest when that connection is lost.
//
// On top of that, the connection epoch, bumped by the supervisor whenever
// a connection comes up or goes away, must be unchanged from the moment a
// Publish checked the connection to the moment it accepts a completed
// token: a completion observed after a loss is not trusted.
type Sink struct {
	cfg    Config
	broker *url.URL
	tls    *tls.Config
	status string // status topic
	log    zerolog.Logger

	mu      sync.Mutex
	epoch   atomic.Uint64 // changed only with mu held; read without it by current
	client  paho.Client   // the connected client, nil while there is none
	wake    chan struct{} // closed and replaced on connection events and at Close
	closed  bool
	done    chan struct{}    // closed by Close
	drop    chan dropRequest // Publish asks the supervisor to drop a client's connection
	lastErr string           // last connection failure, for Publish errors
	since   time.Time        // when client last became set or nil (status page)
	bg      sync.WaitGroup   // supervisor and "online" announcements

	topics *devicetopics.Topics // state topic and discovery; nil when off

	// Used by Publish only, which the forwarder calls from one goroutine.
	pubs     []sinks.Publication
	inflight ring
	timer    *time.Timer
}

var _ sinks.Sink = (*Sink)(nil)

// New validates cfg, loads the TLS files and starts connecting in the
// background: a broker that is down at start is normal, and New never
// waits for the network. The connection is retried until Close.
func New(cfg Config, log zerolog.Logger) (*Sink, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("mqtt sink %s: %w", cfg.Name, err)
	}
	broker, secure, err := parseBrokerURL(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("mqtt sink %s: url %q: %w", cfg.Name, cfg.URL, err)
	}
	var tc *tls.Config
	switch {
	case secure:
		if tc, err = cfg.TLS.Client(); err != nil {
			return nil, fmt.Errorf("mqtt sink %s: %w", cfg.Name, err)
		}
	case !cfg.TLS.IsZero():
		return nil, fmt.Errorf("mqtt sink %s: tls settings need an ssl:// or wss:// url, not %s://", cfg.Name, broker.Scheme)
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	s := &Sink{
		cfg:      cfg,
		broker:   broker,
		tls:      tc,
		status:   sinks.StatusTopic(cfg.TopicPrefix, cfg.GatewayID),
		log:      log.With().Str("component", "mqttclient").Str("sink", cfg.Name).Logger(),
		wake:     make(chan struct{}),
		done:     make(chan struct{}),
		drop:     make(chan dropRequest, 1),
		inflight: ring{buf: make([]pending, cfg.Window)},
		timer:    timer,
		since:    time.Now(),
	}
	ev := s.log.Info().Str("url", broker.Redacted()).Str("client_id", cfg.ClientID).Int("qos", int(cfg.QoS))
	if cfg.Username != "" {
		ev = ev.Str("username", cfg.Username)
	}
	ev.Msg("connecting to broker")
	if tc != nil && tc.InsecureSkipVerify {
		s.log.Warn().Msg("tls insecure_skip_verify is set: the broker's certificate is not checked")
	}
	if err := s.startDeviceTopics(); err != nil {
		return nil, fmt.Errorf("mqtt sink %s: %w", cfg.Name, err)
	}
	s.bg.Add(1)
	go s.supervise()
	return s, nil
}

// newClient builds the paho client of one connection; lost receives the
// reason when that connection is lost.
func (s *Sink) newClient() (c paho.Client, lost <-chan error) {
	ch := make(chan error, 1)
	o := paho.NewClientOptions().
		AddBroker(s.broker.String()).
		SetClientID(s.cfg.ClientID).
		SetUsername(s.cfg.Username).
		SetPassword(s.cfg.Password).
		SetProtocolVersion(4). // MQTT 3.1.1, no silent fallback to 3.1
		// Clean session: the bbolt queue owns durability, and the forwarder
		// resends whatever is unproven on the next connection. A persistent
		// session would make broker and paho replay packets across
		// connections, out of order with the forwarder's retries, and needs
		// a store paho can neither bound nor fsync.
		SetCleanSession(true).
		SetOrderMatters(false). // never block paho's router (the only handler, Home Assistant's status, never blocks)
		SetStore(paho.NewOrderedMemoryStore()).
		SetAutoReconnect(false).               // one client per connection: see Sink
		SetConnectRetry(false).                // the supervisor retries, with backoff
		SetMaxResumePubInFlight(s.cfg.Window). // moot: a client never resumes
		SetWriteTimeout(writeTimeout).
		SetKeepAlive(keepAlive).
		SetPingTimeout(pingTimeout).
		SetConnectTimeout(connectTimeout).
		SetDialer(&net.Dialer{Timeout: connectTimeout}).
		SetWill(s.status, "offline", statusQoS, true).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			select {
			case ch <- err:
			default:
			}
		})
	if s.tls != nil {
		o.SetTLSConfig(s.tls)
	}
	s.subscribeHomeAssistant(o)
	return paho.NewClient(o), ch
}

// supervise connects, watches and replaces the client until Close. It
// logs one line per change of the connection's state.
func (s *Sink) supervise() {
	defer s.bg.Done()
	var (
		backoff       time.Duration // wait before the next attempt
		everConnected bool
		lastErr       string
		lastLoss      time.Time
	)
	for {
		if backoff > 0 && !s.sleep(backoff) {
			return
		}
		c, lost := s.newClient()
		tok := c.Connect()
		select {
		case <-tok.Done():
		case <-s.done:
			c.Disconnect(0)
			return
		}
		if err := tok.Error(); err != nil {
			backoff = s.grow(backoff)
			if err.Error() != lastErr { // once per distinct failure
				lastErr = err.Error()
				s.log.Warn().Err(err).Str("url", s.broker.Redacted()).Stringer("retry_in", backoff).
					Msg("cannot connect to broker; retrying")
			}
			s.mu.Lock()
			s.lastErr = lastErr
			s.mu.Unlock()
			continue
		}

		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Disconnect(disconnectQuiesce)
			return
		}
		s.epoch.Add(1)
		s.client, s.lastErr, lastErr = c, "", ""
		s.since = time.Now()
		s.wakeLocked()
		s.bg.Add(1)
		s.mu.Unlock()
		if everConnected {
			s.log.Info().Str("url", s.broker.Redacted()).Msg("reconnected to broker")
		} else {
			s.log.Info().Str("url", s.broker.Redacted()).Msg("connected to broker")
		}
		everConnected = true
		go func() {
			defer s.bg.Done()
			s.announce(c)
		}()

		var (
			why     error
			dropped bool
		)
	watch:
		for {
			select {
			case why = <-lost:
				break watch
			case d := <-s.drop:
				if d.c == c {
					c.Disconnect(disconnectQuiesce)
					why, dropped = d.why, true
					break watch
				}
			case <-s.done:
				return // Close says goodbye on c
			}
		}

		s.mu.Lock()
		s.epoch.Add(1)
		s.client = nil
		s.since = time.Now()
		s.wakeLocked()
		s.mu.Unlock()
		// Like paho: the first loss in a while is retried at once, a loss
		// soon after another (a broker that accepts and then drops the
		// client) waits as a failed attempt does.
		if now := time.Now(); lastLoss.IsZero() || now.Sub(lastLoss) >= stableAfter {
			backoff = 0
		} else {
			backoff = s.grow(backoff)
		}
		lastLoss = time.Now()
		msg := "connection to broker lost; reconnecting"
		if dropped {
			msg = "dropped the connection to broker; reconnecting"
		}
		s.log.Warn().Err(why).Str("url", s.broker.Redacted()).Stringer("retry_in", backoff).Msg(msg)
	}
}

// grow returns the wait after one more failure following a wait of b.
func (s *Sink) grow(b time.Duration) time.Duration {
	b = max(2*b, connectRetryInterval)
	return min(b, s.cfg.MaxReconnectInterval)
}

// sleep waits d; false if the sink closed meanwhile.
func (s *Sink) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.done:
		return false
	}
}

// wakeLocked wakes every goroutine waiting for a connection event.
func (s *Sink) wakeLocked() {
	close(s.wake)
	s.wake = make(chan struct{})
}

// announce publishes the retained "online" status on a fresh connection
// and logs if the broker does not acknowledge it.
func (s *Sink) announce(c paho.Client) {
	tok := c.Publish(s.status, statusQoS, true, "online")
	t := time.NewTimer(s.cfg.AckTimeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		if err := tok.Error(); err != nil {
			s.log.Warn().Err(err).Str("topic", s.status).Msg("publish online status")
		}
	case <-t.C:
		s.log.Warn().Str("topic", s.status).Stringer("timeout", s.cfg.AckTimeout).Msg("online status not acknowledged in time")
	case <-s.done:
	}
}

// dropRequest asks the supervisor to drop the connection of c.
type dropRequest struct {
	c   paho.Client
	why error
}

// dropConnection treats c's connection as broken, for reason why: Publish
// no longer uses it, and the supervisor disconnects it and connects a new
// client.
func (s *Sink) dropConnection(c paho.Client, why error) {
	s.mu.Lock()
	if s.client == c {
		s.epoch.Add(1)
		s.client = nil
		s.since = time.Now()
		s.wakeLocked()
	}
	s.mu.Unlock()
	select {
	case s.drop <- dropRequest{c, why}:
	default: // a drop is pending already
	}
}

// Name returns the sink's name.
func (s *Sink) Name() string { return s.cfg.Name }

// Connected reports whether the sink has a connection to the broker now.
func (s *Sink) Connected() bool {
	s.mu.Lock()
	c := s.client
	s.mu.Unlock()
	return c != nil && c.IsConnectionOpen()
}

// LinkState reports the connection for the status page. A connection paho
// already knows is closed counts as down, since when it came up.
func (s *Sink) LinkState() sinks.LinkState {
	s.mu.Lock()
	c, since, lastErr := s.client, s.since, s.lastErr
	s.mu.Unlock()
	return sinks.LinkState{Connected: c != nil && c.IsConnectionOpen(), Since: since, LastError: lastErr}
}

var _ sinks.Linked = (*Sink)(nil)

// Publish sends msgs in order and returns how many of them, from the
// start, are proven delivered (see the package doc). It first waits for a
// connection; if ctx ends while waiting it returns 0 and an error wrapping
// ctx.Err(). When fewer than all are delivered the error says why:
// ErrConnectionLost, ErrAckTimeout, a paho error, ErrClosed or ctx.Err().
func (s *Sink) Publish(ctx context.Context, msgs []sinks.Message) (n int, err error) {
	defer func() {
		if err != nil {
			s.topics.Undelivered(msgs[n:])
		}
	}()
	if len(msgs) == 0 {
		return 0, nil
	}
	c, e0, err := s.waitConnected(ctx)
	if err != nil {
		return 0, err
	}
	r := s.startRun(ctx, c, e0)
	defer r.end()
	for i, m := range msgs {
		if err := ctx.Err(); err != nil {
			return r.delivered, err
		}
		pubs, verr := sinks.Publications(s.pubs[:0], s.cfg.TopicPrefix, m, s.cfg.Values)
		pubs = s.topics.Add(pubs, m)
		s.pubs = pubs
		if verr != nil {
			s.log.Warn().Err(verr).Uint64("seq", m.Seq).Str("project", m.Project).Str("device", m.Device).
				Msg("values not published")
		}
		for j, p := range pubs {
			for s.inflight.n > 0 {
				// Settle what has completed; block only while the window is full.
				ok, err := r.settle(s.inflight.n >= len(s.inflight.buf))
				if err != nil {
					return r.delivered, err
				}
				if !ok {
					break
				}
			}
			// Never hand paho a publication without a live connection of
			// this epoch.
			if !r.current() {
				return r.delivered, fmt.Errorf("publish %s: %w", p.Topic, ErrConnectionLost)
			}
			r.send(p, i, j == len(pubs)-1)
		}
	}
	for s.inflight.n > 0 {
		if _, err := r.settle(true); err != nil {
			return r.delivered, err
		}
	}
	return len(msgs), nil
}

// waitConnected waits for a connected client and returns it with the
// epoch it was connected in.
func (s *Sink) waitConnected(ctx context.Context) (paho.Client, uint64, error) {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, 0, ErrClosed
		}
		c, e, wake, lastErr := s.client, s.epoch.Load(), s.wake, s.lastErr
		s.mu.Unlock()
		if c != nil && c.IsConnectionOpen() {
			return c, e, nil
		}
		s.timer.Reset(pollInterval)
		select {
		case <-ctx.Done():
			s.timer.Stop()
			if lastErr != "" {
				return nil, 0, fmt.Errorf("not connected to %s (last error: %s): %w", s.broker.Redacted(), lastErr, ctx.Err())
			}
			return nil, 0, fmt.Errorf("not connected to %s: %w", s.broker.Redacted(), ctx.Err())
		case <-wake:
			s.timer.Stop()
		case <-s.done:
			s.timer.Stop()
		case <-s.timer.C:
		}
	}
}

// run is the state of one Publish call. Publications go to paho through a
// feeder goroutine, in order: paho's Publish can block (up to its write
// timeout) when the connection dies under it, and the run must not.
type run struct {
	s         *Sink
	ctx       context.Context
	c         paho.Client
	epoch     uint64
	delivered int                    // leading messages proven delivered
	reqs      chan sinks.Publication // to the feeder
	toks      chan paho.Token        // from the feeder, in the order of reqs
	stop      chan struct{}          // closed when the run ends
	assigned  int                    // in-flight entries, from the oldest, that have their token
}

func (s *Sink) startRun(ctx context.Context, c paho.Client, epoch uint64) *run {
	r := &run{
		s:     s,
		ctx:   ctx,
		c:     c,
		epoch: epoch,
		// At most Window publications are in flight, so neither channel
		// ever blocks its sender.
		reqs: make(chan sinks.Publication, len(s.inflight.buf)),
		toks: make(chan paho.Token, len(s.inflight.buf)),
		stop: make(chan struct{}),
	}
	go feed(c, s.cfg.QoS, s.cfg.Retain, r.reqs, r.toks, r.stop)
	return r
}

// feed publishes reqs on c in order until reqs is closed or stop is. It may
// outlive its run by up to paho's write timeout when paho blocks.
func feed(c paho.Client, qos byte, retain bool, reqs <-chan sinks.Publication, toks chan<- paho.Token, stop <-chan struct{}) {
	for p := range reqs {
		select {
		case <-stop:
			return
		default:
		}
		toks <- c.Publish(p.Topic, qos, retain || p.Retain, p.Payload)
	}
}

// end stops the feeder and forgets the publications in flight.
func (r *run) end() {
	close(r.stop)
	close(r.reqs)
	clear(r.s.pubs) // don't pin message bodies
	r.s.inflight.reset()
}

// send queues publication p, of message msg (last: its last publication).
func (r *run) send(p sinks.Publication, msg int, last bool) {
	r.s.inflight.push(pending{topic: p.Topic, msg: msg, last: last, deadline: time.Now().Add(r.s.cfg.AckTimeout)})
	r.reqs <- p
}

// assign gives tok to the oldest in-flight publication without a token.
func (r *run) assign(tok paho.Token) {
	r.s.inflight.at(r.assigned).tok = tok
	r.assigned++
}

// current reports whether the connection the run publishes on is still the
// one it started on and is open.
func (r *run) current() bool {
	return r.s.epoch.Load() == r.epoch && r.c.IsConnectionOpen()
}

// settle waits for the oldest publication in flight (if block; otherwise
// only looks) and retires it. ok reports whether one was retired.
func (r *run) settle(block bool) (ok bool, err error) {
	s := r.s
	for {
		for collecting := true; collecting; {
			select {
			case tok := <-r.toks:
				r.assign(tok)
			default:
				collecting = false
			}
		}
		p := s.inflight.front()
		var done <-chan struct{} // nil until p has its token
		if r.assigned > 0 {
			done = p.tok.Done()
			select {
			case <-done:
				return r.retire()
			default:
			}
		}
		if !block {
			return false, nil
		}
		s.mu.Lock()
		wake := s.wake
		s.mu.Unlock()
		s.timer.Reset(time.Until(p.deadline))
		select {
		case <-done:
			s.timer.Stop()
			return r.retire()
		case tok := <-r.toks:
			s.timer.Stop()
			r.assign(tok)
		case <-wake: // a connection event: is ours still there?
			s.timer.Stop()
		case <-r.ctx.Done():
			s.timer.Stop()
			return false, r.ctx.Err()
		case <-s.done:
			s.timer.Stop()
			return false, ErrClosed
		case <-s.timer.C:
			if !r.current() {
				return false, fmt.Errorf("publish %s: %w", p.topic, ErrConnectionLost)
			}
			err := fmt.Errorf("publish %s: %w within %v", p.topic, ErrAckTimeout, s.cfg.AckTimeout)
			s.dropConnection(r.c, err)
			return false, err
		}
		if !r.current() {
			return false, fmt.Errorf("publish %s: %w", p.topic, ErrConnectionLost)
		}
	}
}

// retire takes the oldest publication, whose token has completed, out of
// flight if the completion proves delivery.
func (r *run) retire() (bool, error) {
	s := r.s
	p := *s.inflight.front()
	// Done (like WaitTimeout returning true) only says the flow ended.
	if err := p.tok.Error(); err != nil {
		err = fmt.Errorf("publish %s: %w", p.topic, err)
		if r.stuck() {
			// paho failed the publication (e.g. "publish was broken by
			// timeout", "no message IDs available") yet keeps the
			// connection: only a new client gets out of that.
			s.dropConnection(r.c, err)
		}
		return false, err
	}
	if !r.current() {
		return false, fmt.Errorf("publish %s: %w", p.topic, ErrConnectionLost)
	}
	s.inflight.pop()
	r.assigned--
	if p.last {
		r.delivered = p.msg + 1
	}
	return true, nil
}

// stuck reports whether the connection still looks current a while after
// a publication failed: paho notices a broken connection itself within
// moments (a failed write ends it), so one it keeps is wedged.
func (r *run) stuck() bool {
	deadline := time.Now().Add(stuckAfter)
	for r.current() {
		if time.Now().After(deadline) {
			return true
		}
		r.s.timer.Reset(stuckAfter / 20)
		select {
		case <-r.s.timer.C:
		case <-r.ctx.Done():
			r.s.timer.Stop()
			return false
		case <-r.s.done:
			r.s.timer.Stop()
			return false
		}
	}
	return false
}

// Close publishes the retained "offline" status if connected, waiting
// briefly for the broker to acknowledge it, and disconnects. After it,
// Publish returns ErrClosed; a second Close does nothing.
func (s *Sink) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	s.wakeLocked()
	s.mu.Unlock()

	// The supervisor and any "online" announcement end first (an
	// announcement stops at done or has been handed to paho), so that
	// "offline" is the last status published.
	err := s.waitBackground(ctx)
	s.mu.Lock()
	c := s.client // final now
	s.mu.Unlock()
	if c != nil {
		if err == nil && c.IsConnectionOpen() {
			err = s.publishOffline(ctx, c)
		}
		c.Disconnect(disconnectQuiesce)
	}
	s.log.Info().Msg("disconnected from broker")
	return err
}

// waitBackground waits for the sink's goroutines, or for ctx.
func (s *Sink) waitBackground(ctx context.Context) error {
	waited := make(chan struct{})
	go func() {
		s.bg.Wait()
		close(waited)
	}()
	select {
	case <-waited:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("close mqtt sink %s: %w", s.cfg.Name, ctx.Err())
	}
}

// publishOffline publishes the retained "offline" status on c and waits up
// to closeWait (or ctx) for its acknowledgement.
func (s *Sink) publishOffline(ctx context.Context, c paho.Client) error {
	result := make(chan error, 1)
	go func() { // paho's Publish itself may block up to writeTimeout
		tok := c.Publish(s.status, statusQoS, true, "offline")
		if !tok.WaitTimeout(closeWait) {
			result <- ErrAckTimeout // a timeout sets no error on the token
			return
		}
		result <- tok.Error()
	}()
	var err error
	select {
	case err = <-result:
	case <-ctx.Done():
		err = ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("publish %s offline: %w", s.status, err)
	}
	return nil
}

// pending is one publication in flight.
type pending struct {
	tok      paho.Token // nil until the feeder has handed it to paho
	topic    string
	msg      int  // index of its message in the Publish batch
	last     bool // last publication of that message
	deadline time.Time
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
