package buffer

import (
	"bytes"
	"fmt"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// copyDB is bbolt's Compact with a hook after each commit: the copy must
// hold every key, value, nested bucket and bucket sequence of the source,
// and call the hook once per transaction.
func TestCopyDBCopiesEverythingInBoundedTransactions(t *testing.T) {
	dir := t.TempDir()
	open := func(name string) *bolt.DB {
		db, err := bolt.Open(filepath.Join(dir, name), 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	}
	src, dst := open("src.db"), open("dst.db")
	err := src.Update(func(tx *bolt.Tx) error {
		for bi, name := range []string{"msgs", "meta"} {
			b, err := tx.CreateBucket([]byte(name))
			if err != nil {
				return err
			}
			if err := b.SetSequence(uint64(1000 + bi)); err != nil {
				return err
			}
			for i := range 2000 {
				if err := b.Put(fmt.Appendf(nil, "%s-%05d", name, i), bytes.Repeat([]byte{byte(i)}, 50)); err != nil {
					return err
				}
			}
		}
		nested, err := tx.Bucket([]byte("meta")).CreateBucket([]byte("nested"))
		if err != nil {
			return err
		}
		if err := nested.SetSequence(7); err != nil {
			return err
		}
		return nested.Put([]byte("k"), []byte("v"))
	})
	if err != nil {
		t.Fatal(err)
	}
	commits := 0
	if err := copyDB(dst, src, 16<<10, func(stx *bolt.Tx) {
		if stx == nil || stx.Writable() {
			t.Error("hook without the source's read transaction")
		}
		commits++
	}); err != nil {
		t.Fatal(err)
	}
	// 2 × 2000 × 60 bytes (and a few names) in 16 KiB transactions: 15,
	// the hook after each, the last one's too.
	if commits != 15 {
		t.Errorf("%d hook calls, want one per 16 KiB copied: 15", commits)
	}
	err = src.View(func(stx *bolt.Tx) error {
		return dst.View(func(dtx *bolt.Tx) error {
			var cmp func(path string, s, d *bolt.Bucket)
			cmp = func(path string, s, d *bolt.Bucket) {
				if d == nil {
					t.Fatalf("bucket %s missing in the copy", path)
				}
				if s.Sequence() != d.Sequence() {
					t.Errorf("bucket %s: sequence %d, want %d", path, d.Sequence(), s.Sequence())
				}
				n := 0
				_ = s.ForEach(func(k, v []byte) error {
					n++
					if v == nil {
						cmp(path+"/"+string(k), s.Bucket(k), d.Bucket(k))
					} else if got := d.Get(k); !bytes.Equal(got, v) {
						t.Errorf("%s/%s: %q, want %q", path, k, got, v)
					}
					return nil
				})
				m := 0
				_ = d.ForEach(func(_, _ []byte) error { m++; return nil })
				if m != n {
					t.Errorf("bucket %s: %d keys in the copy, want %d", path, m, n)
				}
			}
			buckets := 0
			_ = dtx.ForEach(func([]byte, *bolt.Bucket) error { buckets++; return nil })
			if buckets != 2 {
				t.Errorf("%d buckets in the copy, want 2", buckets)
			}
			return stx.ForEach(func(name []byte, b *bolt.Bucket) error {
				cmp(string(name), b, dtx.Bucket(name))
				return nil
			})
		})
	})
	if err != nil {
		t.Fatal(err)
	}
}
