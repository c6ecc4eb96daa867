package buffer

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Reader reads one consumer's messages in order. Its read position runs
// ahead of the durable cursor: Read returns what comes after the previous
// Read, Ack makes progress durable. After a restart reading resumes after
// the last acknowledged message, so delivery is at-least-once.
// A Reader is used by one goroutine.
type Reader struct {
	q    *Queue
	name string
	next uint64 // read position of the backlog, or of the one stream
	wake chan struct{}
	// With a split (split.go): the live stream's read position, and
	// whether the reader has seen the split (to notice when it joins).
	liveNext uint64
	split    bool
}

// Reader returns the reader of a configured consumer. There is one reader
// per consumer; asking twice returns the same one.
func (q *Queue) Reader(name string) (*Reader, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	cur, ok := q.st.cursors[name]
	if !ok {
		return nil, fmt.Errorf("reader %s: not a configured consumer", name)
	}
	if r, ok := q.readers[name]; ok {
		return r, nil
	}
	r := &Reader{q: q, name: name, next: cur + 1, wake: make(chan struct{}, 1)}
	r.reconcile()
	q.readers[name] = r
	return r, nil
}

func (q *Queue) wakeReaders() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, r := range q.readers {
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
}

// Read returns up to max records (and about maxBytes of data, at least one
// record) following the previous Read, waiting until at least one exists.
// A split left by live_first delivery (split.go) is read in order: the
// backlog, then what follows the live cursor; a batch never spans both.
func (r *Reader) Read(ctx context.Context, limit int, maxBytes int) ([]Record, error) {
	for {
		r.q.mu.Lock()
		last := r.q.st.last
		backlog := false
		if sp, ok := r.reconcile(); ok {
			if r.next <= sp.at {
				last, backlog = sp.at, true
			} else {
				r.next = max(r.next, r.liveNext)
			}
		}
		r.q.mu.Unlock()
		if r.next <= last {
			recs, err := r.q.readRange(r.next, last, limit, maxBytes)
			if err != nil {
				return nil, err
			}
			if len(recs) > 0 {
				r.next = recs[len(recs)-1].Seq + 1
				return recs, nil
			}
			// Everything up to last was deleted under us (expired or
			// dropped): nothing to return until the next append, or
			// from the live stream after a backlog.
			r.next = last + 1
			if backlog {
				continue
			}
		}
		select {
		case <-r.wake:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-r.q.done:
			return nil, ErrClosed
		}
	}
}

// readRange copies up to max records with sequence in [from, to]. A first
// pass sizes one allocation for all values; the read transaction ends
// before the caller does any I/O.
func (q *Queue) readRange(from, to uint64, max, maxBytes int) ([]Record, error) {
	var recs []Record
	timeOf := q.timer()
	err := q.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketMsgs).Cursor()
		n, size := 0, 0
		for k, v := c.Seek(u64(from)); k != nil && n < max && binary.BigEndian.Uint64(k) <= to; k, v = c.Next() {
			if len(v) < 8 {
				return &CorruptError{Key: fmt.Sprint(binary.BigEndian.Uint64(k)), Err: fmt.Errorf("value has %d bytes", len(v))}
			}
			if n > 0 && size+len(v)-8 > maxBytes {
				break
			}
			n, size = n+1, size+len(v)-8
		}
		recs = make([]Record, 0, n)
		slab := make([]byte, 0, size)
		for k, v := c.Seek(u64(from)); k != nil && len(recs) < n; k, v = c.Next() {
			start := len(slab)
			slab = append(slab, v[8:]...)
			seq := binary.BigEndian.Uint64(k)
			t, unsure := timeOf(seq, int64(binary.BigEndian.Uint64(v)))
			recs = append(recs, Record{Seq: seq, Time: t, TimeUnsure: unsure, Data: slab[start:len(slab):len(slab)]})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read queue: %w", err)
	}
	q.noteRead(recs)
	return recs, nil
}

// Ack records durably that the consumer has every message up to seq, and
// deletes messages no consumer needs any more. With a split (split.go) it
// acknowledges seq's stream only: the live one when seq is past the split
// point, else the backlog.
func (r *Reader) Ack(ctx context.Context, seq uint64) error {
	name := r.name
	return r.q.submit(ctx, &op{apply: func(tx *bolt.Tx, st *state, _ *Counters) error {
		moved, err := st.ack(tx.Bucket(bucketMeta), name, seq)
		if err != nil || !moved {
			return err
		}
		return trim(tx, st)
	}})
}

// Cursor is the consumer's last acknowledged sequence. Expiry and
// drop_oldest move it past messages they delete, so a message at or below
// it must not be delivered any more.
func (r *Reader) Cursor() uint64 {
	r.q.mu.Lock()
	defer r.q.mu.Unlock()
	return r.q.st.cursors[r.name]
}

// Name is the consumer's name.
func (r *Reader) Name() string { return r.name }

