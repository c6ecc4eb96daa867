package jetstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"wittra-gateway/sinks"
	"wittra-gateway/wittra"
)

// Errors a Publish or Close can wrap.
var (
	ErrClosed         = errors.New("jetstream sink closed")
	ErrConnectionLost = sinks.ErrConnectionLost
	ErrAckTimeout     = sinks.ErrAckTimeout
	ErrWrongStream    = errors.New("acknowledged by another stream")
)

// Header names the sink sets besides Nats-Msg-Id and Nats-Expected-Stream.
const HeaderGateway = "Wittra-Gateway"

// pollInterval is how often a waiting Publish re-checks the connection
// besides being woken by a connection event.
const pollInterval = 250 * time.Millisecond

// Sink publishes messages into a JetStream stream (see the package doc for
// what counts as delivered and how order is kept).
//
// nats.go owns the connection and reconnects by itself, through every URL
// and the servers the cluster advertises. Its reconnect buffer is off, so
// a publication never waits in memory for a connection: it fails, and the
// forwarder retries it from the queue.
type Sink struct {
	cfg Config
	tls *tls.Config
	log zerolog.Logger

	mu      sync.Mutex
	nc      *nats.Conn // nil until the background connect has made it
	js      jetstream.JetStream
	wake    chan struct{} // closed and replaced on connection events and at Close
	closed  bool
	done    chan struct{} // closed by Close
	lastErr string        // last connection failure, for Publish errors

	// epoch changes on every connection event; the stream is checked once
	// per epoch (a reconnect may land on a cluster whose stream was
	// deleted meanwhile).
	epoch atomic.Uint64

	// Used by Publish only, which the forwarder calls from one goroutine.
	checked  uint64                   // epoch in which the stream was last checked; 0 never
	streamCf string                   // last stream settings logged, to log changes only
	leftover []jetstream.PubAckFuture // acknowledgements a Publish stopped waiting for
	timer    *time.Timer
}

var _ sinks.Sink = (*Sink)(nil)

// New validates cfg, reads the TLS and credentials files and starts
// connecting in the background: servers that are down at start are
// normal, and New never waits for the network. The connection is retried
// until Close.
func New(cfg Config, log zerolog.Logger) (*Sink, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("jetstream sink %s: %w", cfg.Name, err)
	}
	var tc *tls.Config
	secure := false
	for _, u := range cfg.URLs {
		if strings.HasPrefix(u, "tls://") || strings.HasPrefix(u, "wss://") {
			secure = true
		}
	}
	if secure || !cfg.TLS.IsZero() {
		if tc, err = cfg.TLS.Client(); err != nil {
			return nil, fmt.Errorf("jetstream sink %s: %w", cfg.Name, err)
		}
	}
	if cfg.CredsFile != "" {
		// nats.go reads it at every connect; a missing file should fail now.
		if _, err := os.ReadFile(cfg.CredsFile); err != nil {
			return nil, fmt.Errorf("jetstream sink %s: read creds_file: %w", cfg.Name, err)
		}
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	s := &Sink{
		cfg:   cfg,
		tls:   tc,
		log:   log.With().Str("component", "jetstream").Str("sink", cfg.Name).Logger(),
		wake:  make(chan struct{}),
		done:  make(chan struct{}),
		timer: timer,
	}
	go s.connect()
	return s, nil
}

