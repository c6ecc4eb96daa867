package cumulocity

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"

	"wittra-gateway/sinks"
)

// Mode mqtt: SmartREST 2.0 over paho.
//
// Proof of delivery. paho's tokens cannot be trusted across a reconnect:
// after an automatic reconnect it resends stored publishes under new tokens
// and completes the old ones with a nil error before any PUBACK (paho #563,
// #458; libraries.md §2). The sink therefore dials the connections itself
// (CustomOpenConnectionFn) and numbers them: the epoch goes up at every
// dial, before paho sends CONNECT, so before any resend can complete an old
// token. A publish counts only if its token completes without error while
// the epoch is still the one it was sent in; if the connection it was sent
// on closes first, the wait ends at once. Anything else is "not proven" and
// the message is retried (at-least-once: Cumulocity may then store it
// twice).
//
// The sink does not publish while the connection is down: Publish waits up
// to RequestTimeout for it, then fails (transient). Nor does it publish on a
// new connection before paho has taken its snapshot of the stored publishes
// to resend (or, on the first connect, reset the store): paho reports the
// connection open before that, and a publish in between is picked up by the
// resend as well, which writes the packet's DUP flag while the network
// goroutine is encoding it (a data race inside paho, seen under -race). A
// wrapper around the store signals the snapshot.
//
// A PUBACK that does not come within RequestTimeout makes the sink close
// the connection: paho then reconnects and resends, which also frees the
// packet ids of publishes that would otherwise wait forever.
//
// On every (re)connect it subscribes to s/e and publishes
// "100,<DeviceName>,wittra_Gateway" on s/us (Cumulocity answers a known
// device with "41,100,Device already existing" on s/e, which is ignored).
// Publish makes sure that announcement was acknowledged in the current
// epoch before sending anything else, and that a child's "101" was
// acknowledged and recorded in State before the child's first data.

const (
	// window is how many publishes may await their PUBACK at once.
	window = 64
	// maxSErrorTexts bounds the distinct s/e lines logged.
	maxSErrorTexts = 128
)

var (
	errNotConnected = errors.New("not connected to Cumulocity")
	errConnLost     = errors.New("connection lost before the PUBACK arrived")
	errReconnected  = errors.New("connection replaced before the PUBACK was proven")
)

type mqttLink struct {
	s      *Sink
	client paho.Client
	tls    *tls.Config
	dialer net.Dialer

	mu      sync.Mutex
	epoch   uint64     // dials so far; the current connection's number
	conn    *epochConn // the current connection, nil before the first dial
	scanned uint64     // epoch in which paho last scanned or reset its store

	announceMu sync.Mutex    // serialises gateway announcements
	announced  atomic.Uint64 // epoch whose "100" got its PUBACK

	childMu  sync.Mutex
	children map[string]bool // registered children (cache of State)

	seMu    sync.Mutex
	seTexts map[string]bool // s/e lines already logged
	seCount atomic.Uint64

	loginMu  sync.Mutex
	loginErr string // last failure before a CONNACK, logged once until connected
}

// epochConn is one dialed connection; dead closes when it fails or closes.
type epochConn struct {
	net.Conn
	epoch    uint64
	dead     chan struct{}
	deadOnce sync.Once
	killed   atomic.Bool
	gotData  atomic.Bool     // something was read (the CONNACK at least)
	early    func(err error) // a read failing before any data: login refused
}

// errKilled is what paho reads from a connection the sink dropped. paho
// ignores read errors that say "use of closed network connection" (it
// takes them for its own Disconnect), so a plain Close would leave it
// waiting for the keepalive to notice.
var errKilled = errors.New("connection dropped by the sink: no PUBACK in time")

func (c *epochConn) markDead() { c.deadOnce.Do(func() { close(c.dead) }) }

// kill drops the connection so that paho reconnects.
func (c *epochConn) kill() {
	c.killed.Store(true)
	_ = c.Close()
}