// ConsumerStats describes one consumer's backlog.
type ConsumerStats struct {
	Name   string
	Cursor uint64    // last acknowledged sequence
	Depth  uint64    // messages stored after the cursor
	Oldest time.Time // receive time of the first unacknowledged message; zero when none
	// OldestAge is that message's age in gateway time (what MaxAge
	// measures; immune to wall-clock steps); 0 when none.
	OldestAge time.Duration
	// Depth split in two (split.go): Backlog is (Cursor, split point], or
	// all of Depth when the consumer has no split; Live is what follows
	// the split point unacknowledged. Oldest and OldestAge are the
	// backlog's; LiveOldestAge is the oldest live message's.
	Backlog, Live uint64
	LiveOldestAge time.Duration
}

// Stats describes the queue.
type Stats struct {
	Messages  uint64 // stored messages
	Bytes     int64  // stored record bytes (as counted against MaxBytes)
	Head      uint64 // lowest stored sequence
	Last      uint64 // highest sequence ever assigned
	Consumers []ConsumerStats
	Counters
}

// Stats reads the queue's state; oldest times cost one lookup per consumer.
func (q *Queue) Stats() (Stats, error) {
	q.mu.Lock()
	st, counters := q.st.clone(), q.counters
	q.mu.Unlock()
	s := Stats{Bytes: st.bytes, Head: st.head, Last: st.last, Counters: counters}
	if st.last >= st.head {
		s.Messages = st.last - st.head + 1
	}
	names := make([]string, 0, len(st.cursors))
	for n := range st.cursors {
		names = append(names, n)
	}
	slices.Sort(names)
	timeOf, now := q.timer(), q.tl.now()
	err := q.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketMsgs).Cursor()
		for _, n := range names {
			cs := ConsumerStats{Name: n, Cursor: st.cursors[n]}
			cs.Backlog, cs.Live = st.pending(n)
			cs.Depth = cs.Backlog + cs.Live
			if cs.Backlog > 0 {
				if k, v := c.Seek(u64(cs.Cursor + 1)); k != nil && len(v) >= 8 {
					wall := int64(binary.BigEndian.Uint64(v))
					cs.Oldest, _ = timeOf(cs.Cursor+1, wall)
					cs.OldestAge = max(0, time.Duration(now.g-recordG(st.epochs, binary.BigEndian.Uint64(k), wall)))
				}
			}
			if sp, ok := st.splits[n]; ok && cs.Live > 0 {
				if k, v := c.Seek(u64(sp.live + 1)); k != nil && len(v) >= 8 {
					wall := int64(binary.BigEndian.Uint64(v))
					cs.LiveOldestAge = max(0, time.Duration(now.g-recordG(st.epochs, binary.BigEndian.Uint64(k), wall)))
				}
			}
			s.Consumers = append(s.Consumers, cs)
		}
		return nil
	})
	if err != nil {
		return s, fmt.Errorf("queue stats: %w", err)
	}
	return s, nil
}

// Scan calls fn for stored records from sequence from on, in order, until fn
// returns false. Record data is only valid during the call.
func (q *Queue) Scan(from uint64, fn func(Record) bool) error {
	timeOf := q.timer()
	return q.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketMsgs).Cursor()
		for k, v := c.Seek(u64(from)); k != nil; k, v = c.Next() {
			if len(v) < 8 {
				return &CorruptError{Key: fmt.Sprint(binary.BigEndian.Uint64(k)), Err: fmt.Errorf("value has %d bytes", len(v))}
			}
			seq := binary.BigEndian.Uint64(k)
			t, unsure := timeOf(seq, int64(binary.BigEndian.Uint64(v)))
			rec := Record{Seq: seq, Time: t, TimeUnsure: unsure, Data: v[8:]}
			if !fn(rec) {
				return nil
			}
		}
		return nil
	})
}

// Purge deletes every stored message and moves every cursor past them. It
// returns how many messages it deleted.
func (q *Queue) Purge(ctx context.Context) (uint64, error) {
	var n uint64
	err := q.submit(ctx, &op{apply: func(tx *bolt.Tx, st *state, _ *Counters) error {
		var err error
		n, err = deleteFront(tx, st, func(uint64, []byte) bool { return false })
		return err
	}})
	return n, err
}

// ReceiveTime re-reads the receive time of a stored record as best known
// now (see Record.Time): a sink that could not use an unsure time asks
// again once the clock may be right. ok is false when seq is not stored.
func (r *Reader) ReceiveTime(seq uint64) (t time.Time, unsure, ok bool) {
	timeOf := r.q.timer()
	err := r.q.view(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMsgs).Get(u64(seq)); len(v) >= 8 {
			t, unsure = timeOf(seq, int64(binary.BigEndian.Uint64(v)))
			ok = true
		}
		return nil
	})
	return t, unsure, ok && err == nil
}