// connect creates the nats.go connection, which then retries by itself.
func (s *Sink) connect() {
	var lastLogged atomic.Value // string: last connection error logged
	fail := func(err error) {
		msg := err.Error()
		s.mu.Lock()
		s.lastErr = msg
		s.mu.Unlock()
		if prev, _ := lastLogged.Load().(string); prev != msg {
			lastLogged.Store(msg)
			s.log.Warn().Err(err).Msg("cannot connect to NATS; retrying")
		}
	}
	event := func() {
		s.mu.Lock()
		s.epoch.Add(1)
		s.wakeLocked()
		s.mu.Unlock()
	}
	opts := []nats.Option{
		nats.Name("wittra-gateway " + s.cfg.GatewayID + " sink " + s.cfg.Name),
		nats.Timeout(connectTimeout),
		nats.RetryOnFailedConnect(true),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(reconnectWait),
		nats.CustomReconnectDelay(func(attempts int) time.Duration {
			// attempts counts passes through the whole server list.
			return min(reconnectWait<<min(attempts-1, 5), maxReconnectGap)
		}),
		// No buffering while disconnected: such a publication is not
		// delivered, and order is only safe if it fails now.
		nats.ReconnectBufSize(-1),
		nats.PingInterval(pingInterval),
		nats.MaxPingsOutstanding(maxPingsOut),
		nats.NoCallbacksAfterClientClose(),
		nats.ConnectHandler(func(nc *nats.Conn) {
			event()
			lastLogged.Store("")
			s.log.Info().Str("server", nc.ConnectedUrlRedacted()).Str("cluster", nc.ConnectedClusterName()).Msg("connected to NATS")
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			event()
			lastLogged.Store("")
			s.log.Info().Str("server", nc.ConnectedUrlRedacted()).Msg("reconnected to NATS")
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			event()
			if err != nil {
				s.log.Warn().Err(err).Msg("connection to NATS lost; reconnecting")
			}
		}),
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) { fail(err) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			s.log.Warn().Err(err).Msg("NATS error")
		}),
	}
	switch {
	case s.cfg.Username != "":
		opts = append(opts, nats.UserInfo(s.cfg.Username, s.cfg.Password))
	case s.cfg.Token != "":
		opts = append(opts, nats.Token(s.cfg.Token))
	case s.cfg.CredsFile != "":
		opts = append(opts, nats.UserCredentials(s.cfg.CredsFile))
	}
	if s.tls != nil {
		opts = append(opts, nats.Secure(s.tls))
	}
	nc, err := nats.Connect(strings.Join(s.cfg.URLs, ","), opts...)
	if err != nil {
		// With RetryOnFailedConnect only a bad setup fails here.
		fail(err)
		s.log.Error().Err(err).Msg("NATS connection cannot start; the sink will not deliver")
		return
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(s.cfg.AckTimeout))
	if err != nil {
		nc.Close()
		fail(err)
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		nc.Close()
		return
	}
	s.nc, s.js = nc, js
	s.epoch.Add(1)
	s.wakeLocked()
	s.mu.Unlock()
}

func (s *Sink) wakeLocked() {
	close(s.wake)
	s.wake = make(chan struct{})
}

// Name returns the sink's name.
func (s *Sink) Name() string { return s.cfg.Name }

// Connected reports whether the sink has a connection to a server now.
func (s *Sink) Connected() bool {
	s.mu.Lock()
	nc := s.nc
	s.mu.Unlock()
	return nc != nil && nc.IsConnected()
}

// Publish sends msgs and returns how many of them, from the start, the
// stream acknowledged (see the package doc). It first waits for a
// connection and checks (or creates) the stream; if ctx ends meanwhile it
// returns 0 and an error wrapping ctx.Err(). When fewer than all are
// delivered the error says why; it wraps sinks.ErrPermanent when the
// stream refused msgs[delivered] for good (too large).
func (s *Sink) Publish(ctx context.Context, msgs []sinks.Message) (int, error) {
	if len(msgs) == 0 {
		return 0, nil
	}
	nc, js, epoch, err := s.waitConnected(ctx)
	if err != nil {
		return 0, err
	}
	if err := s.settleLeftover(ctx); err != nil {
		return 0, err
	}
	if err := s.ensureStream(ctx, nc, js, epoch); err != nil {
		return 0, err
	}
	return s.publish(ctx, js, msgs)
}

