package buffer

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// sweepBatch bounds the dedup keys one sweep transaction deletes, so a
// sweep never holds the committer for long; a sweep runs as many as needed.
const sweepBatch = 10000

func (q *Queue) sweepLoop() {
	defer q.wg.Done()
	t := time.NewTicker(q.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-q.done:
			return
		case <-t.C:
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
		}
	}
}

// Sweep expires messages older than MaxAge and forgets dedup keys older
// than DedupWindow. It runs periodically; tests call it directly.
//
// Every expired dedup key goes, however many: in transactions of at most
// sweepBatch deletions, so other writes interleave, until none is left.
// The dedup index therefore holds at most the keys accepted within
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
		// negative cutoff means nothing is old enough yet (and must not
		// wrap around as an unsigned key).
		cutoff = now.g - int64(q.cfg.DedupWindow)
		if q.cfg.DedupWindow > 0 && cutoff > 0 {
			var err error
			more, err = sweepDedup(tx, uint64(cutoff))
			return err
		}
		return nil
	}})
	for err == nil && more {
		err = q.submit(ctx, &op{apply: func(tx *bolt.Tx, _ *state, _ *Counters) error {
			var err error
			more, err = sweepDedup(tx, uint64(cutoff))
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

// sweepDedup deletes up to sweepBatch dedup keys older than cutoff; more
// reports that expired keys may remain.
func sweepDedup(tx *bolt.Tx, cutoff uint64) (more bool, err error) {
	index, keys := tx.Bucket(bucketDedupT), tx.Bucket(bucketDedup)
	c := index.Cursor()
	for range sweepBatch {
		k, _ := c.First()
		if k == nil || binary.BigEndian.Uint64(k) >= cutoff {
			return false, nil
		}
		key := append([]byte(nil), k[8:]...)
		// The key may have been accepted again since; only the index entry
		// of its latest acceptance may remove it.
		if v := keys.Get(key); len(v) == 8 && binary.BigEndian.Uint64(v) == binary.BigEndian.Uint64(k) {
			if err := keys.Delete(key); err != nil {
				return false, fmt.Errorf("delete dedup key: %w", err)
			}
		}
		if err := c.Delete(); err != nil {
			return false, fmt.Errorf("delete dedup index: %w", err)
		}
	}
	return true, nil
}
