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
	value = append([]byte{}, value...)
	err := k.q.submit(ctx, &op{dirty: dirtyKV, apply: func(tx *bolt.Tx, _ *state, _ *Counters) error {
		root, err := tx.CreateBucketIfNotExists(bucketKV)
		if err != nil {
			return err
		}
		b, err := root.CreateBucketIfNotExists(k.namespace)
		if err != nil {
			return err
		}
		return b.Put([]byte(key), value)
	}})
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