// waitConnected waits for a connected client.
func (s *Sink) waitConnected(ctx context.Context) (*nats.Conn, jetstream.JetStream, uint64, error) {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, nil, 0, ErrClosed
		}
		nc, js, wake, lastErr := s.nc, s.js, s.wake, s.lastErr
		e := s.epoch.Load()
		s.mu.Unlock()
		if nc != nil && nc.Status() == nats.CONNECTED {
			return nc, js, e, nil
		}
		s.timer.Reset(pollInterval)
		select {
		case <-ctx.Done():
			s.timer.Stop()
			if lastErr != "" {
				return nil, nil, 0, fmt.Errorf("not connected to NATS (last error: %s): %w", lastErr, ctx.Err())
			}
			return nil, nil, 0, fmt.Errorf("not connected to NATS: %w", ctx.Err())
		case <-wake:
			s.timer.Stop()
		case <-s.done:
			s.timer.Stop()
		case <-s.timer.C:
		}
	}
}

// settleLeftover waits for the acknowledgements an earlier Publish left
// when its ctx ended, so that no more than Window publications are ever
// outstanding and none of a device overtakes an older one. Each ends by
// AckTimeout at the latest (or at a disconnect).
func (s *Sink) settleLeftover(ctx context.Context) error {
	for len(s.leftover) > 0 {
		f := s.leftover[0]
		select {
		case <-f.Ok():
		case <-f.Err():
		case <-ctx.Done():
			return fmt.Errorf("waiting for %d earlier acknowledgements: %w", len(s.leftover), ctx.Err())
		case <-s.done:
			return ErrClosed
		}
		s.leftover[0] = nil
		s.leftover = s.leftover[1:]
	}
	s.leftover = nil
	return nil
}

// ensureStream looks the stream up once per connection epoch and creates
// it when it is missing.
func (s *Sink) ensureStream(ctx context.Context, nc *nats.Conn, js jetstream.JetStream, epoch uint64) error {
	if s.checked == epoch {
		return nil
	}
	sc := s.cfg.Stream
	actx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	st, err := js.Stream(actx, sc.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		replicas, why := s.replicas(nc)
		st, err = js.CreateStream(actx, jetstream.StreamConfig{
			Name:        sc.Name,
			Description: "Wittra messages published by wittra-gateway",
			Subjects:    sc.Subjects,
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			Storage:     jetstream.FileStorage,
			Replicas:    replicas,
			MaxAge:      sc.MaxAge,
			Duplicates:  sc.DuplicateWindow,
		})
		switch {
		case errors.Is(err, jetstream.ErrStreamNameAlreadyInUse):
			// Another gateway created it first, with other settings.
			st, err = js.Stream(actx, sc.Name)
		case err != nil:
			return fmt.Errorf("create stream %s with %d replicas (%s; stream.replicas sets it): %w", sc.Name, replicas, why, err)
		default:
			s.log.Info().Str("stream", sc.Name).Strs("subjects", sc.Subjects).Int("replicas", replicas).
				Str("replicas_because", why).Stringer("max_age", sc.MaxAge).Stringer("duplicate_window", sc.DuplicateWindow).
				Msg("created stream")
		}
	}
	if err != nil {
		return fmt.Errorf("stream %s: %w", sc.Name, err)
	}
	info := st.CachedInfo()
	if !coveredBy(info.Config.Subjects, s.cfg.SubjectPrefix) {
		return fmt.Errorf("stream %s has subjects %v, which do not capture %s.>: add that subject to the stream or change subject_prefix",
			sc.Name, info.Config.Subjects, s.cfg.SubjectPrefix)
	}
	desc := fmt.Sprintf("%v/%d/%v/%v", info.Config.Subjects, info.Config.Replicas, info.Config.MaxAge, info.Config.Duplicates)
	if desc != s.streamCf {
		s.streamCf = desc
		ev := s.log.Info()
		if info.Config.Duplicates <= 0 {
			ev = s.log.Warn() // redeliveries after a crash become duplicates
		}
		ev.Str("stream", sc.Name).Strs("subjects", info.Config.Subjects).Int("replicas", info.Config.Replicas).
			Stringer("max_age", info.Config.MaxAge).Stringer("duplicate_window", info.Config.Duplicates).
			Msg("publishing into stream")
	}
	s.checked = epoch
	return nil
}

