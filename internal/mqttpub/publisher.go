// Package mqttpub publishes to an MQTT 3.1.1 broker through paho and
// proves delivery: a publication counts only when its acknowledgement came
// on the connection it was sent on. The MQTT sinks (external broker,
// Cumulocity) share it and keep only their own protocol on top.
//
// Each connection is its own paho client, with AutoReconnect off and a
// clean session: a supervisor goroutine connects a client, runs the
// caller's OnConnect hook (subscribe, announce), offers the connection to
// Batches until it is lost (or dropped), then discards the client and
// connects a new one with backoff. paho's own reconnect is not used: after
// it, paho completes the resent packets' old tokens without a PUBACK
// (paho #563), writes a Publish that was blocked across the loss ahead of
// the older packets it resends (breaking order), and races with itself on
// the resent packets' DUP flag. A client that is never reconnected completes
// a token only on PUBACK (QoS 1), PUBCOMP (QoS 2) or the write (QoS 0) on
// its one connection, and fails the rest when that connection is lost.
//
// On top of that, the connection epoch, bumped whenever a connection comes
// up or goes away, must be unchanged from the moment a Batch took the
// connection to the moment it accepts a completed token: a completion
// observed after a loss is not trusted. paho is never fed while there is no
// connection (it would queue without bound until it runs out of packet ids,
// and drop QoS 0 while reporting success).
package mqttpub

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/rs/zerolog"

	"wittra-gateway/sinks"
)

// Errors a Batch, Begin or Close can wrap.
var (
	ErrClosed         = errors.New("mqtt publisher closed")
	ErrNotConnected   = errors.New("no connection in time")
	ErrConnectionLost = sinks.ErrConnectionLost
	ErrAckTimeout     = sinks.ErrAckTimeout
)

// Settings that are not configurable.
const (
	writeTimeout = 10 * time.Second // socket write deadline, and paho's wait to hand a publish over
	pingTimeout  = 10 * time.Second
	// maxQuiesce is how long paho may take to send DISCONNECT.
	maxQuiesce = 250 * time.Millisecond
	// pollInterval is how often a waiting Begin re-checks the connection
	// besides being woken by the supervisor.
	pollInterval = 250 * time.Millisecond
	// stuckAfter is how long a connection may still look fine after paho
	// failed a publication on it before it is taken for wedged.
	stuckAfter = time.Second
	// stableAfter is how long after a connection loss another loss counts
	// as a separate incident, retried at once, rather than a flapping
	// connection, retried with backoff.
	stableAfter = 10 * time.Second
)

// Message is one publication outside a Batch (will, status, announcement).
type Message struct {
	Topic   string
	QoS     byte
	Retain  bool
	Payload []byte
}

// Options configures a Publisher; New fills the zero durations.
type Options struct {
	Peer                         string   // names the other end in log lines: "broker", "Cumulocity"
	URL                          *url.URL // from ParseURL
	ClientID, Username, Password string
	TLS                          *tls.Config // for the TLS schemes; nil for plain ones
	Will                         *Message    // registered as the will; nil: none
	QoS                          byte        // of Batch publications: 0, 1 or 2
	Window                       int         // Batch publications in flight at most: 1..65535 (packet ids)
	// AckTimeout bounds the wait for one acknowledgement; a connection that
	// sits on one longer is taken for broken and dropped.
	AckTimeout time.Duration
	// RetryInterval is the first wait after a failed attempt (default 1 s),
	// doubling up to MaxRetryInterval (default 30 s).
	RetryInterval, MaxRetryInterval time.Duration
	ConnectTimeout                  time.Duration // dial and CONNACK; default 10 s
	KeepAlive                       time.Duration // default 30 s
	// OnConnect runs on every new connection before Batches may use it
	// (subscribe, announce). An error drops the connection, which is then
	// retried with backoff. ctx ends at Close.
	OnConnect func(ctx context.Context, c *Conn) error
}

