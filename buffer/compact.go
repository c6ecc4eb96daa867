package buffer

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
)

// compactTxMax bounds each copy transaction of a compaction. A copy
// transaction holds every page it writes in heap buffers until its commit,
// so this is what a compaction adds to the heap; a smaller bound costs only
// more commits of the copy (a drained file's live data is some 16 MiB of
// dedup window: sixteen commits).
const compactTxMax = 1 << 20

// dirtyBuckets names buckets an op may change that compaction cannot
// catch up incrementally: written during a copy, they are copied again
// whole at the switch-over. Ops that only touch msgs, dedupw, meta and
// epochs need no flag.
type dirtyBuckets uint8

const (
	dirtyKV dirtyBuckets = 1 << iota
	dirtyDead
)

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
	if err := q.guard(func() error { return q.db.View(func(tx *bolt.Tx) error { used = tx.Size(); return nil }) }); err != nil {
		return false, 0
	}
	live := used - free
	return live*4 <= fi.Size(), fi.Size()
}

// inCommitter runs fn in the committer, between two commits: no write runs
// meanwhile.
func (q *Queue) inCommitter(fn func()) error {
	done := make(chan struct{})
	q.closeMu.RLock()
	if q.closed {
		q.closeMu.RUnlock()
		return ErrClosed
	}
	q.compactReq <- func() { fn(); close(done) }
	q.closeMu.RUnlock()
	<-done
	return nil
}

// compactMarks: where the copy's snapshot is known to reach at least.
type compactMarks struct {
	lastSeq      uint64 // msgs: every key up to here is in the copy or deleted later
	lastDedupSeq uint64 // dedupw: every record up to this sequence likewise
}

// Compact rewrites the file to its live data when it is mostly free space,
// without stopping intake for the copy:
//
//  1. the committer notes that a compaction runs (it then records which
//     whole-copy buckets writes touch);
//  2. bbolt copies a read snapshot into a new file while commits go on;
//  3. the committer pauses for the switch-over only: it copies what changed
//     since the snapshot — messages appended after it and deleted from the
//     front, dedup entries added and swept, meta and epochs (small), and
//     the KV or dead-letter bucket if written meanwhile — then swaps files.
//
// Writes wait only for step 3, which is proportional to what changed
// during the copy. The one exception: a commit that needs the file to grow
// waits for the copy's read snapshot (bbolt remaps only without readers);
// compaction runs when at least three quarters of the file are free pages,
// so that takes a burst of three times the live data during the copy.
func (q *Queue) Compact() error {
	if q.readOnly {
		return ErrReadOnly
	}
	q.compactMu.Lock()
	defer q.compactMu.Unlock()
	if err := q.inCommitter(func() { q.compacting, q.compactDirty = true, 0 }); err != nil {
		return err
	}
	defer q.inCommitter(func() { q.compacting = false })

	before, _ := os.Stat(q.cfg.Path)
	tmp := q.cfg.Path + ".compact"
	os.Remove(tmp)
	// The copy's commits write bbolt's freelist (a fresh file's is a page
	// or two): without it the reopen below would read every page of the
	// copy to rebuild it, and all of them would stay resident (some 50 MiB
	// when a drain ended with a long tail of live messages).
	dst, err := bolt.Open(tmp, 0o600, &bolt.Options{FreelistType: bolt.FreelistMapType})
	if err != nil {
		return fmt.Errorf("compact: create %s: %w", tmp, err)
	}
	fail := func(err error) error {
		dst.Close()
		os.Remove(tmp)
		return err
	}
	var marks compactMarks
	began := time.Now()
	q.dbMu.RLock()
	err = q.guard(func() error {
		return q.db.View(func(tx *bolt.Tx) error {
			marks.lastSeq = tx.Bucket(bucketMsgs).Sequence()
			marks.lastDedupSeq = tx.Bucket(bucketDedupW).Sequence()
			return nil
		})
	})
	if err == nil {
		// The copy keeps bucket sequences, so sequence numbers never restart.
		err = q.guard(func() error {
			return copyDB(dst, q.db, compactTxMax, func(stx *bolt.Tx) {
				// Not releaseDB(q.db): a second read transaction could
				// wait behind a commit that waits for this one to remap.
				dontNeed(q.db.Info().Data, uintptr(stx.Size()))
				releaseDB(dst)
			})
		})
	}
	q.dbMu.RUnlock()
	if err != nil {
		return fail(fmt.Errorf("compact: copy: %w", err))
	}
	if q.compactHook != nil {
		q.compactHook()
	}
	// Reopened as the queue opens its file, now, while writes go on: at
	// the switch-over it only has to be renamed into place.
	if err := dst.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("compact: close copy: %w", err)
	}
	dst, err = bolt.Open(tmp, 0o600, &bolt.Options{ // the options of openDB
		Timeout:        q.cfg.LockTimeout,
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
		MaxSize:        int(q.cfg.MaxFileSize),
	})
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("compact: reopen copy: %w", err)
	}
	copied := time.Now()
	var swapErr error
	var paused time.Duration
	if err := q.inCommitter(func() {
		start := time.Now()
		swapErr = q.switchOver(dst, tmp, marks)
		paused = time.Since(start)
	}); err != nil {
		return fail(err)
	}
	if swapErr != nil {
		return swapErr
	}
	after, _ := os.Stat(q.cfg.Path)
	q.mu.Lock()
	q.counters.Compactions++
	q.mu.Unlock()
	if before != nil && after != nil {
		q.log.Info().Int64("before_bytes", before.Size()).Int64("after_bytes", after.Size()).
			Stringer("copy", copied.Sub(began)).Stringer("writes_paused", paused).Msg("queue file compacted")
	}
	q.releaseMapped()
	// The copy's page buffers are garbage now: return them at once instead
	// of when the scavenger gets to them (RSS stayed some 45 MiB higher for
	// minutes after compacting a drained backlog's file). Compaction is
	// rare, so the forced collection costs nothing that matters.
	debug.FreeOSMemory()
	return nil
}