// replicas is the replica count of a stream the sink creates, and why.
// The configured count wins. Otherwise a client can only see the servers
// the cluster advertises to it (plus the configured URLs): 3 replicas
// when those are 3 or more, else 1.
func (s *Sink) replicas(nc *nats.Conn) (int, string) {
	if r := s.cfg.Stream.Replicas; r > 0 {
		return r, "configured"
	}
	if nc.ConnectedClusterName() == "" {
		return 1, "the server is not in a cluster"
	}
	if n := len(nc.Servers()); n >= 3 {
		return 3, fmt.Sprintf("cluster %s has %d known servers", nc.ConnectedClusterName(), n)
	}
	return 1, fmt.Sprintf("cluster %s has fewer than 3 known servers", nc.ConnectedClusterName())
}

func coveredBy(filters []string, prefix string) bool {
	for _, f := range filters {
		if Covers(f, prefix) {
			return true
		}
	}
	return false
}

// inflight is one publication awaiting its acknowledgement.
type inflight struct {
	i   int // index in the batch
	fut jetstream.PubAckFuture
}

// Message states within one Publish.
const (
	stNew uint8 = iota
	stSent
	stAcked
)

// publish sends msgs with at most Window unacknowledged and returns the
// leading count acknowledged. A message is only sent once the previous
// message of its device in the batch is acknowledged: a publication the
// stream never stored can then never be overtaken by a later one of the
// same device, which the retry could not undo (the stream drops the later
// one's copy as a duplicate). Messages of other devices fill the window
// meanwhile.
func (s *Sink) publish(ctx context.Context, js jetstream.JetStream, msgs []sinks.Message) (int, error) {
	n := len(msgs)
	state := make([]uint8, n)
	next := make([]int, n)     // the next message of the same device, or -1
	blocked := make([]bool, n) // an earlier message of its device is not acknowledged yet
	last := make(map[string]int, min(n, 1024))
	for i := range msgs {
		next[i] = -1
		k := msgs[i].Project + "\x00" + msgs[i].Device
		if j, ok := last[k]; ok {
			next[j] = i
			blocked[i] = true
		}
		last[k] = i
	}

	var (
		fifo      []inflight // in send order
		ready     []int      // unblocked after the cursor passed them
		cursor    int        // next message not yet considered in order
		delivered int
		dups      int // acknowledged as already in the stream
		failErr   error
		failIdx   = -1
	)
	fail := func(i int, err error) {
		if failErr == nil {
			failErr, failIdx = err, i
		}
	}
	pick := func() int {
		if len(ready) > 0 {
			i := ready[0]
			ready = ready[1:]
			return i
		}
		for cursor < n {
			i := cursor
			cursor++
			if !blocked[i] {
				return i
			}
		}
		return -1
	}
	for {
		for failErr == nil && len(fifo) < s.cfg.Window {
			i := pick()
			if i < 0 {
				break
			}
			if err := ctx.Err(); err != nil {
				fail(i, err)
				break
			}
			fut, err := s.send(js, msgs[i])
			if err != nil {
				fail(i, err)
				break
			}
			state[i] = stSent
			fifo = append(fifo, inflight{i: i, fut: fut})
		}
		if len(fifo) == 0 {
			break
		}
		p := fifo[0]
		ack, err := s.await(ctx, p.fut)
		if stopped := ctx.Err() != nil && errors.Is(err, ctx.Err()); stopped || errors.Is(err, ErrClosed) {
			// Stop waiting; the next Publish waits for these first.
			for _, f := range fifo {
				s.leftover = append(s.leftover, f.fut)
			}
			fail(p.i, err)
			break
		}
		fifo[0] = inflight{}
		fifo = fifo[1:]
		if err == nil && ack.Stream != s.cfg.Stream.Name {
			err = fmt.Errorf("%w %s, not %s", ErrWrongStream, ack.Stream, s.cfg.Stream.Name)
		}
		if err != nil {
			fail(p.i, s.describe(msgs[p.i], err))
			continue // the rest in flight still settles
		}
		state[p.i] = stAcked
		if ack.Duplicate {
			dups++
		}
		if j := next[p.i]; j >= 0 {
			blocked[j] = false
			if j < cursor {
				ready = append(ready, j)
			}
		}
		for delivered < n && state[delivered] == stAcked {
			delivered++
		}
	}
	if dups > 0 {
		// Normal after a restart or a lost acknowledgement; worth a line
		// because it shows the de-duplication at work.
		s.log.Info().Int("duplicates", dups).Int("acknowledged", delivered).
			Msg("stream already had some messages (published again); not stored twice")
	}
	if delivered == n {
		return n, nil
	}
	if failErr == nil {
		// Cannot happen: without a failure every message is sent.
		failErr = fmt.Errorf("message %d not sent", msgs[delivered].Seq)
	}
	if errors.Is(failErr, sinks.ErrPermanent) && failIdx != delivered {
		// Only the first undelivered message may be dead-lettered; this
		// one gets there on a later attempt.
		failErr = fmt.Errorf("message %d not delivered yet; a later one failed: %v", msgs[delivered].Seq, failErr)
	}
	return delivered, failErr
}

