package buffer

import (
	"context"
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// A consumer that delivers live messages ahead of its backlog (a sink with
// `backlog: live_first`) acknowledges a set that is not one run from the
// head. It is described by three numbers (docs/live-first.md):
//
//	cursor  every sequence ≤ cursor is acknowledged (the "cursor/<name>" key,
//	        unchanged in meaning: the backlog's cursor)
//	at      the split point: (cursor, at] is the backlog, (at, …] the live
//	        stream
//	live    every sequence in (at, live] is acknowledged too
//
// stored as "split/<name>" → 8-byte at + 8-byte live, in the same commit as
// the acknowledgement that moved them. Absent: no split, the consumer is one
// stream as before. When the backlog cursor reaches at, the two runs join:
// cursor = live and the key is deleted.
//
// A binary that does not know the key reads cursor alone and sends (at,
// live] again: duplicates, never a loss. Messages are still only deleted
// from the front (below the lowest cursor), so the live messages already
// acknowledged stay stored until the backlog before them drains.
const splitPrefix = "split/"

// split is one consumer's split point and live cursor; cursor ≤ at ≤ live.
type split struct{ at, live uint64 }

func (s split) value() []byte {
	v := make([]byte, 16)
	binary.BigEndian.PutUint64(v, s.at)
	binary.BigEndian.PutUint64(v[8:], s.live)
	return v
}

func splitKey(name string) []byte { return []byte(splitPrefix + name) }

// loadSplits reads the split keys into st (cursors already loaded). A split
// of a consumer no longer configured, a malformed one or one that no longer
// fits its cursor is deleted: the consumer then resends (at, live], which
// is safe.
func (q *Queue) loadSplits(tx *bolt.Tx, st *state) error {
	meta := tx.Bucket(bucketMeta)
	st.splits = map[string]split{}
	var drop [][]byte
	c := meta.Cursor()
	for k, v := c.Seek([]byte(splitPrefix)); k != nil && len(k) >= len(splitPrefix) && string(k[:len(splitPrefix)]) == splitPrefix; k, v = c.Next() {
		name := string(k[len(splitPrefix):])
		cur, configured := st.cursors[name]
		if len(v) != 16 || !configured {
			drop = append(drop, append([]byte(nil), k...))
			continue
		}
		sp := split{at: binary.BigEndian.Uint64(v), live: binary.BigEndian.Uint64(v[8:])}
		switch {
		case sp.at > sp.live || sp.live > st.last:
			q.log.Warn().Str("consumer", name).Uint64("cursor", cur).Uint64("split", sp.at).Uint64("live", sp.live).
				Msg("split point does not fit the queue: dropped (live messages already delivered may be sent again)")
			drop = append(drop, append([]byte(nil), k...))
		case cur >= sp.at:
			// The backlog was drained (e.g. by a binary that ignores the
			// key): join the runs.
			st.cursors[name] = max(cur, sp.live)
			if err := meta.Put([]byte(cursorPrefix+name), u64(st.cursors[name])); err != nil {
				return fmt.Errorf("join cursor %s: %w", name, err)
			}
			drop = append(drop, append([]byte(nil), k...))
		default:
			st.splits[name] = sp
		}
	}
	for _, k := range drop {
		if err := meta.Delete(k); err != nil {
			return fmt.Errorf("delete %s: %w", k, err)
		}
	}
	return nil
}

// ack records that name has every message up to seq of seq's stream: the
// live stream when seq is past the split point, else the backlog (or the
// only stream). It reports whether the cursor moved (so trim may delete).
func (st *state) ack(meta *bolt.Bucket, name string, seq uint64) (moved bool, err error) {
	sp, split := st.splits[name]
	if split && seq > sp.at {
		if seq <= sp.live {
			return false, nil
		}
		sp.live = seq
		st.splits[name] = sp
		if err := meta.Put(splitKey(name), sp.value()); err != nil {
			return false, fmt.Errorf("put split %s: %w", name, err)
		}
		return false, nil
	}
	if seq <= st.cursors[name] {
		return false, nil
	}
	if split && seq >= sp.at {
		seq = max(seq, sp.live)
		if err := st.unsplit(meta, name); err != nil {
			return false, err
		}
	}
	st.cursors[name] = seq
	if err := meta.Put([]byte(cursorPrefix+name), u64(seq)); err != nil {
		return false, fmt.Errorf("put cursor %s: %w", name, err)
	}
	return true, nil
}

func (st *state) unsplit(meta *bolt.Bucket, name string) error {
	delete(st.splits, name)
	if err := meta.Delete(splitKey(name)); err != nil {
		return fmt.Errorf("delete split %s: %w", name, err)
	}
	return nil
}

// joinDeleted is called after messages were deleted from the front and
// cursors moved past them: a backlog deleted whole joins its live run.
func joinDeleted(meta *bolt.Bucket, st *state) error {
	for name, sp := range st.splits {
		cur := st.cursors[name]
		if cur < sp.at {
			continue
		}
		if err := st.unsplit(meta, name); err != nil {
			return err
		}
		if sp.live > cur {
			st.cursors[name] = sp.live
			if err := meta.Put([]byte(cursorPrefix+name), u64(sp.live)); err != nil {
				return fmt.Errorf("join cursor %s: %w", name, err)
			}
		}
	}
	return nil
}

// pending is how many stored messages name has not acknowledged.
func (st *state) pending(name string) (backlog, live uint64) {
	cur := st.cursors[name]
	if sp, ok := st.splits[name]; ok {
		return sp.at - cur, st.last - sp.live
	}
	if st.last > cur {
		return st.last - cur, 0
	}
	return 0, 0
}

// SplitState is a consumer's acknowledged set: Cursor, and with a split
// also (At, Live].
type SplitState struct {
	Active bool
	Cursor uint64 // everything ≤ Cursor is acknowledged
	At     uint64 // the backlog is (Cursor, At]
	Live   uint64 // (At, Live] is acknowledged
}

// SplitState returns the consumer's acknowledged set as last committed.
func (r *Reader) SplitState() SplitState {
	r.q.mu.Lock()
	defer r.q.mu.Unlock()
	sp, ok := r.q.st.splits[r.name]
	return SplitState{Active: ok, Cursor: r.q.st.cursors[r.name], At: sp.at, Live: sp.live}
}

// Pending returns how many messages the consumer has not acknowledged, in
// its backlog (everything when there is no split) and after the split.
func (r *Reader) Pending() (backlog, live uint64) {
	r.q.mu.Lock()
	defer r.q.mu.Unlock()
	return r.q.st.pending(r.name)
}

// Split makes every message stored now that the consumer has not
// acknowledged its backlog; messages appended from now on are its live
// stream. It does nothing (false) when a split exists or nothing is
// pending. Reads already returned count as the backlog's.
func (r *Reader) Split(ctx context.Context) (bool, error) {
	name := r.name
	var made bool
	var at uint64
	err := r.q.submit(ctx, &op{apply: func(tx *bolt.Tx, st *state, _ *Counters) error {
		made = false
		if _, ok := st.splits[name]; ok || st.last <= st.cursors[name] {
			return nil
		}
		sp := split{at: st.last, live: st.last}
		st.splits[name] = sp
		if err := tx.Bucket(bucketMeta).Put(splitKey(name), sp.value()); err != nil {
			return fmt.Errorf("put split %s: %w", name, err)
		}
		made, at = true, sp.at
		return nil
	}})
	if err != nil || !made {
		return false, err
	}
	r.next = max(r.next, r.liveNext)
	r.liveNext = at + 1
	r.split = true
	return true, nil
}

// reconcile brings the read positions in line with the committed split
// (r.q.mu held): a split joined since the last read leaves one stream
// again, read from wherever either stream got to.
func (r *Reader) reconcile() (split, bool) {
	sp, ok := r.q.st.splits[r.name]
	switch {
	case ok:
		r.split = true
		r.liveNext = max(r.liveNext, sp.live+1)
	case r.split:
		r.split = false
		r.next = max(r.next, r.liveNext)
	}
	return sp, ok
}

// ReadBacklog returns, without waiting, up to limit records (about maxBytes)
// of the backlog following the previous read of it; none when there is no
// split or all of the backlog has been read.
func (r *Reader) ReadBacklog(limit, maxBytes int) ([]Record, error) {
	r.q.mu.Lock()
	sp, ok := r.reconcile()
	r.q.mu.Unlock()
	if !ok || r.next > sp.at {
		return nil, nil
	}
	recs, err := r.q.readRange(r.next, sp.at, limit, maxBytes)
	if err != nil {
		return nil, err
	}
	if len(recs) > 0 {
		r.next = recs[len(recs)-1].Seq + 1
	} else {
		r.next = sp.at + 1 // deleted under us (expired or dropped)
	}
	return recs, nil
}

// ReadLive returns, without waiting, up to limit records (about maxBytes)
// after the split point following the previous read of them; without a
// split, the next records of the one stream.
func (r *Reader) ReadLive(limit, maxBytes int) ([]Record, error) {
	r.q.mu.Lock()
	_, ok := r.reconcile()
	last := r.q.st.last
	r.q.mu.Unlock()
	pos := &r.next
	if ok {
		pos = &r.liveNext
	}
	if *pos > last {
		return nil, nil
	}
	recs, err := r.q.readRange(*pos, last, limit, maxBytes)
	if err != nil {
		return nil, err
	}
	if len(recs) > 0 {
		*pos = recs[len(recs)-1].Seq + 1
	} else {
		*pos = last + 1
	}
	return recs, nil
}

// Wait returns when messages may have been appended since the last read,
// when ctx ends (its error) or when the queue closes (ErrClosed).
func (r *Reader) Wait(ctx context.Context) error {
	select {
	case <-r.wake:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-r.q.done:
		return ErrClosed
	}
}

// ScanAckedLive calls fn, in order, for the live messages already
// acknowledged, (At, Live], until fn returns false: what a restarted sink
// published ahead of its backlog. Record data is only valid during the call.
func (r *Reader) ScanAckedLive(fn func(Record) bool) error {
	sp := r.SplitState()
	if !sp.Active || sp.Live <= sp.At {
		return nil
	}
	return r.q.Scan(sp.At+1, func(rec Record) bool {
		return rec.Seq <= sp.Live && fn(rec)
	})
}

// Unread is how many stored messages follow the reader's read position
// in its backlog, or in its one stream when it has no split.
func (r *Reader) Unread() uint64 {
	r.q.mu.Lock()
	defer r.q.mu.Unlock()
	sp, ok := r.reconcile()
	last := r.q.st.last
	if ok {
		last = sp.at
	}
	if r.next > last {
		return 0
	}
	return last - r.next + 1
}