func (c *epochConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if n > 0 {
		c.gotData.Store(true)
	}
	if err != nil {
		if !c.gotData.Load() && !c.killed.Load() && c.early != nil {
			c.early(err)
		}
		c.markDead()
		if c.killed.Load() {
			err = errKilled
		}
	}
	return n, err
}

func (c *epochConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if err != nil {
		c.markDead()
	}
	return n, err
}

func (c *epochConn) Close() error {
	c.markDead()
	return c.Conn.Close()
}

func (c *epochConn) isDead() bool {
	select {
	case <-c.dead:
		return true
	default:
		return false
	}
}

// newMQTTLink connects to u, whose scheme Validate checked.
func newMQTTLink(s *Sink, u *url.URL, tlsCfg *tls.Config) (*mqttLink, error) {
	l := &mqttLink{s: s, tls: tlsCfg, children: map[string]bool{}, seTexts: map[string]bool{}}
	l.dialer.Timeout = min(s.cfg.RequestTimeout, 30*time.Second)
	l.dialer.KeepAlive = 30 * time.Second
	opts := paho.NewClientOptions().
		AddBroker(u.String()).
		SetClientID(s.clientID).
		SetProtocolVersion(4). // 3.1.1; unset, paho retries a refused connect as 3.1
		SetCleanSession(true). // Cumulocity requires it
		SetAutoReconnect(true).
		SetConnectRetry(true).
		SetConnectRetryInterval(s.cfg.connectRetryInterval).
		SetMaxReconnectInterval(30 * time.Second).
		SetConnectTimeout(min(s.cfg.RequestTimeout, 30*time.Second)).
		SetKeepAlive(60 * time.Second).
		SetWriteTimeout(10 * time.Second).
		SetOrderMatters(false). // handlers never block paho
		SetResumeSubs(false).   // s/e is subscribed again in onConnect
		SetMaxResumePubInFlight(window).
		SetStore(&scanStore{Store: paho.NewOrderedMemoryStore(), scanned: l.storeScanned}).
		SetCustomOpenConnectionFn(l.dial).
		SetOnConnectHandler(l.onConnect).
		SetConnectionLostHandler(l.onLost)
	if !s.certLogin { // with a certificate, CONNECT carries no credentials
		opts.SetUsername(s.cfg.Tenant + "/" + s.cfg.Username).SetPassword(s.cfg.Password)
	}
	l.client = paho.NewClient(opts)
	l.client.Connect() // non-blocking; ConnectRetry keeps trying in the background
	return l, nil
}

// dial opens a connection for paho and makes it the current epoch.
func (l *mqttLink) dial(u *url.URL, _ paho.ClientOptions) (net.Conn, error) {
	host := u.Host
	if u.Port() == "" {
		port := "1883"
		if u.Scheme != "tcp" && u.Scheme != "mqtt" {
			port = "8883"
		}
		host = net.JoinHostPort(u.Hostname(), port)
	}
	ctx, cancel := context.WithTimeout(l.s.closeCtx, l.dialer.Timeout)
	defer cancel()
	var c net.Conn
	var err error
	if u.Scheme == "tcp" || u.Scheme == "mqtt" {
		c, err = l.dialer.DialContext(ctx, "tcp", host)
	} else {
		td := tls.Dialer{NetDialer: &l.dialer, Config: l.tls}
		c, err = td.DialContext(ctx, "tcp", host)
	}
	if err != nil {
		l.loginFailed(err)
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.epoch++
	l.conn = &epochConn{Conn: c, epoch: l.epoch, dead: make(chan struct{}), early: l.loginFailed}
	return l.conn, nil
}

// loginFailed logs why a connection failed before Cumulocity answered the
// CONNECT (a refused certificate shows up here: with TLS 1.3 the server's
// verdict arrives as the first read), once per distinct reason until a
// connection succeeds. paho itself retries silently.
func (l *mqttLink) loginFailed(err error) {
	if l.s.closeCtx.Err() != nil {
		return
	}
	l.loginMu.Lock()
	defer l.loginMu.Unlock()
	if err.Error() == l.loginErr {
		return
	}
	l.loginErr = err.Error()
	l.s.log.Warn().Err(err).Str("url", l.s.cfg.URL).Msg("cannot connect to Cumulocity; retrying (logged again only if the reason changes)")
}

// scanStore wraps paho's store of unacknowledged packets:
//   - it tells the link when paho scans it (resume after a reconnect) or
//     resets it (first connect);
//   - Get returns a copy of a stored PUBLISH. resume sets the DUP flag on
//     what Get returns and sends it, while the very same packet may still be
//     on its way to the network goroutine from a Publish call that was
//     blocked in paho across the reconnect: sharing it is a data race.
type scanStore struct {
	paho.Store
	scanned func()
}

func (s *scanStore) Get(key string) packets.ControlPacket {
	p := s.Store.Get(key)
	if pub, ok := p.(*packets.PublishPacket); ok {
		cp := *pub
		return &cp
	}
	return p
}

func (s *scanStore) All() []string {
	keys := s.Store.All()
	s.scanned()
	return keys
}

func (s *scanStore) Reset() {
	s.Store.Reset()
	s.scanned()
}

func (l *mqttLink) storeScanned() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.scanned = l.epoch
}