// send hands one message to nats.go.
func (s *Sink) send(js jetstream.JetStream, m sinks.Message) (jetstream.PubAckFuture, error) {
	payloadID := ""
	if id, err := wittra.Identify(m.Body); err == nil {
		payloadID = id.PayloadID
	}
	msg := &nats.Msg{
		Subject: Subject(s.cfg.SubjectPrefix, m),
		Data:    m.Body,
		Header:  nats.Header{},
	}
	if headerSafe(s.cfg.GatewayID) {
		msg.Header.Set(HeaderGateway, s.cfg.GatewayID)
	}
	fut, err := js.PublishMsgAsync(msg,
		jetstream.WithMsgID(MsgID(s.cfg.GatewayID, payloadID, m)),
		jetstream.WithExpectStream(s.cfg.Stream.Name))
	if err != nil {
		return nil, s.describe(m, err)
	}
	return fut, nil
}

// await waits for the outcome of fut.
func (s *Sink) await(ctx context.Context, fut jetstream.PubAckFuture) (*jetstream.PubAck, error) {
	// nats.go fails fut after AckTimeout itself; this guard only covers
	// an outcome that never comes.
	s.timer.Reset(2*s.cfg.AckTimeout + time.Second)
	defer s.timer.Stop()
	select {
	case ack := <-fut.Ok():
		return ack, nil
	case err := <-fut.Err():
		return nil, err
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.done:
		return nil, ErrClosed
	case <-s.timer.C:
		return nil, ErrAckTimeout
	}
}

// describe wraps a publication error with the message it concerns and
// classifies it: too large is permanent; a missing stream or responder
// makes the next Publish check the stream again.
func (s *Sink) describe(m sinks.Message, err error) error {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, nats.ErrMaxPayload),
		errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum:
		return fmt.Errorf("publish message %d (%d bytes): %w: %w", m.Seq, len(m.Body), sinks.ErrPermanent, err)
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders),
		errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamNotFound:
		s.checked = 0
	case errors.Is(err, jetstream.ErrAsyncPublishTimeout):
		err = fmt.Errorf("%w within %v: %w", ErrAckTimeout, s.cfg.AckTimeout, err)
	case errors.Is(err, nats.ErrDisconnected), errors.Is(err, nats.ErrReconnectBufExceeded),
		errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrConnectionReconnecting):
		err = fmt.Errorf("%w: %w", ErrConnectionLost, err)
	}
	return fmt.Errorf("publish message %d of device %s: %w", m.Seq, m.Device, err)
}

// Close closes the connection. Publications still awaiting their
// acknowledgement are not delivered as far as the gateway knows, and are
// published again after the next start (the stream drops the copies it
// already has). After Close, Publish returns ErrClosed.
func (s *Sink) Close(context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	s.wakeLocked()
	s.mu.Unlock()

	// The background connect may still be in its first pass through the
	// servers (up to connectTimeout each): not waited for, it closes its
	// connection itself once it sees the sink closed.
	s.mu.Lock()
	nc := s.nc
	s.mu.Unlock()
	if nc != nil {
		nc.Close()
	}
	s.log.Info().Msg("disconnected from NATS")
	return nil
}