// Publisher owns the connection to one broker (see the package doc).
type Publisher struct {
	o   Options
	log zerolog.Logger

	mu      sync.Mutex
	epoch   atomic.Uint64 // changed only with mu held; read without it by Conn.current
	conn    *Conn         // the newest connection, nil while there is none
	ready   bool          // conn passed OnConnect: Batches may use it
	wake    chan struct{} // closed and replaced on connection events and at Close
	closed  bool
	done    chan struct{} // closed by Close
	ctx     context.Context
	cancel  context.CancelFunc // ends ctx (OnConnect's) at Close
	drop    chan dropRequest   // a Batch asks the supervisor to drop a connection
	dialed  net.Conn           // the newest dialed connection (closed at Close while connecting)
	lastErr string             // last connection failure, for errors and LinkState
	since   time.Time          // when the link last came up or went down
	exited  chan struct{}      // closed when the supervisor ends

	// One Batch at a time (the sinks' Publish is not concurrent); it owns
	// the in-flight ring and the timer from Begin to End.
	batchMu  sync.Mutex
	inflight ring
	timer    *time.Timer
}

// Conn is one connection: a paho client and its epoch.
type Conn struct {
	p      *Publisher
	client paho.Client
	epoch  uint64
}

// dropRequest asks the supervisor to drop connection c.
type dropRequest struct {
	c   *Conn
	why error
}

// New checks o and starts connecting in the background; it never waits for
// the network. log is the caller's logger.
func New(o Options, log zerolog.Logger) (*Publisher, error) {
	switch {
	case o.URL == nil:
		return nil, errors.New("no broker url")
	case o.QoS > 2:
		return nil, fmt.Errorf("qos %d: must be 0, 1 or 2", o.QoS)
	case o.Window < 1 || o.Window > 65535:
		return nil, fmt.Errorf("window %d: must be between 1 and 65535", o.Window)
	case o.AckTimeout <= 0:
		return nil, fmt.Errorf("ack timeout %v: must be positive", o.AckTimeout)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.RetryInterval, time.Second)
	def(&o.MaxRetryInterval, 30*time.Second)
	def(&o.ConnectTimeout, 10*time.Second)
	def(&o.KeepAlive, 30*time.Second)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	p := &Publisher{
		o:        o,
		log:      log,
		wake:     make(chan struct{}),
		done:     make(chan struct{}),
		drop:     make(chan dropRequest, 1),
		exited:   make(chan struct{}),
		since:    time.Now(),
		inflight: ring{buf: make([]pending, o.Window)},
		timer:    timer,
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	ev := p.log.Info().Str("url", o.URL.Redacted()).Str("client_id", o.ClientID).Int("qos", int(o.QoS))
	if o.Username != "" {
		ev = ev.Str("username", o.Username)
	}
	ev.Msg("connecting to " + o.Peer)
	if o.TLS != nil && o.TLS.InsecureSkipVerify {
		p.log.Warn().Msg("tls insecure_skip_verify is set: the " + o.Peer + "'s certificate is not checked")
	}
	go p.supervise()
	return p, nil
}

// ParseURL checks raw, a broker URL with one of schemes, and fills in the
// default port of tcp and mqtt (1883) and of ssl, mqtts and tls (8883); ws
// and wss keep the URL's. secure reports a TLS scheme.
func ParseURL(raw string, schemes ...string) (u *url.URL, secure bool, err error) {
	u, err = url.Parse(raw)
	if err != nil {
		return nil, false, errors.New("not a valid URL")
	}
	if !slices.Contains(schemes, u.Scheme) {
		want := make([]string, len(schemes))
		for i, s := range schemes {
			want[i] = s + "://"
		}
		last := len(want) - 1
		return nil, false, fmt.Errorf("must start with %s or %s", strings.Join(want[:last], ", "), want[last])
	}
	port := ""
	switch u.Scheme {
	case "tcp", "mqtt":
		port = "1883"
	case "ssl", "mqtts", "tls":
		port, secure = "8883", true
	case "wss":
		secure = true
	}
	switch {
	case u.User != nil:
		return nil, false, errors.New("must not contain credentials: use username and password")
	case u.Hostname() == "":
		return nil, false, errors.New("must name a host")
	}
	if port != "" && u.Port() == "" {
		u.Host = net.JoinHostPort(u.Hostname(), port)
	}
	return u, secure, nil
}

// newClient builds the paho client of one connection; lost receives the
// reason when that connection is lost.
func (p *Publisher) newClient() (c paho.Client, lost <-chan error) {
	ch := make(chan error, 1)
	o := paho.NewClientOptions().
		AddBroker(p.o.URL.String()).
		SetClientID(p.o.ClientID).
		SetUsername(p.o.Username).
		SetPassword(p.o.Password).
		SetProtocolVersion(4). // MQTT 3.1.1, no silent fallback to 3.1
		// Clean session: the caller's queue owns durability and resends
		// whatever is unproven on the next connection. A persistent session
		// would make broker and paho replay packets across connections, out
		// of order with those retries, and needs a store paho can neither
		// bound nor fsync.
		SetCleanSession(true).
		SetOrderMatters(false). // handlers never block paho's router
		SetStore(paho.NewOrderedMemoryStore()).
		SetAutoReconnect(false).             // one client per connection: see the package doc
		SetConnectRetry(false).              // the supervisor retries, with backoff
		SetResumeSubs(false).                // subscriptions belong in OnConnect
		SetMaxResumePubInFlight(p.o.Window). // moot: a client never resumes
		SetWriteTimeout(writeTimeout).
		SetKeepAlive(p.o.KeepAlive).
		SetPingTimeout(pingTimeout).
		SetConnectTimeout(p.o.ConnectTimeout).
		SetCustomOpenConnectionFn(p.dial).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			select {
			case ch <- err:
			default:
			}
		})
	if w := p.o.Will; w != nil {
		o.SetBinaryWill(w.Topic, w.Payload, w.QoS, w.Retain)
	}
	if p.o.TLS != nil {
		o.SetTLSConfig(p.o.TLS)
	}
	return paho.NewClient(o), ch
}