// ready returns the current connection if publishing on it is allowed.
func (l *mqttLink) ready() *epochConn {
	l.mu.Lock()
	conn, ok := l.conn, l.conn != nil && l.scanned == l.epoch
	l.mu.Unlock()
	if !ok || conn.isDead() || !l.client.IsConnectionOpen() {
		return nil
	}
	return conn
}

func (l *mqttLink) current() *epochConn {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.conn
}

func (l *mqttLink) currentEpoch() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.epoch
}

// onConnect runs in its own goroutine (paho starts it): subscribe to s/e
// and announce the gateway.
func (l *mqttLink) onConnect(c paho.Client) {
	l.s.log.Info().Str("url", l.s.cfg.URL).Msg("connected to Cumulocity")
	l.loginMu.Lock()
	l.loginErr = ""
	l.loginMu.Unlock()
	tok := c.Subscribe("s/e", 0, l.onError)
	if !tok.WaitTimeout(l.s.cfg.RequestTimeout) || tok.Error() != nil {
		l.s.log.Warn().AnErr("error", tok.Error()).Msg("subscribe to s/e failed; Cumulocity errors will not be logged")
	}
	ctx, cancel := l.s.opCtx(context.Background())
	defer cancel()
	err := l.waitUp(ctx)
	if err == nil {
		err = l.ensureGateway(ctx)
	}
	if err != nil && l.s.closeCtx.Err() == nil {
		l.s.log.Warn().Err(err).Msg("announce gateway device; retried before the next data")
	}
}

func (l *mqttLink) onLost(_ paho.Client, err error) {
	l.s.log.Warn().Err(err).Msg("connection to Cumulocity lost; reconnecting")
}

// onError logs what Cumulocity reports on s/e: each distinct line once
// (bounded), "41,100,Device already existing" never (expected on every
// reconnect). The sink never depends on s/e.
func (l *mqttLink) onError(_ paho.Client, m paho.Message) {
	text := string(m.Payload())
	if strings.HasPrefix(text, "41,100,") {
		return
	}
	l.seCount.Add(1)
	l.seMu.Lock()
	defer l.seMu.Unlock()
	if l.seTexts[text] || len(l.seTexts) >= maxSErrorTexts {
		return
	}
	l.seTexts[text] = true
	l.s.log.Warn().Str("s/e", text).Msg("Cumulocity reported an error (logged once per distinct text)")
}

