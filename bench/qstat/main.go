// Command qstat prints where the bytes of a (closed) queue file go: per
// bucket pages, bytes in use and key counts, plus free pages, as JSON.
// It opens the file read-only and waits at most 2 s for its lock.
//
//	qstat /tmp/d/queue.db
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	bolt "go.etcd.io/bbolt"
)

// BucketStats is one top-level bucket.
type BucketStats struct {
	Keys        int     `json:"keys"`
	Depth       int     `json:"depth"`
	BranchPages int     `json:"branch_pages"`
	LeafPages   int     `json:"leaf_pages"`
	Overflow    int     `json:"overflow_pages"`
	PageBytes   int64   `json:"page_bytes"`   // pages × page size, overflow included
	InuseBytes  int64   `json:"inuse_bytes"`  // bytes actually used in those pages
	FillRatio   float64 `json:"fill_ratio"`   // inuse / page bytes
	FillPercent float64 `json:"fill_percent"` // bucket split threshold (runtime default; not stored)
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: qstat QUEUE_FILE")
		os.Exit(2)
	}
	path := os.Args[1]
	fi, err := os.Stat(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "qstat:", err)
		os.Exit(1)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: 2 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, "qstat:", err)
		os.Exit(1)
	}
	defer db.Close()
	out := map[string]any{"file_bytes": fi.Size(), "page_size": db.Info().PageSize}
	buckets := map[string]BucketStats{}
	err = db.View(func(tx *bolt.Tx) error {
		out["tx_size_bytes"] = tx.Size()
		ps := int64(db.Info().PageSize)
		var used int64
		err := tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			s := b.Stats()
			pages := int64(s.BranchPageN + s.LeafPageN + s.BranchOverflowN + s.LeafOverflowN)
			bs := BucketStats{
				Keys: s.KeyN, Depth: s.Depth, BranchPages: s.BranchPageN, LeafPages: s.LeafPageN,
				Overflow: s.BranchOverflowN + s.LeafOverflowN, PageBytes: pages * ps,
				InuseBytes: int64(s.BranchInuse + s.LeafInuse), FillPercent: b.FillPercent,
			}
			if bs.PageBytes > 0 {
				bs.FillRatio = float64(bs.InuseBytes) / float64(bs.PageBytes)
			}
			used += bs.PageBytes
			buckets[string(name)] = bs
			return nil
		})
		out["bucket_page_bytes"] = used
		return err
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "qstat:", err)
		os.Exit(1)
	}
	st := db.Stats()
	out["free_pages"] = st.FreePageN
	out["pending_pages"] = st.PendingPageN
	out["buckets"] = buckets
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	enc.Encode(out)
}