// copyDB copies every bucket of src into the empty dst, keeping bucket
// sequences, in transactions of about txMax bytes of keys and values, and
// calls committed after each with src's read transaction. It is bbolt's
// Compact with that hook, where the queue releases both files' mapped
// pages: otherwise every page the copy read or wrote stayed resident until
// it ended.
func copyDB(dst, src *bolt.DB, txMax int64, committed func(src *bolt.Tx)) error {
	tx, err := dst.Begin(true)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	var size int64
	var stx *bolt.Tx
	// next commits the open transaction once txMax is reached and returns
	// the bucket at path in the one that is open then.
	next := func(n int, path [][]byte) (*bolt.Bucket, error) {
		if size += int64(n); size > txMax {
			if err := tx.Commit(); err != nil {
				return nil, err
			}
			committed(stx)
			if tx, err = dst.Begin(true); err != nil {
				return nil, err
			}
			size = int64(n)
		}
		if len(path) == 0 {
			return nil, nil
		}
		b := tx.Bucket(path[0])
		for _, k := range path[1:] {
			b = b.Bucket(k)
		}
		return b, nil
	}
	var copyBkt func(path [][]byte, src *bolt.Bucket) error
	copyBkt = func(path [][]byte, sb *bolt.Bucket) error {
		return sb.ForEach(func(k, v []byte) error {
			b, err := next(len(k)+len(v), path)
			if err != nil {
				return err
			}
			b.FillPercent = 1 // written in key order: fill every page
			if v != nil {
				return b.Put(k, v)
			}
			child := sb.Bucket(k)
			nb, err := b.CreateBucket(k)
			if err != nil {
				return err
			}
			if err := nb.SetSequence(child.Sequence()); err != nil {
				return err
			}
			return copyBkt(append(path[:len(path):len(path)], k), child)
		})
	}
	err = src.View(func(t *bolt.Tx) error {
		stx = t
		if err := stx.ForEach(func(name []byte, sb *bolt.Bucket) error {
			if _, err := next(len(name), nil); err != nil {
				return err
			}
			nb, err := tx.CreateBucket(name)
			if err != nil {
				return err
			}
			if err := nb.SetSequence(sb.Sequence()); err != nil {
				return err
			}
			return copyBkt([][]byte{name}, sb)
		}); err != nil {
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
		committed(stx)
		return nil
	})
	return err
}

// switchOver runs in the committer: it brings the copy up to date, renames
// it into place and swaps it in; the old file is closed afterwards, off
// the paused path. On any failure before the rename the original file
// stays in use and the copy is removed.
func (q *Queue) switchOver(dst *bolt.DB, tmp string, marks compactMarks) error {
	fail := func(err error) error {
		dst.Close()
		os.Remove(tmp)
		return err
	}
	q.mu.Lock()
	head := q.st.head
	q.mu.Unlock()
	err := q.guard(func() error {
		return q.db.View(func(src *bolt.Tx) error {
			return dst.Update(func(dtx *bolt.Tx) error { return catchUp(src, dtx, head, marks, q.compactDirty) })
		})
	})
	if err != nil {
		return fail(fmt.Errorf("compact: catch up: %w", err))
	}
	// The copy holds its own lock (a lock is per file, and the old file
	// keeps its own until closed), so it is renamed while open.
	if err := os.Rename(tmp, q.cfg.Path); err != nil {
		return fail(fmt.Errorf("compact: swap files: %w", err))
	}
	if err := syncDir(filepath.Dir(q.cfg.Path)); err != nil {
		// The rename happened; only its durability is in doubt, and the
		// next commit's fsync does not cover the directory.
		q.log.Warn().Err(err).Msg("compact: sync the queue directory")
	}
	q.dbMu.Lock()
	old := q.db
	q.db = dst
	q.dbMu.Unlock()
	// Closing the old file unmaps it (hundreds of milliseconds for a big
	// file): nothing uses it any more, so writes need not wait for that.
	q.wg.Add(1)
	go func() {
		defer q.wg.Done()
		if err := old.Close(); err != nil {
			q.log.Warn().Err(err).Msg("compact: close the old queue file")
		}
	}()
	return nil
}

// catchUp applies to the copy dtx what changed in src since the snapshot
// marks describe. It relies on how the queue writes: msgs and dedupw only
// grow at the end and shrink at the front, and their values never change.
func catchUp(src, dtx *bolt.Tx, head uint64, marks compactMarks, dirty dirtyBuckets) error {
	sm, dm := src.Bucket(bucketMsgs), dtx.Bucket(bucketMsgs)
	dm.FillPercent = appendFill
	dc := dm.Cursor()
	for k, _ := dc.First(); k != nil && binary.BigEndian.Uint64(k) < head; k, _ = dc.First() {
		if err := dc.Delete(); err != nil {
			return err
		}
	}
	sc := sm.Cursor()
	for k, v := sc.Seek(u64(marks.lastSeq + 1)); k != nil; k, v = sc.Next() {
		if err := dm.Put(k, v); err != nil {
			return err
		}
	}
	if err := dm.SetSequence(sm.Sequence()); err != nil {
		return err
	}

	if err := catchUpFront(src.Bucket(bucketDedupW), dtx.Bucket(bucketDedupW), marks.lastDedupSeq); err != nil {
		return err
	}

	// Every other bucket is copied whole when it may have changed: meta
	// and epochs always (a few keys), kv and dead when written during the
	// copy, and any bucket this code does not know.
	return src.ForEach(func(name []byte, b *bolt.Bucket) error {
		switch string(name) {
		case string(bucketMsgs), string(bucketDedupW):
			return nil
		case string(bucketKV):
			if dirty&dirtyKV == 0 {
				return nil
			}
		case string(bucketDead):
			if dirty&dirtyDead == 0 && dtx.Bucket(name) != nil {
				return nil
			}
		}
		if dtx.Bucket(name) != nil {
			if err := dtx.DeleteBucket(name); err != nil {
				return err
			}
		}
		nb, err := dtx.CreateBucket(name)
		if err != nil {
			return err
		}
		return copyBucket(nb, b)
	})
}

// copyBucket copies src into the empty bucket dst, nested buckets too.
func copyBucket(dst, src *bolt.Bucket) error {
	if err := dst.SetSequence(src.Sequence()); err != nil {
		return err
	}
	return src.ForEach(func(k, v []byte) error {
		if v != nil {
			return dst.Put(k, v)
		}
		nb, err := dst.CreateBucket(k)
		if err != nil {
			return err
		}
		return copyBucket(nb, src.Bucket(k))
	})
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// catchUpFront brings dst, a copy of the append-only bucket src taken when
// its sequence was last, up to date: it deletes from dst's front what src
// no longer holds and appends what src gained after last. Keys start with
// an 8-byte sequence.
func catchUpFront(src, dst *bolt.Bucket, last uint64) error {
	dst.FillPercent = appendFill
	first, _ := src.Cursor().First()
	dc := dst.Cursor()
	for k, _ := dc.First(); k != nil && (first == nil || bytes.Compare(k, first) < 0); k, _ = dc.First() {
		if err := dc.Delete(); err != nil {
			return err
		}
	}
	sc := src.Cursor()
	for k, v := sc.Seek(u64(last + 1)); k != nil; k, v = sc.Next() {
		if err := dst.Put(k, v); err != nil {
			return err
		}
	}
	return dst.SetSequence(src.Sequence())
}