// waitUp waits until the connection is open, up to the request timeout.
func (l *mqttLink) waitUp(ctx context.Context) error {
	if l.ready() != nil {
		return nil
	}
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	deadline := time.NewTimer(l.s.cfg.RequestTimeout)
	defer deadline.Stop()
	for {
		select {
		case <-t.C:
			if l.ready() != nil {
				return nil
			}
		case <-deadline.C:
			return errNotConnected
		case <-ctx.Done():
			return ctx.Err()
		case <-l.s.closeCtx.Done():
			return ErrClosed
		}
	}
}

// pending is one publish awaiting its PUBACK.
type pending struct {
	tok      paho.Token
	conn     *epochConn
	topic    string
	deadline time.Time
	msg      int  // index of its message in the Publish batch
	last     bool // the last publish of that message
}

// send publishes payload on topic at QoS 1 if the connection is open.
func (l *mqttLink) send(topic string, payload []byte) (pending, error) {
	conn := l.ready()
	if conn == nil {
		return pending{}, errNotConnected
	}
	tok := l.client.Publish(topic, 1, false, payload)
	return pending{tok: tok, conn: conn, topic: topic, deadline: time.Now().Add(l.s.cfg.RequestTimeout)}, nil
}

// wait returns nil once p is proven acknowledged (see the package note).
func (l *mqttLink) wait(ctx context.Context, p pending) error {
	timer := time.NewTimer(time.Until(p.deadline))
	defer timer.Stop()
	select {
	case <-p.tok.Done():
	case <-p.conn.dead:
		select {
		case <-p.tok.Done(): // acknowledged before the connection went
		default:
			return fmt.Errorf("publish %s: %w", p.topic, errConnLost)
		}
	case <-timer.C:
		// A live connection that sits on a PUBACK this long is wedged;
		// its unacknowledged publishes also keep their packet ids until
		// paho reconnects. Closing it makes paho reconnect and resend.
		if !p.conn.isDead() {
			l.s.log.Warn().Str("topic", p.topic).Stringer("timeout", l.s.cfg.RequestTimeout).
				Msg("no PUBACK in time; dropping the connection to reconnect")
			p.conn.kill()
		}
		return fmt.Errorf("publish %s: no PUBACK within %v", p.topic, l.s.cfg.RequestTimeout)
	case <-ctx.Done():
		return ctx.Err()
	case <-l.s.closeCtx.Done():
		return ErrClosed
	}
	if err := p.tok.Error(); err != nil {
		return fmt.Errorf("publish %s: %w", p.topic, err)
	}
	if l.currentEpoch() != p.conn.epoch {
		return fmt.Errorf("publish %s: %w", p.topic, errReconnected)
	}
	return nil
}

func (l *mqttLink) publishWait(ctx context.Context, topic, line string) error {
	p, err := l.send(topic, []byte(line))
	if err != nil {
		return err
	}
	return l.wait(ctx, p)
}

// ensureGateway publishes the gateway's "100" unless it was acknowledged
// on the current connection already.
func (l *mqttLink) ensureGateway(ctx context.Context) error {
	l.announceMu.Lock()
	defer l.announceMu.Unlock()
	conn := l.current()
	if conn == nil {
		return errNotConnected
	}
	if l.announced.Load() == conn.epoch {
		return nil
	}
	if err := l.publishWait(ctx, "s/us", csvLine("100", l.s.cfg.DeviceName, gatewayType)); err != nil {
		return fmt.Errorf("register gateway device: %w", err)
	}
	l.announced.Store(conn.epoch)
	return nil
}

// ensureChild registers device as a child of the gateway ("101" on s/us)
// under name unless State says it is registered; the PUBACK is awaited and
// the fact stored before returning.
func (l *mqttLink) ensureChild(ctx context.Context, device, name string) error {
	l.childMu.Lock()
	known := l.children[device]
	l.childMu.Unlock()
	if known {
		return nil
	}
	key := l.s.childKey(device)
	if v, err := l.s.state.Get(key); err != nil {
		return fmt.Errorf("read state: %w", err)
	} else if len(v) > 0 {
		l.rememberChild(device)
		return nil
	}
	if err := l.publishWait(ctx, "s/us", csvLine("101", device, name, sensorType)); err != nil {
		return fmt.Errorf("register child %s: %w", device, err)
	}
	if err := l.s.recordName(ctx, device, name); err != nil { // names.go
		return err
	}
	if err := l.s.state.Put(ctx, key, []byte("1")); err != nil {
		return fmt.Errorf("record child %s: %w", device, err)
	}
	l.rememberChild(device)
	l.s.log.Info().Str("device", device).Msg("registered child device")
	return nil
}

