package bridge

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"wittra-gateway/buffer"
	"wittra-gateway/sinks"
)

// Defaults used when a ForwarderConfig field is zero.
const (
	DefaultBatch      = 1000
	DefaultBatchBytes = 4 << 20
	DefaultMinBackoff = 100 * time.Millisecond
	DefaultMaxBackoff = 30 * time.Second
	DefaultAttempt    = 30 * time.Second
)

// ForwarderConfig tunes one sink's forwarder.
type ForwarderConfig struct {
	Batch      int // messages per Publish
	BatchBytes int // about this many body bytes per Publish
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// Attempt bounds one Publish call. A sink waiting for its connection
	// returns then, so the forwarder can drop what expired or was dropped
	// from the queue meanwhile instead of delivering it late.
	Attempt time.Duration
	// Backlog: InOrder (the default) or LiveFirst (livefirst.go).
	Backlog Backlog
	// BacklogBatch: messages per Publish of the backlog while live
	// messages flow (LiveFirst); it bounds how long a live message waits
	// behind the backlog. Default Batch/4.
	BacklogBatch int
}

// Forwarder moves one sink's messages from its queue cursor to the sink, in
// queue order, acknowledging only what the sink proved delivered.
type Forwarder struct {
	cfg    ForwarderConfig
	reader *buffer.Reader
	sink   sinks.Sink
	log    zerolog.Logger
	stats  ForwarderStats
}

// ForwarderStats are totals since start.
type ForwarderStats struct {
	Delivered   atomic.Uint64
	Failures    atomic.Uint64 // failed or fruitless Publish attempts (each is retried)
	Rejected    atomic.Uint64 // refused permanently by the sink
	Undecodable atomic.Uint64 // records the bridge could not decode
	LastSuccess atomic.Int64  // Unix ns of the last delivery
	LastFailure atomic.Int64  // Unix ns of the last failed or timed-out attempt
	lastError   atomic.Pointer[string]
}

// LastError is the text of the last failed or timed-out attempt ("" before
// the first). It is kept after delivery resumes: LastSuccess tells which is
// newer.
func (s *ForwarderStats) LastError() string {
	if p := s.lastError.Load(); p != nil {
		return *p
	}
	return ""
}

func (s *ForwarderStats) failed(err error) {
	msg := err.Error()
	s.lastError.Store(&msg)
	s.LastFailure.Store(time.Now().UnixNano())
}

// NewForwarder builds the forwarder of sink reading from r.
func NewForwarder(cfg ForwarderConfig, r *buffer.Reader, sink sinks.Sink, log zerolog.Logger) *Forwarder {
	// A value of 0 or below takes the default (max(v, 0) makes it 0 for cmp.Or).
	cfg.Batch = cmp.Or(max(cfg.Batch, 0), DefaultBatch)
	cfg.BatchBytes = cmp.Or(max(cfg.BatchBytes, 0), DefaultBatchBytes)
	cfg.MinBackoff = cmp.Or(max(cfg.MinBackoff, 0), DefaultMinBackoff)
	cfg.MaxBackoff = cmp.Or(max(cfg.MaxBackoff, 0), DefaultMaxBackoff)
	cfg.Attempt = cmp.Or(max(cfg.Attempt, 0), DefaultAttempt)
	cfg.BacklogBatch = cmp.Or(max(cfg.BacklogBatch, 0), max(1, cfg.Batch/4))
	return &Forwarder{cfg: cfg, reader: r, sink: sink, log: log}
}

// Stats returns the forwarder's counters.
func (f *Forwarder) Stats() *ForwarderStats { return &f.stats }

// Run forwards until ctx is cancelled or the queue closes; it returns nil
// then. Delivery failures are retried with capped exponential backoff and
// never skip a message.
func (f *Forwarder) Run(ctx context.Context) error {
	if f.cfg.Backlog == LiveFirst {
		return f.runLiveFirst(ctx)
	}
	// Acknowledgements commit in the background, one at a time and the
	// newest winning, so delivery never waits for a commit.
	acks := newAcker(f)
	defer acks.wait()
	var p pipe
	for {
		rctx := ctx
		if len(p.rest) > 0 {
			rctx = doneCtx // what is in flight goes on without waiting for more
		}
		var recs []buffer.Record
		var err error
		if len(p.rest) < f.cfg.Batch {
			recs, err = f.reader.Read(rctx, f.cfg.Batch, f.cfg.BatchBytes)
		}
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, buffer.ErrClosed) {
				return nil
			}
			if len(p.rest) == 0 {
				return err
			}
		}
		seq, err := f.send(ctx, &p, recs)
		if err != nil {
			return nil // only ctx ends delivery
		}
		acks.ack(seq)
	}
}

