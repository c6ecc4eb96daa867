package buffer

import (
	"fmt"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
)

// compactTxMax bounds each copy transaction of a compaction.
const compactTxMax = 16 << 20

// needsCompaction reports whether the file is big and mostly free pages:
// bbolt never shrinks a file, so after a drained backlog it would keep its
// peak size forever.
func (q *Queue) needsCompaction() (bool, int64) {
	q.dbMu.RLock()
	defer q.dbMu.RUnlock()
	fi, err := os.Stat(q.cfg.Path)
	if err != nil || fi.Size() < q.cfg.CompactMinSize {
		return false, 0
	}
	st := q.db.Stats()
	free := int64(st.FreePageN+st.PendingPageN) * int64(q.db.Info().PageSize)
	var used int64 // high-water mark of allocated pages; the file may be bigger
	if err := q.db.View(func(tx *bolt.Tx) error { used = tx.Size(); return nil }); err != nil {
		return false, 0
	}
	live := used - free
	return live*4 <= fi.Size(), fi.Size()
}

// Compact rewrites the file to its live data when it is mostly free space.
// It runs in the committer, between commits, so writers simply wait.
func (q *Queue) Compact() error {
	if q.readOnly {
		return ErrReadOnly
	}
	reply := make(chan error, 1)
	q.closeMu.RLock()
	if q.closed {
		q.closeMu.RUnlock()
		return ErrClosed
	}
	q.compactReq <- reply
	q.closeMu.RUnlock()
	err := <-reply
	if err == nil {
		q.releaseMapped()
	}
	return err
}

// compact copies the live data into a new file and swaps it in. On any
// failure the original file stays in use.
func (q *Queue) compact() error {
	before, _ := os.Stat(q.cfg.Path)
	tmp := q.cfg.Path + ".compact"
	os.Remove(tmp)
	dst, err := bolt.Open(tmp, 0o600, &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return fmt.Errorf("compact: create %s: %w", tmp, err)
	}
	q.dbMu.Lock()
	defer q.dbMu.Unlock()
	// Compact keeps bucket sequences, so sequence numbers never restart.
	if err := bolt.Compact(dst, q.db, compactTxMax); err != nil {
		dst.Close()
		os.Remove(tmp)
		return fmt.Errorf("compact: copy: %w", err)
	}
	if err := dst.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("compact: close copy: %w", err)
	}
	if err := q.db.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("compact: close queue: %w", err)
	}
	renameErr := os.Rename(tmp, q.cfg.Path)
	if renameErr == nil {
		renameErr = syncDir(filepath.Dir(q.cfg.Path))
	}
	db, err := q.openDB()
	if err != nil {
		// Without a file the gateway cannot accept anything: the caller
		// treats this as fatal.
		return fmt.Errorf("compact: reopen: %w", err)
	}
	q.db = db
	if renameErr != nil {
		os.Remove(tmp)
		return fmt.Errorf("compact: swap files: %w", renameErr)
	}
	after, _ := os.Stat(q.cfg.Path)
	q.mu.Lock()
	q.counters.Compactions++
	q.mu.Unlock()
	if before != nil && after != nil {
		q.log.Info().Int64("before_bytes", before.Size()).Int64("after_bytes", after.Size()).Msg("queue file compacted")
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
