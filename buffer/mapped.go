package buffer

import bolt "go.etcd.io/bbolt"

// releaseEvery is how much data is read, deleted or written (the pages a
// commit allocates) between two releases of the mapped file.
const releaseEvery = 1 << 20

// bbolt reads through a shared read-only mmap of the whole file, and every
// page touched stays counted in the process's RSS: at open (the freelist
// scan reads every page), and as a backlog drains. Those pages are page
// cache the kernel can reclaim, but on a small box RSS is what operators
// watch and what OOM policies read. Dropping the mapping's page-table
// entries costs a re-fault from the page cache on the next read, nothing
// else.

// noteRead counts read bytes and releases the mapping every releaseEvery.
func (q *Queue) noteRead(recs []Record) {
	var n int64
	for _, r := range recs {
		n += int64(len(r.Data))
	}
	q.noteTouched(n)
}

// noteTouched counts n bytes read, deleted or written through the mapping,
// and releases it every releaseEvery.
func (q *Queue) noteTouched(n int64) {
	if q.touchedSinceRelease.Add(n) >= releaseEvery {
		q.touchedSinceRelease.Store(0)
		q.releaseMapped()
	}
}

// releaseMapped drops the resident pages of the mapped file from this
// process (see above). Errors are ignored: it is only an optimisation.
//
// It runs inside a read transaction: bbolt remaps the file (munmap, then
// mmap elsewhere) when a commit grows it, but never while a read
// transaction is open, so the address and length stay those of the live
// mapping. Outside one, the old range could already hold Go heap memory,
// and MADV_DONTNEED would zero it (a corrupted heap: "bad sweepgen"). The
// length is the transaction's view of the file, never more than is mapped.
func (q *Queue) releaseMapped() {
	q.dbMu.RLock()
	defer q.dbMu.RUnlock()
	if q.db == nil {
		return
	}
	releaseDB(q.db)
}

// releaseDB drops the resident pages of db's mapping, as releaseMapped
// does for the queue's own file (compaction's source and copy).
func releaseDB(db *bolt.DB) {
	_ = db.View(func(tx *bolt.Tx) error {
		if size := tx.Size(); size > 0 {
			dontNeed(db.Info().Data, uintptr(size))
		}
		return nil
	})
}
