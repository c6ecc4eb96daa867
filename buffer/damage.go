package buffer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"time"

	bolt "go.etcd.io/bbolt"
)

// ErrDamaged is returned by every operation once bbolt panicked on the
// file at run time: a page was damaged after the open (bit rot, a torn
// write, another process writing into it).
//
// The queue does not repair itself in-process. After a panic inside bbolt
// its in-memory state (freelist, dirty pages, the rollback that ran during
// the panic) is not known to be sound, and the damaged mapping stays
// mapped; closing and reopening the same path in the same process would
// trust both. Instead the file is marked (<path>.damaged, fsync'd), every
// write and read fails with ErrDamaged (the webhook answers 503), Damaged()
// is closed, and the gateway exits with its own status; the next start,
// a second or two later under systemd, quarantines and salvages the file
// before bbolt opens it. One restart, never a loop: the fresh file has no
// damage, and if the restart dies anyway the open marker quarantines it.
var ErrDamaged = errors.New("queue file damaged")

// Damaged is closed when the file was found damaged at run time.
func (q *Queue) Damaged() <-chan struct{} { return q.damaged }

func (q *Queue) damagedError() error {
	select {
	case <-q.damaged:
		return q.damagedErr
	default:
		return nil
	}
}

// guard runs fn, turning a panic or a memory fault inside bbolt into
// ErrDamaged (and marking the file).
func (q *Queue) guard(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = q.markDamaged(fmt.Errorf("bbolt panic: %v", r))
		}
	}()
	// A damaged page can point bbolt outside the mapped file: a fault,
	// which without this would kill the process.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	return fn()
}

