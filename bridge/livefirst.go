package bridge

import (
	"context"
	"errors"
	"fmt"
	"time"

	"wittra-gateway/buffer"
	"wittra-gateway/sinks"
)

// Backlog says how a forwarder orders a backlog against new messages.
type Backlog uint8

const (
	// InOrder delivers strictly in queue order: a backlog first, then what
	// arrived behind it.
	InOrder Backlog = iota
	// LiveFirst delivers messages accepted after a backlog formed ahead of
	// it, and drains the backlog with the remaining capacity. Per-device
	// order holds within each of the two streams, not across them.
	LiveFirst
)

// ParseBacklog reads the config spelling: "in_order" or "live_first" ("",
// unset, is in_order).
func ParseBacklog(s string) (Backlog, error) {
	switch s {
	case "in_order", "":
		return InOrder, nil
	case "live_first":
		return LiveFirst, nil
	}
	return InOrder, fmt.Errorf("must be in_order or live_first (got %q)", s)
}

func (b Backlog) String() string {
	if b == LiveFirst {
		return "live_first"
	}
	return "in_order"
}

// liveRecent: live messages delivered within this long count as live
// traffic flowing, and the backlog then goes in BacklogBatch batches so a
// live message waits behind at most one of them.
const liveRecent = time.Second

// runLiveFirst is Run for LiveFirst (docs/live-first.md):
//
//   - when more than one batch is waiting unread and the consumer has no
//     split, everything stored becomes the backlog (buffer.Reader.Split);
//   - each round delivers what the live stream has (up to a batch), then
//     one batch of the backlog: live messages wait behind at most one
//     backlog batch, and the backlog is never starved;
//   - each stream is acknowledged on its own, the newest delivered
//     sequence only (acks of one stream coalesce while one commits);
//   - what a sink returned early without stays in flight in its stream's
//     pipe and goes back to the sink first in that stream's next call.
func (f *Forwarder) runLiveFirst(ctx context.Context) error {
	live, backlog := newAcker(f), newAcker(f)
	defer live.wait()
	defer backlog.wait()
	f.seedRetained()
	var livePipe, backlogPipe pipe
	var lastLive time.Time
	for {
		if ctx.Err() != nil {
			return nil
		}
		if !f.reader.SplitState().Active && f.reader.Unread() > uint64(f.cfg.Batch) {
			made, err := f.reader.Split(ctx)
			if err != nil {
				return f.readErr(ctx, err)
			}
			if made {
				b, _ := f.reader.Pending()
				f.log.Info().Uint64("backlog", b).Msg("backlog: delivering new messages first while it drains")
			}
		}
		var recs []buffer.Record
		var err error
		if len(livePipe.rest) < f.cfg.Batch {
			if recs, err = f.reader.ReadLive(f.cfg.Batch, f.cfg.BatchBytes); err != nil {
				return f.readErr(ctx, err)
			}
		}
		delivered := len(livePipe.rest)+len(backlogPipe.rest) > 0
		if len(recs) > 0 {
			lastLive, delivered = time.Now(), true
		}
		seq, err := f.send(ctx, &livePipe, recs)
		if err != nil {
			return nil // only ctx ends delivery
		}
		live.ack(seq)
		n := f.cfg.Batch
		if time.Since(lastLive) < liveRecent {
			n = f.cfg.BacklogBatch
		}
		recs = nil
		if len(backlogPipe.rest) < n {
			if recs, err = f.reader.ReadBacklog(n, f.cfg.BatchBytes); err != nil {
				return f.readErr(ctx, err)
			}
		}
		delivered = delivered || len(recs) > 0
		if seq, err = f.send(ctx, &backlogPipe, recs); err != nil {
			return nil
		}
		backlog.ack(seq)
		if !delivered {
			if err := f.reader.Wait(ctx); err != nil {
				return f.readErr(ctx, err)
			}
		}
	}
}

// readErr is what Run returns for a queue error: nil at shutdown.
func (f *Forwarder) readErr(ctx context.Context, err error) error {
	if ctx.Err() != nil || errors.Is(err, buffer.ErrClosed) {
		return nil
	}
	return err
}

// seedRetained tells a sink that guards its retained values which live
// messages it published before a restart, ahead of the backlog it is about
// to resume (sinks.RetainGuard).
func (f *Forwarder) seedRetained() {
	rs, ok := f.sink.(sinks.RetainSeeder)
	if !ok {
		return
	}
	var one [1]sinks.Message
	n := 0
	err := f.reader.ScanAckedLive(func(rec buffer.Record) bool {
		m, err := DecodeRecord(rec)
		if err == nil {
			one[0] = m
			rs.SeedRetained(one[:])
			n++
		}
		return true
	})
	if err != nil {
		f.log.Warn().Err(err).Msg("read the live messages delivered before the restart: retained values may go back in time until the backlog drains")
	}
	one[0] = sinks.Message{}
	if n > 0 {
		f.log.Info().Int("messages", n).Msg("retained-value guard seeded with the live messages delivered before the restart")
	}
}