// pipe is what a sink returned early without (sinks.Sink.Publish: sent,
// awaiting acknowledgement) in one stream: it goes back to the sink first,
// followed by what was read since, so the sink's window stays full across
// calls instead of draining at the end of each. At most two batches.
type pipe struct {
	msgs     []sinks.Message // reused
	rest     []sinks.Message
	restRecs []buffer.Record
}

// send delivers p's rest followed by recs, and returns the sequence up to
// which everything is delivered, dead-lettered or undecodable (0: nothing
// to send), and an error only when ctx ends.
func (f *Forwarder) send(ctx context.Context, p *pipe, recs []buffer.Record) (uint64, error) {
	if len(p.rest)+len(recs) == 0 {
		return 0, nil
	}
	p.msgs = f.decode(append(p.msgs[:0], p.rest...), recs)
	recs = append(p.restRecs, recs...)
	var err error
	if p.rest, err = f.deliver(ctx, p.msgs, recs); err != nil {
		return 0, err
	}
	p.restRecs = nil
	if len(p.rest) == 0 {
		return recs[len(recs)-1].Seq, nil
	}
	i := sort.Search(len(recs), func(i int) bool { return recs[i].Seq >= p.rest[0].Seq })
	p.restRecs = recs[i:]
	return p.rest[0].Seq - 1, nil
}