// dial opens a connection for paho; a dial in progress ends at Close.
func (p *Publisher) dial(u *url.URL, o paho.ClientOptions) (net.Conn, error) {
	switch u.Scheme {
	case "ws", "wss":
		return paho.NewWebsocket(u.String(), o.TLSConfig, p.o.ConnectTimeout, o.HTTPHeaders, o.WebsocketOptions)
	}
	ctx, cancel := context.WithTimeout(p.ctx, p.o.ConnectTimeout)
	defer cancel()
	var c net.Conn
	var err error
	d := &net.Dialer{}
	if u.Scheme == "tcp" || u.Scheme == "mqtt" {
		c, err = d.DialContext(ctx, "tcp", u.Host)
	} else {
		td := tls.Dialer{NetDialer: d, Config: p.o.TLS}
		c, err = td.DialContext(ctx, "tcp", u.Host)
	}
	p.mu.Lock()
	p.dialed = c
	p.mu.Unlock()
	return c, err
}

// supervise connects, watches and replaces the client until Close. It
// logs one line per change of the connection's state.
func (p *Publisher) supervise() {
	defer close(p.exited)
	var (
		backoff       time.Duration // wait before the next attempt
		everConnected bool
		lastErr       string
		lastLoss      time.Time
	)
	url := p.o.URL.Redacted()
	for {
		if backoff > 0 && !p.sleep(backoff) {
			return
		}
		client, lost := p.newClient()
		tok := client.Connect()
		select {
		case <-tok.Done():
		case <-p.done:
			// The dial ends at Close, and so does a CONNECT in flight
			// (closing its connection), so that nothing of this publisher
			// outlives Close.
			p.mu.Lock()
			if p.dialed != nil {
				_ = p.dialed.Close()
			}
			p.mu.Unlock()
			tok.WaitTimeout(p.o.ConnectTimeout)
			client.Disconnect(0)
			return
		}
		if err := tok.Error(); err != nil {
			backoff = p.grow(backoff)
			if err.Error() != lastErr { // once per distinct failure
				lastErr = err.Error()
				p.log.Warn().Err(err).Str("url", url).Stringer("retry_in", backoff).
					Msg("cannot connect to " + p.o.Peer + "; retrying (logged again only if the reason changes)")
			}
			p.mu.Lock()
			p.lastErr = lastErr
			p.mu.Unlock()
			continue
		}

		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			client.Disconnect(uint(maxQuiesce.Milliseconds()))
			return
		}
		c := &Conn{p: p, client: client, epoch: p.epoch.Add(1)}
		p.conn = c
		p.mu.Unlock()
		if everConnected {
			p.log.Info().Str("url", url).Msg("reconnected to " + p.o.Peer)
		} else {
			p.log.Info().Str("url", url).Msg("connected to " + p.o.Peer)
		}
		everConnected = true

		var why error
		dropped := true
		if p.o.OnConnect != nil {
			why = p.o.OnConnect(p.ctx, c)
		}
		if why == nil {
			p.mu.Lock()
			p.ready, p.lastErr, lastErr = true, "", ""
			p.since = time.Now()
			p.wakeLocked()
			p.mu.Unlock()
			why, dropped = p.watch(c, lost)
		}
		select {
		case <-p.done: // Close says goodbye on c, unless it was dropped
			p.mu.Lock()
			mine := p.conn == c
			p.mu.Unlock()
			if !mine {
				client.Disconnect(0)
			}
			return
		default:
		}
		if dropped {
			client.Disconnect(uint(maxQuiesce.Milliseconds()))
		}

		p.mu.Lock()
		p.epoch.Add(1)
		p.conn, p.ready = nil, false
		p.since = time.Now()
		p.wakeLocked()
		p.mu.Unlock()
		// Like paho: the first loss in a while is retried at once, a loss
		// soon after another (a broker that accepts and then drops the
		// client) waits as a failed attempt does.
		if now := time.Now(); lastLoss.IsZero() || now.Sub(lastLoss) >= stableAfter {
			backoff = 0
		} else {
			backoff = p.grow(backoff)
		}
		lastLoss = time.Now()
		msg := "connection to " + p.o.Peer + " lost; reconnecting"
		if dropped {
			msg = "dropped the connection to " + p.o.Peer + "; reconnecting"
		}
		p.log.Warn().Err(why).Str("url", url).Stringer("retry_in", backoff).Msg(msg)
	}
}

