package buffer

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

var bucketDead = []byte("dead")

// MaxDeadLetters bounds the dead-letter bucket; the oldest go first.
const MaxDeadLetters = 100000

// DeadLetter is a message a sink refused permanently, kept for inspection.
type DeadLetter struct {
	Consumer string
	Reason   string
	At       time.Time // when it was refused
	Record
}

// DeadLetter stores rec as refused by this reader's consumer. The caller
// still acknowledges it with Ack: a dead letter never blocks the queue.
func (r *Reader) DeadLetter(ctx context.Context, rec Record, reason string) error {
	key := binary.BigEndian.AppendUint64(nil, rec.Seq)
	key = append(key, r.name...)
	v := binary.BigEndian.AppendUint64(nil, uint64(r.q.tl.now().wall.UnixNano()))
	v = binary.BigEndian.AppendUint64(v, uint64(rec.Time.UnixNano()))
	v = binary.AppendUvarint(v, uint64(len(reason)))
	v = append(v, reason...)
	v = append(v, rec.Data...)
	return r.q.submit(ctx, &op{dirty: dirtyDead, apply: func(tx *bolt.Tx, st *state, c *Counters) error {
		b, err := tx.CreateBucketIfNotExists(bucketDead)
		if err != nil {
			return fmt.Errorf("dead-letter bucket: %w", err)
		}
		// The count lives in the state: walking the bucket (Stats) would
		// cost O(n) per insert and, reading committed pages only, miss the
		// inserts of the same batch.
		replaced := b.Get(key) != nil
		for !replaced && st.dead >= r.q.cfg.MaxDeadLetters {
			k, _ := b.Cursor().First()
			if k == nil {
				st.dead = 0
				break
			}
			if err := b.Delete(k); err != nil {
				return fmt.Errorf("drop oldest dead letter: %w", err)
			}
			st.dead--
		}
		if err := b.Put(key, v); err != nil {
			return fmt.Errorf("put dead letter: %w", err)
		}
		if !replaced {
			st.dead++
		}
		c.DeadLetters++
		return nil
	}})
}

// DeadLetters calls fn for each stored dead letter, oldest message first,
// until fn returns false. Data is only valid during the call.
func (q *Queue) DeadLetters(fn func(DeadLetter) bool) error {
	return q.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDead)
		if b == nil {
			return nil
		}
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.Next() {
			d, err := decodeDead(k, v)
			if err != nil {
				return err
			}
			if !fn(d) {
				return nil
			}
		}
		return nil
	})
}

func decodeDead(k, v []byte) (DeadLetter, error) {
	bad := &CorruptError{Key: fmt.Sprintf("dead/%x", k), Err: errors.New("short dead letter")}
	if len(k) < 8 || len(v) < 16 {
		return DeadLetter{}, bad
	}
	d := DeadLetter{Consumer: string(k[8:])}
	d.Seq = binary.BigEndian.Uint64(k)
	d.At = time.Unix(0, int64(binary.BigEndian.Uint64(v)))
	d.Time = time.Unix(0, int64(binary.BigEndian.Uint64(v[8:])))
	n, w := binary.Uvarint(v[16:])
	if w <= 0 || uint64(len(v)-16-w) < n {
		return DeadLetter{}, bad
	}
	d.Reason = string(v[16+w : 16+w+int(n)])
	d.Data = v[16+w+int(n):]
	return d, nil
}

// deadLetterCount reads how many dead letters the file holds.
func deadLetterCount(tx *bolt.Tx) uint64 {
	if b := tx.Bucket(bucketDead); b != nil {
		return uint64(b.Stats().KeyN)
	}
	return 0
}