// decode appends the messages of recs to msgs, passing over undecodable
// records.
func (f *Forwarder) decode(msgs []sinks.Message, recs []buffer.Record) []sinks.Message {
	for _, rec := range recs {
		m, err := DecodeRecord(rec)
		if err != nil {
			// Not ours to deliver: a damaged record cannot become valid by
			// retrying. Logged loudly, counted, and passed over.
			f.stats.Undecodable.Add(1)
			f.log.Error().Err(err).Uint64("seq", rec.Seq).Msg("skipping undecodable queue record")
			continue
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// doneCtx makes Reader.Read return only what is there already.
var doneCtx = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// deliver publishes msgs until all are delivered or dead-lettered, or the
// sink returns early (a nil error with messages left: it has sent them and
// awaits their acknowledgement); it returns those left, and an error only
// when ctx ends. recs are the records msgs came from.
func (f *Forwarder) deliver(ctx context.Context, msgs []sinks.Message, recs []buffer.Record) ([]sinks.Message, error) {
	backoff := f.cfg.MinBackoff
	failing := false
	for len(msgs) > 0 {
		msgs = dropDeleted(msgs, f.reader.Cursor())
		if len(msgs) == 0 {
			break
		}
		retime(msgs, f.reader)
		actx, cancel := context.WithTimeout(ctx, f.cfg.Attempt)
		n, err := f.sink.Publish(actx, msgs)
		cancel()
		if n > 0 {
			f.stats.Delivered.Add(uint64(n))
			f.stats.LastSuccess.Store(time.Now().UnixNano())
			msgs = msgs[n:]
		}
		if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
			// The attempt ran out while the sink waited for its connection
			// or for acknowledgements: try again at once (the wait itself
			// paces the loop) after dropping what the queue deleted. An
			// attempt that delivered nothing is a failure for the operator's
			// alert, like any other.
			if n == 0 {
				f.stats.Failures.Add(1)
				f.stats.failed(err)
				if !failing {
					f.log.Warn().Msg("sink not delivering yet; waiting")
					failing = true
				}
			}
			continue
		}
		if err == nil {
			if failing {
				f.log.Info().Msg("sink delivering again")
				failing = false
			}
			backoff = f.cfg.MinBackoff
			if n > 0 && len(msgs) > 0 {
				return msgs, nil // returned early: the rest is in flight
			}
			continue
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if errors.Is(err, sinks.ErrPermanent) && len(msgs) > 0 {
			if derr := f.deadLetter(ctx, msgs[0].Seq, recs, err); derr != nil {
				err = derr // kept and retried: better late than lost
			} else {
				f.stats.Rejected.Add(1)
				f.log.Error().Err(err).Uint64("seq", msgs[0].Seq).Str("device", msgs[0].Device).Msg("sink refused message permanently; dead-lettered")
				msgs = msgs[1:]
				continue
			}
		}
		f.stats.Failures.Add(1)
		f.stats.failed(err)
		if !failing {
			// Logged once per outage, not per retry.
			f.log.Warn().Err(err).Msg("sink delivery failing; retrying with backoff")
			failing = true
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		backoff = min(backoff*2, f.cfg.MaxBackoff)
	}
	return nil, nil
}

func (f *Forwarder) deadLetter(ctx context.Context, seq uint64, recs []buffer.Record, reason error) error {
	for _, rec := range recs {
		if rec.Seq == seq {
			return f.reader.DeadLetter(ctx, rec, reason.Error())
		}
	}
	return fmt.Errorf("dead-letter %d: record not in batch", seq)
}

// retime asks the queue again for receive times read from a wall clock
// known to be wrong: once the clock is right they come back corrected.
func retime(msgs []sinks.Message, r *buffer.Reader) {
	for i := range msgs {
		if msgs[i].ReceivedUnsure {
			if t, unsure, ok := r.ReceiveTime(msgs[i].Seq); ok {
				msgs[i].Received, msgs[i].ReceivedUnsure = t, unsure
			}
		}
	}
}

// dropDeleted skips the leading messages at or below cursor: the queue
// deleted them (max_age, drop_oldest) while this batch waited, and they
// were counted as expired or dropped.
func dropDeleted(msgs []sinks.Message, cursor uint64) []sinks.Message {
	for len(msgs) > 0 && msgs[0].Seq <= cursor {
		msgs = msgs[1:]
	}
	return msgs
}

// acker acknowledges one stream from its own goroutine, so delivery never
// waits for a commit: while one Ack commits, later ones coalesce into the
// newest (acknowledgements of a stream are cumulative). Delivery waits only
// when it runs more than lag sequences ahead of the last commit: each
// commit deletes what it acknowledges, and a fast sink must not turn that
// into one huge transaction that holds up intake.
type acker struct {
	commit func(seq uint64) error // buffer.Reader.Ack
	log    zerolog.Logger
	lag    uint64
	mu     sync.Mutex
	want   uint64        // newest sequence delivered
	done   uint64        // newest sequence committed
	busy   bool          // the goroutine runs
	idle   chan struct{} // closed when it stops
}

func newAcker(f *Forwarder) *acker {
	return &acker{
		// Even during shutdown: the messages were delivered, and recording
		// it spares duplicates.
		commit: func(seq uint64) error { return f.reader.Ack(context.Background(), seq) },
		log:    f.log,
		lag:    uint64(4 * f.cfg.Batch),
	}
}

func (a *acker) ack(seq uint64) {
	a.mu.Lock()
	if seq <= a.want {
		a.mu.Unlock()
		return
	}
	if a.want == 0 {
		a.done = seq - 1 // the lag counts from the first acknowledgement
	}
	a.want = seq
	if !a.busy {
		a.busy, a.idle = true, make(chan struct{})
		go a.run(a.idle)
	}
	behind := seq-a.done > a.lag
	a.mu.Unlock()
	if behind {
		a.wait()
	}
}

// run acknowledges until nothing newer is wanted.
func (a *acker) run(idle chan struct{}) {
	for {
		a.mu.Lock()
		seq := a.want
		if seq <= a.done {
			a.busy = false
			close(idle)
			a.mu.Unlock()
			return
		}
		a.mu.Unlock()
		if err := a.commit(seq); err != nil && !errors.Is(err, buffer.ErrClosed) {
			// Failing to record it only means they may be delivered again
			// after a restart.
			a.log.Error().Err(err).Uint64("seq", seq).Msg("acknowledge delivered messages")
		}
		a.mu.Lock()
		a.done = seq
		a.mu.Unlock()
	}
}

// wait returns once the acknowledgements asked for are committed.
func (a *acker) wait() {
	a.mu.Lock()
	idle, busy := a.idle, a.busy
	a.mu.Unlock()
	if busy {
		<-idle
	}
}
