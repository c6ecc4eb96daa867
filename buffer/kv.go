package buffer

import (
	"context"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

var bucketKV = []byte("kv")

// KV is a small durable key-value namespace kept in the queue file, for a
// sink's own state (for example which Cumulocity child devices exist). Keeping
// it here means one file, one lock and one fsync path for everything durable.
type KV struct {
	q         *Queue
	namespace []byte
}

// KV returns the namespace's store; it is created on first Put.
func (q *Queue) KV(namespace string) *KV { return &KV{q: q, namespace: []byte(namespace)} }

// Get returns a copy of the value of key, or nil when absent.
func (k *KV) Get(key string) ([]byte, error) {
	var out []byte
	err := k.q.view(func(tx *bolt.Tx) error {
		if b := k.bucket(tx); b != nil {
			if v := b.Get([]byte(key)); v != nil {
				out = append([]byte{}, v...)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("kv get %s/%s: %w", k.namespace, key, err)
	}
	return out, nil
}

// Put stores value under key durably (it returns after the commit).
func (k *KV) Put(ctx context.Context, key string, value []byte) error {
	err := k.write(ctx, map[string][]byte{key: append([]byte{}, value...)}) // never nil: nil deletes
	if err != nil {
		return fmt.Errorf("kv put %s/%s: %w", k.namespace, key, err)
	}
	return nil
}

// Keys lists the namespace's keys in byte order.
func (k *KV) Keys() ([]string, error) {
	var keys []string
	err := k.q.view(func(tx *bolt.Tx) error {
		if b := k.bucket(tx); b != nil {
			return b.ForEach(func(key, _ []byte) error {
				keys = append(keys, string(key))
				return nil
			})
		}
		return nil
	})
	return keys, err
}

func (k *KV) bucket(tx *bolt.Tx) *bolt.Bucket {
	root := tx.Bucket(bucketKV)
	if root == nil {
		return nil
	}
	return root.Bucket(k.namespace)
}

// Update stores every key of puts in one commit; a nil value deletes the
// key. It returns after the commit.
func (k *KV) Update(ctx context.Context, puts map[string][]byte) error {
	if len(puts) == 0 {
		return nil
	}
	cp := make(map[string][]byte, len(puts))
	for key, v := range puts {
		if v != nil {
			v = append([]byte{}, v...)
		}
		cp[key] = v
	}
	err := k.write(ctx, cp)
	if err != nil {
		return fmt.Errorf("kv update %s (%d keys): %w", k.namespace, len(puts), err)
	}
	return nil
}

// write commits puts (owned by the call; a nil value deletes its key) and
// returns after the commit.
func (k *KV) write(ctx context.Context, puts map[string][]byte) error {
	return k.q.submit(ctx, &op{dirty: dirtyKV, apply: func(tx *bolt.Tx, _ *state, _ *Counters) error {
		root, err := tx.CreateBucketIfNotExists(bucketKV)
		if err != nil {
			return err
		}
		b, err := root.CreateBucketIfNotExists(k.namespace)
		if err != nil {
			return err
		}
		for key, v := range puts {
			if v == nil {
				err = b.Delete([]byte(key))
			} else {
				err = b.Put([]byte(key), v)
			}
			if err != nil {
				return err
			}
		}
		return nil
	}})
}

// ForEach calls fn for every key and value of the namespace in byte order,
// within one read transaction; value is only valid during the call.
func (k *KV) ForEach(fn func(key string, value []byte) error) error {
	return k.q.view(func(tx *bolt.Tx) error {
		if b := k.bucket(tx); b != nil {
			return b.ForEach(func(key, v []byte) error { return fn(string(key), v) })
		}
		return nil
	})
}