// watch waits until c's connection is lost (dropped false) or a Batch asks
// to drop it (dropped true), or Close.
func (p *Publisher) watch(c *Conn, lost <-chan error) (why error, dropped bool) {
	for {
		select {
		case why = <-lost:
			return why, false
		case d := <-p.drop:
			if d.c == c {
				return d.why, true
			}
		case <-p.done:
			return nil, false
		}
	}
}

// grow returns the wait after one more failure following a wait of b.
func (p *Publisher) grow(b time.Duration) time.Duration {
	return min(max(2*b, p.o.RetryInterval), p.o.MaxRetryInterval)
}

// sleep waits d; false if the publisher closed meanwhile.
func (p *Publisher) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-p.done:
		return false
	}
}

// wakeLocked wakes every goroutine waiting for a connection event.
func (p *Publisher) wakeLocked() {
	close(p.wake)
	p.wake = make(chan struct{})
}

// dropConnection treats c's connection as broken, for reason why: Batches
// no longer use it, and the supervisor disconnects it and connects anew.
func (p *Publisher) dropConnection(c *Conn, why error) {
	p.mu.Lock()
	if p.conn == c {
		p.epoch.Add(1)
		p.conn, p.ready = nil, false
		p.since = time.Now()
		p.wakeLocked()
	}
	p.mu.Unlock()
	select {
	case p.drop <- dropRequest{c, why}:
	default: // a drop is pending already
	}
}

// usable returns the connection Batches may use now, nil if none.
func (p *Publisher) usable() *Conn {
	p.mu.Lock()
	c, ok := p.conn, p.ready
	p.mu.Unlock()
	if !ok || !c.client.IsConnectionOpen() {
		return nil
	}
	return c
}

// Connected reports whether there is a usable connection now.
func (p *Publisher) Connected() bool { return p.usable() != nil }

// LinkState reports the connection for the status page. A connection paho
// already knows is closed counts as down, since when it came up.
func (p *Publisher) LinkState() sinks.LinkState {
	p.mu.Lock()
	since, lastErr := p.since, p.lastErr
	p.mu.Unlock()
	return sinks.LinkState{Connected: p.Connected(), Since: since, LastError: lastErr}
}