// rememberChild caches that device is registered. The cache is bounded
// (maxCachedDevices): it only spares State reads, so when full it starts
// over rather than grow with every device id ever seen.
func (l *mqttLink) rememberChild(device string) {
	l.childMu.Lock()
	defer l.childMu.Unlock()
	if len(l.children) >= maxCachedDevices {
		clear(l.children)
	}
	l.children[device] = true
}

// planMQTT maps m and packs its lines into payloads for its topic.
func planMQTT(m sinks.Message) (mapped, string, [][]byte, error) {
	mp, err := mapMessage(m)
	if err != nil {
		return mapped{}, "", nil, err
	}
	topic := "s/us"
	if mp.device != "" {
		topic = "s/us/" + mp.device
	}
	lines := smartRESTLines(mp.records, formatTime(mp.time))
	payloads, tooLong := packLines(topic, lines, MaxPacketSize)
	if tooLong >= 0 {
		return mapped{}, "", nil, permanentf("message %d: SmartREST line %d is %d bytes, over Cumulocity's %d-byte MQTT limit",
			m.Seq, tooLong+1, len(lines[tooLong]), MaxPacketSize)
	}
	return mp, topic, payloads, nil
}

// publish delivers msgs with up to window publishes in flight.
func (l *mqttLink) publish(ctx context.Context, msgs []sinks.Message) (int, error) {
	if err := l.waitUp(ctx); err != nil {
		return 0, err
	}
	opCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := l.ensureGateway(opCtx); err != nil {
		return 0, err
	}
	epoch := l.announced.Load()

	var (
		win  []pending
		done int // leading messages proven delivered
		maps = make([]mapped, 0, len(msgs))
	)
	// settle waits until at most keep publishes are in flight.
	settle := func(keep int) error {
		for len(win) > keep {
			p := win[0]
			if err := l.wait(opCtx, p); err != nil {
				return err
			}
			win = win[1:]
			if p.last {
				done = p.msg + 1
			}
		}
		return nil
	}
	// finish returns n delivered (and err) once the publishes in flight are
	// settled; if they fail, fewer are delivered.
	finish := func(n int, err error) (int, error) {
		if serr := settle(0); serr != nil {
			n, err = done, serr
		}
		l.s.delivered(maps[:n])
		return n, err
	}
	for i, m := range msgs {
		if err := ctx.Err(); err != nil {
			return finish(i, err)
		}
		mp, topic, payloads, err := planMQTT(m)
		if err != nil {
			return finish(i, err)
		}
		if l.currentEpoch() != epoch {
			return finish(i, errReconnected)
		}
		if mp.device != "" {
			if err := l.ensureNamedChild(opCtx, m.Project, mp.device); err != nil { // names.go
				return finish(i, err)
			}
		}
		maps = append(maps, mp)
		for k, pl := range payloads {
			p, err := l.send(topic, pl)
			if err != nil {
				return finish(i, err)
			}
			p.msg, p.last = i, k == len(payloads)-1
			win = append(win, p)
			if len(win) >= window {
				if err := settle(window / 2); err != nil {
					l.s.delivered(maps[:done])
					return done, err
				}
			}
		}
	}
	return finish(len(msgs), nil)
}

func (l *mqttLink) close(ctx context.Context) {
	quiesce := uint(250)
	if d, ok := ctx.Deadline(); ok {
		quiesce = uint(max(0, min(250, time.Until(d).Milliseconds())))
	}
	l.client.Disconnect(quiesce)
}
