package buffer

import (
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// DedupKeys is the number of payloadIds the dedup index remembers. It walks
// the index's pages in a read transaction (never in the committer, so intake
// does not wait): a metrics scrape or a soak test's sample, not a hot path.
func (q *Queue) DedupKeys() (int, error) {
	var n int
	err := q.view(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketDedup).Stats().KeyN
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("count dedup keys: %w", err)
	}
	return n, nil
}