// waitReady waits for a usable connection, until ctx ends or, if maxWait
// is positive, maxWait passed.
func (p *Publisher) waitReady(ctx context.Context, maxWait time.Duration) (*Conn, error) {
	var deadline <-chan time.Time
	if maxWait > 0 {
		t := time.NewTimer(maxWait)
		defer t.Stop()
		deadline = t.C
	}
	poll := time.NewTicker(pollInterval)
	defer poll.Stop()
	for {
		p.mu.Lock()
		closed, wake, lastErr := p.closed, p.wake, p.lastErr
		p.mu.Unlock()
		if closed {
			return nil, ErrClosed
		}
		if c := p.usable(); c != nil {
			return c, nil
		}
		var cause error
		select {
		case <-ctx.Done():
			cause = ctx.Err()
		case <-deadline:
			cause = ErrNotConnected
		case <-wake:
		case <-p.done:
		case <-poll.C:
		}
		if cause != nil {
			if lastErr != "" {
				return nil, fmt.Errorf("not connected to %s (last error: %s): %w", p.o.URL.Redacted(), lastErr, cause)
			}
			return nil, fmt.Errorf("not connected to %s: %w", p.o.URL.Redacted(), cause)
		}
	}
}

// current reports whether c is still the connection of its epoch and open.
func (c *Conn) current() bool {
	return c.p.epoch.Load() == c.epoch && c.client.IsConnectionOpen()
}

// Publish sends m on c and waits for its acknowledgement (QoS 0: the
// write), up to the AckTimeout or ctx. For OnConnect and Close hooks; data
// goes in a Batch.
func (c *Conn) Publish(ctx context.Context, m Message) error {
	return c.await(ctx, "publish "+m.Topic, func() paho.Token {
		return c.client.Publish(m.Topic, m.QoS, m.Retain, m.Payload)
	})
}

// Subscribe subscribes c to filter and waits for the SUBACK, up to the
// AckTimeout or ctx. fn runs in its own goroutine per message.
func (c *Conn) Subscribe(ctx context.Context, filter string, qos byte, fn func(topic string, payload []byte)) error {
	return c.await(ctx, "subscribe "+filter, func() paho.Token {
		return c.client.Subscribe(filter, qos, func(_ paho.Client, m paho.Message) { fn(m.Topic(), m.Payload()) })
	})
}

// await starts a flow and waits for its end on c, up to the AckTimeout or
// ctx. It starts it in a goroutine: paho's Publish may block up to its
// write timeout when the connection dies under it.
func (c *Conn) await(ctx context.Context, what string, start func() paho.Token) error {
	result := make(chan error, 1)
	go func() {
		tok := start()
		if !tok.WaitTimeout(c.p.o.AckTimeout) {
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
	if err == nil && !c.current() {
		err = ErrConnectionLost
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// Close stops connecting, then, if a connection is open and goodbye is not
// nil, calls goodbye on it (a last status), and disconnects. After it
// Begin returns ErrClosed; a second Close does nothing.
func (p *Publisher) Close(ctx context.Context, goodbye func(ctx context.Context, c *Conn) error) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.done)
	p.cancel()
	p.wakeLocked()
	p.mu.Unlock()

	// The supervisor (and OnConnect with it) ends first, so that goodbye
	// is the last thing published.
	var err error
	select {
	case <-p.exited:
	case <-ctx.Done():
		err = fmt.Errorf("close: %w", ctx.Err())
	}
	p.mu.Lock()
	c := p.conn // final now
	p.mu.Unlock()
	if c != nil {
		if err == nil && goodbye != nil && c.client.IsConnectionOpen() {
			err = goodbye(ctx, c)
		}
		quiesce := maxQuiesce
		if d, ok := ctx.Deadline(); ok {
			quiesce = max(0, min(quiesce, time.Until(d)))
		}
		c.client.Disconnect(uint(quiesce.Milliseconds()))
	}
	p.log.Info().Msg("disconnected from " + p.o.Peer)
	return err
}
