package buffer

import (
	"context"
	"encoding/binary"

	"wittra-gateway/internal/clock"

	bolt "go.etcd.io/bbolt"
)

// sweepBatch bounds the dedup keys one sweep transaction deletes, so a
// sweep never holds the committer for long; a sweep runs as many as needed.
const sweepBatch = 10000

func (q *Queue) sweepLoop() {
	defer q.wg.Done()
	clock.Every(q.done, q.cfg.SweepInterval, func() {
		if err := q.Sweep(context.Background()); err != nil {
			q.log.Error().Err(err).Msg("queue sweep")
		}
		q.releaseMapped()
		if ok, size := q.needsCompaction(); ok {
			q.log.Info().Int64("file_bytes", size).Msg("queue file mostly empty: compacting")
			if err := q.Compact(); err != nil {
				q.log.Error().Err(err).Msg("queue compaction")
			}
		}
	})
}

// Sweep expires messages older than MaxAge and forgets dedup keys older
// than DedupWindow. It runs periodically; tests call it directly.
//
// Every expired dedup record goes, however many: in transactions of about
// sweepBatch keys, so other writes interleave, until none is left. The
// dedup window therefore holds at most the keys accepted within
// DedupWindow plus one SweepInterval, whatever the intake rate.
func (q *Queue) Sweep(ctx context.Context) error {
	var expired uint64
	var more bool
	var cutoff int64
	err := q.submit(ctx, &op{apply: func(tx *bolt.Tx, st *state, c *Counters) error {
		expired, more = 0, false
		// Ages are gateway time (timeline.go): a wall-clock step neither
		// expires nor keeps anything.
		now := q.tl.now()
		if q.cfg.MaxAge > 0 {
			cutoff := now.g - int64(q.cfg.MaxAge)
			n, err := deleteFront(tx, st, func(seq uint64, v []byte) bool {
				return recordG(st.epochs, seq, int64(binary.BigEndian.Uint64(v))) >= cutoff
			})
			if err != nil {
				return err
			}
			expired = n
			c.Expired += n
		}
		// Gateway time starts near zero on a box that booted at 1970: a
		// negative cutoff means nothing is old enough yet. With dedup off
		// every record goes (they would otherwise stay forever).
		cutoff = now.g - int64(q.cfg.DedupWindow)
		if cutoff > 0 || q.cfg.DedupWindow == 0 {
			var err error
			more, err = q.dx.sweepDedupRecords(tx, cutoff)
			return err
		}
		return nil
	}})
	for err == nil && more {
		err = q.submit(ctx, &op{apply: func(tx *bolt.Tx, _ *state, _ *Counters) error {
			var err error
			more, err = q.dx.sweepDedupRecords(tx, cutoff)
			return err
		}})
	}
	if err != nil {
		return err
	}
	if expired > 0 {
		q.log.Warn().Uint64("expired", expired).Stringer("max_age", q.cfg.MaxAge).Msg("undelivered messages expired")
	}
	return nil
}