// update runs fn in a write transaction like bolt.DB.Update, except after
// a panic: Update's deferred rollback then rebuilds the freelist by walking
// every page in a goroutine of bbolt's own (DB.freepages), which on a
// damaged file panics where no recover reaches and kills the process. Here
// the transaction is rolled back without that walk (Tx.Rollback), and the
// file is marked damaged.
func (q *Queue) update(fn func(*bolt.Tx) error) (err error) {
	tx, err := q.db.Begin(true)
	if err != nil {
		return err
	}
	defer func() {
		if r := recover(); r != nil {
			tx.Rollback()
			err = q.markDamaged(fmt.Errorf("bbolt panic: %v", r))
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	// The pages a commit wrote are read back through the mapping by the
	// next transactions (copy-on-write puts them anywhere in the file):
	// counted like reads, or at a trickle of live data after a drain some
	// 10-20 MiB of them stay resident between two releases.
	stats := tx.Stats()
	q.noteTouched(stats.GetPageAlloc())
	return nil
}

func (q *Queue) markDamaged(cause error) error {
	q.damagedOnce.Do(func() {
		q.damagedErr = fmt.Errorf("%w: %v", ErrDamaged, cause)
		var merr error
		if !q.readOnly { // an export only reports it
			merr = writeMarker(damagedMarker(q.cfg.Path), time.Now().UTC().Format(time.RFC3339)+" "+cause.Error()+"\n")
		}
		ev := q.log.Error().Err(cause).Str("marker", damagedMarker(q.cfg.Path))
		if merr != nil {
			ev = ev.AnErr("marker_error", merr)
		}
		ev.Msg("queue file damaged at run time: intake stopped; the next start quarantines and salvages it")
		close(q.damaged)
	})
	return q.damagedErr
}

// openChecked opens the file after checking it, quarantining and salvaging
// it when it is damaged:
//
//  1. a file marked damaged at run time, or one whose last openMarkerLimit
//     opens died inside bbolt, is quarantined without further ado;
//  2. otherwise checkFile walks it (bounded by CheckMaxPages) before bbolt
//     touches it: bbolt's own open rebuilds the freelist by walking every
//     page in a goroutine no recover reaches;
//  3. bbolt's open and the state load then run under recover, and what
//     they reject or panic on is quarantined too.
//
// Quarantine moves the file aside as <path>.corrupt-<UTC time> and salvages
// what it can into a fresh file at path.
func (q *Queue) openChecked() error {
	path := q.cfg.Path
	unlock, err := lockFile(path, q.cfg.LockTimeout)
	if errors.Is(err, ErrLocked) {
		return fmt.Errorf("open queue %s: %w (is another gateway or queue command running?)", path, ErrLocked)
	}
	if err != nil {
		return fmt.Errorf("open queue %s: %w", path, err)
	}
	locked := true
	defer func() {
		if locked {
			unlock()
		}
	}()
	var cause error
	if b, err := os.ReadFile(damagedMarker(path)); err == nil {
		cause = fmt.Errorf("marked damaged at run time: %s", b)
	}
	openings := readOpenings(path)
	if cause == nil && openings >= openMarkerLimit {
		cause = fmt.Errorf("the last %d opens of this file died before finishing", openings)
	}
	if cause == nil {
		began := time.Now()
		pages, err := checkFile(path)
		switch {
		case errors.Is(err, errBadPage):
			cause = err
		case err != nil:
			return fmt.Errorf("check queue %s: %w", path, err)
		default:
			q.log.Debug().Int("pages", pages).Stringer("took", time.Since(began)).Msg("queue file checked")
		}
	}
	if cause != nil {
		if err := q.quarantine(cause); err != nil {
			return err
		}
		openings = 0
	}
	if err := setOpenings(path, openings+1); err != nil {
		// Only a safety net (a full disk must not stop the open).
		q.log.Warn().Err(err).Msg("write queue open marker")
	}
	// bbolt takes the lock itself, through another descriptor.
	unlock()
	locked = false
	err = q.openAndLoad()
	if isCorrupt(err) {
		if qerr := q.quarantine(err); qerr != nil {
			return qerr
		}
		err = q.openAndLoad()
	}
	if err != nil {
		// A clean failure (locked, newer format, permissions) is not a
		// dying open: leave the count as it was.
		setOpenings(path, openings)
		return err
	}
	if err := setOpenings(path, 0); err != nil {
		q.log.Warn().Err(err).Msg("remove queue open marker")
	}
	if err := os.Remove(damagedMarker(path)); err != nil && !errors.Is(err, os.ErrNotExist) {
		q.log.Warn().Err(err).Msg("remove queue damaged marker")
	}
	return nil
}

// quarantine moves the damaged file aside and salvages it into a fresh one.
func (q *Queue) quarantine(cause error) error {
	path := q.cfg.Path
	aside := fmt.Sprintf("%s.corrupt-%s", path, time.Now().UTC().Format("20060102T150405Z"))
	if err := os.Rename(path, aside); err != nil {
		return fmt.Errorf("open queue %s: %w (and moving it aside failed: %v)", path, cause, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		q.log.Warn().Err(err).Msg("sync queue directory after quarantine")
	}
	q.counters.Quarantined++
	q.log.Error().Err(cause).Str("moved_to", aside).Msg("queue file is damaged: moved aside; salvaging what can be read into a fresh queue")
	os.Remove(damagedMarker(path))
	rep, err := Salvage(aside, path, q.log)
	if err != nil {
		// Start empty rather than not at all: the file stays aside for
		// `wittra-gateway queue salvage`.
		q.log.Error().Err(err).Str("file", aside).Msg("queue salvage failed: starting on an empty queue; messages in the damaged file were NOT delivered")
		os.Remove(path)
		return nil
	}
	q.counters.Salvaged += rep.Salvaged
	q.counters.SalvageLost += rep.Lost
	ev := q.log.Error()
	if rep.Lost == 0 && rep.LostKnown {
		ev = q.log.Warn()
	}
	ev.Str("file", aside).Uint64("salvaged", rep.Salvaged).Uint64("lost", rep.Lost).Bool("lost_known", rep.LostKnown).
		Bool("cursors_recovered", rep.Cursors != nil).Int("damaged_pages", rep.DamagedPages).
		Msg("queue salvaged: these messages will be delivered; the damaged file is kept for inspection")
	return nil
}
