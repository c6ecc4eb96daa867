package buffer

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"wittra-gateway/internal/clock"
)

var (
	ErrClosed = errors.New("queue closed")
	ErrFull   = errors.New("queue full")
	ErrLocked = errors.New("queue file locked by another process")
)

// Policy says what Append does when MaxBytes would be exceeded.
type Policy int

const (
	Reject     Policy = iota // refuse the append with ErrFull
	DropOldest               // delete the oldest messages to make room (counted)
)

// Defaults used when a Config field is zero.
const (
	DefaultLockTimeout    = 2 * time.Second
	DefaultSweepInterval  = 30 * time.Second
	DefaultMaxBatch       = 4096
	DefaultCompactMinSize = 64 << 20
)

// Config of a queue. Zero fields fall back to the defaults noted.
type Config struct {
	Path          string
	MaxBytes      int64         // bound on stored bytes; 0 = unbounded
	MaxAge        time.Duration // older messages expire; 0 = never
	WhenFull      Policy
	DedupWindow   time.Duration // 0 disables deduplication
	Consumers     []string      // one cursor each; cursors of other names are removed
	LockTimeout   time.Duration // wait for the file lock; DefaultLockTimeout
	SweepInterval time.Duration // expiry and dedup sweeps; DefaultSweepInterval
	MaxBatch      int           // writes per commit; DefaultMaxBatch
	// MaxFileSize is a hard bound on the file: a commit that would grow it
	// further fails (the webhook answers 503). 0 = 2×MaxBytes + 64 MiB
	// when MaxBytes is set, else none.
	MaxFileSize int64
	// CompactMinSize: the file is compacted when it is at least this big
	// and mostly free pages. DefaultCompactMinSize.
	CompactMinSize int64

	// Clock reads wall and monotonic time; clock.System() when nil.
	Clock clock.Clock
	// BuildFloor: a wall clock before it is known to be wrong (the
	// binary's build time). clock.BuildFloor("") when zero.
	BuildFloor time.Time
	// ClockStep: a wall-clock jump larger than this, against the monotonic
	// clock, is a step (logged, counted, a new epoch). DefaultClockStep.
	ClockStep time.Duration
	// MaxOffline bounds the down time between two runs in different boots
	// that the wall clock alone can vouch for. DefaultMaxOffline.
	MaxOffline time.Duration
	// MaxDeadLetters bounds the dead-letter bucket; the oldest go first.
	// The constant MaxDeadLetters when 0.
	MaxDeadLetters uint64

	// dedupHash hashes an encoded dedup key (dedupwin.go); tests inject
	// collisions. defaultDedupHash when nil.
	dedupHash func([]byte) uint64
}

// Entry is one message to append.
type Entry struct {
	Data     []byte
	DedupKey string // "" = never a duplicate
}

// AppendResult counts what an Append did.
type AppendResult struct {
	Accepted   int // newly stored
	Duplicates int // seen within the dedup window, not stored again
}

// Record is one stored message, as a consumer reads it. Data is a copy the
// caller owns.
type Record struct {
	Seq  uint64
	Time time.Time // receive (commit) time, corrected for clock steps where it can be
	// TimeUnsure: Time was read from a wall clock known to be wrong and
	// cannot be corrected yet (the clock is still wrong).
	TimeUnsure bool
	Data       []byte
}

var (
	bucketMsgs = []byte("msgs")
	bucketMeta = []byte("meta")
	keyBytes   = []byte("bytes")
)

const cursorPrefix = "cursor/"

// appendFill packs pages of the buckets whose keys only ever grow (sequence
// and time keys): bbolt's default 50% split leaves append-only pages half
// empty, tripling the file (and the mapped pages a drain touches).
const appendFill = 0.95

// state is the in-memory mirror of what the last commit left on disk. The
// committer works on a copy and publishes it only after the commit succeeded.
type state struct {
	head    uint64 // lowest stored sequence; head > last means empty
	last    uint64 // bucket sequence: the highest ever assigned
	bytes   int64
	cursors map[string]uint64
	splits  map[string]split // live_first consumers with a backlog (split.go)
	epochs  []epoch          // copy-on-write (see putEpoch)
	dead    uint64           // dead letters stored (≤ Config.MaxDeadLetters)
	freed   int64            // record bytes deleted by the open transaction
}

func (s state) clone() state {
	s.cursors = maps.Clone(s.cursors)
	s.splits = maps.Clone(s.splits)
	return s
}

// minCursor is the lowest cursor; with no consumers nothing holds messages
// back, so it is last.
func (s *state) minCursor() uint64 {
	lowest := s.last
	for _, c := range s.cursors {
		lowest = min(lowest, c)
	}
	return lowest
}

// Counters are totals since Open.
type Counters struct {
	Expired     uint64 // deleted by MaxAge before every consumer had them
	Dropped     uint64 // deleted by DropOldest
	Commits     uint64 // transactions committed
	Compactions uint64 // times the file was rewritten to shrink it
	Quarantined uint64 // corrupt files moved aside at open
	Salvaged    uint64 // messages copied out of quarantined files at open
	SalvageLost uint64 // undelivered messages of quarantined files that could not be read
	// DeadLetters counts messages refused permanently by a sink; it starts
	// from what the file holds.
	DeadLetters uint64
}

// Queue is a durable FIFO with one cursor per consumer. It is safe for
// concurrent use.
type Queue struct {
	cfg Config
	log zerolog.Logger
	tl  *timeline
	dx  *dedupIndex // the dedup window's in-memory index (dedupwin.go)

	// dbMu guards the db pointer: compaction swaps the file under Lock;
	// readers hold RLock for the length of a read transaction.
	dbMu sync.RWMutex
	db   *bolt.DB
	// compactReq runs a function in the committer between two commits
	// (compaction's start, catch-up and switch-over).
	compactReq chan func()
	// compactMu: one compaction at a time. compacting and compactDirty
	// are only touched in the committer: while a compaction copies, the
	// buckets it must copy again whole (see compact.go).
	compactMu    sync.Mutex
	compacting   bool
	compactDirty dirtyBuckets
	compactHook  func() // tests: runs between the copy and the switch-over
	// touchedSinceRelease counts bytes read, deleted or written by commits
	// since the mapped file's pages were last released (see mapped.go).
	touchedSinceRelease atomic.Int64

	mu       sync.Mutex
	st       state
	counters Counters
	readers  map[string]*Reader

	// readOnly: opened by OpenReadOnly, no committer; writes fail.
	readOnly bool
	// damaged is closed when bbolt panicked at run time (damage.go);
	// damagedErr says why.
	damaged     chan struct{}
	damagedOnce sync.Once
	damagedErr  error

	pingMu sync.Mutex
	ping   *pingCall // the round trip in flight, shared by every Ping

	closeMu sync.RWMutex
	closed  bool
	ops     chan *op
	done    chan struct{} // closed when Close starts: wakes readers
	wg      sync.WaitGroup
}

// op is one write handed to the committer. apply runs inside the shared
// transaction; it must return a rejection (see reject) only before it has
// written anything, and any other error aborts the whole transaction.
type op struct {
	dirty dirtyBuckets // buckets it may change that compaction copies whole
	apply func(tx *bolt.Tx, st *state, c *Counters) error
	err   error
	done  chan struct{}
}

// rejection is an op error that leaves the transaction usable for the other
// ops of the batch.
type rejection struct{ error }

func (r rejection) Unwrap() error { return r.error }

// Open opens or creates the queue file and starts the committer.
func Open(cfg Config, log zerolog.Logger) (*Queue, error) {
	// A value of 0 or below takes the default (max(v, 0) makes it 0 for cmp.Or).
	cfg.LockTimeout = cmp.Or(max(cfg.LockTimeout, 0), DefaultLockTimeout)
	cfg.SweepInterval = cmp.Or(max(cfg.SweepInterval, 0), DefaultSweepInterval)
	cfg.MaxBatch = cmp.Or(max(cfg.MaxBatch, 0), DefaultMaxBatch)
	cfg.CompactMinSize = cmp.Or(max(cfg.CompactMinSize, 0), DefaultCompactMinSize)
	cfg.ClockStep = cmp.Or(max(cfg.ClockStep, 0), DefaultClockStep)
	cfg.MaxOffline = cmp.Or(max(cfg.MaxOffline, 0), DefaultMaxOffline)
	cfg.MaxDeadLetters = cmp.Or(cfg.MaxDeadLetters, MaxDeadLetters)
	if cfg.Clock == nil {
		cfg.Clock = clock.System()
	}
	if cfg.BuildFloor.IsZero() {
		cfg.BuildFloor = clock.BuildFloor("")
	}
	if cfg.MaxFileSize == 0 && cfg.MaxBytes > 0 {
		cfg.MaxFileSize = 2*cfg.MaxBytes + 64<<20
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Path), 0o750); err != nil {
		return nil, fmt.Errorf("create queue directory: %w", err)
	}
	q := &Queue{
		cfg:        cfg,
		log:        log,
		readers:    make(map[string]*Reader),
		ops:        make(chan *op, 1024),
		done:       make(chan struct{}),
		compactReq: make(chan func()),
		tl:         &timeline{clk: cfg.Clock, floor: cfg.BuildFloor, step: cfg.ClockStep, log: log},
		damaged:    make(chan struct{}),
		dx:         newDedupIndex(cfg.dedupHash),
	}
	if err := q.openChecked(); err != nil {
		q.dx.free()
		return nil, err
	}
	q.releaseMapped()
	q.wg.Add(2)
	go q.commitLoop()
	go q.sweepLoop()
	return q, nil
}

func (q *Queue) openDB() (*bolt.DB, error) {
	db, err := bolt.Open(q.cfg.Path, 0o600, &bolt.Options{
		Timeout: q.cfg.LockTimeout,
		// The freelist is rebuilt at open instead of rewritten on every
		// commit, which after a drained backlog would dominate each fsync.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
		MaxSize:        int(q.cfg.MaxFileSize),
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open queue %s: %w (is another gateway or queue command running?)", q.cfg.Path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open queue %s: %w", q.cfg.Path, err)
	}
	return db, nil
}

// openAndLoad opens the file and reads its state. bbolt panics on some
// damaged pages; that is reported as corruption, not a crash loop.
func (q *Queue) openAndLoad() (err error) {
	var db *bolt.DB
	defer func() {
		if r := recover(); r != nil {
			err = &CorruptError{Key: "(file)", Err: fmt.Errorf("bbolt panic: %v", r)}
		}
		if err != nil && db != nil {
			db.Close()
		}
	}()
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	db, err = q.openDB()
	if err != nil {
		return err
	}
	if err := upgrade(db, q.cfg.Path, q.log); err != nil {
		return fmt.Errorf("open queue %s: %w", q.cfg.Path, err)
	}
	if err := db.Update(q.load); err != nil {
		return fmt.Errorf("open queue %s: %w", q.cfg.Path, err)
	}
	q.db = db
	return nil
}

func isCorrupt(err error) bool {
	var ce *CorruptError
	return errors.As(err, &ce) || errors.Is(err, bolterrors.ErrInvalid) || errors.Is(err, bolterrors.ErrIncompatibleValue) ||
		errors.Is(err, bolterrors.ErrVersionMismatch) || errors.Is(err, bolterrors.ErrChecksum)
}

// view runs a read transaction on the current file.
func (q *Queue) view(fn func(*bolt.Tx) error) error {
	q.dbMu.RLock()
	defer q.dbMu.RUnlock()
	return q.guard(func() error { return q.db.View(fn) })
}

// load creates the buckets, reconciles the cursors with cfg.Consumers and
// reads the state into memory.
func (q *Queue) load(tx *bolt.Tx) error {
	for _, name := range [][]byte{bucketMsgs, bucketMeta, bucketDedupW} {
		if _, err := tx.CreateBucketIfNotExists(name); err != nil {
			return fmt.Errorf("create bucket %s: %w", name, err)
		}
	}
	msgs, meta := tx.Bucket(bucketMsgs), tx.Bucket(bucketMeta)
	st := state{last: msgs.Sequence(), head: msgs.Sequence() + 1, cursors: map[string]uint64{}}
	if k, _ := msgs.Cursor().First(); k != nil {
		st.head = binary.BigEndian.Uint64(k)
	}
	if v := meta.Get(keyBytes); len(v) == 8 {
		st.bytes = int64(binary.BigEndian.Uint64(v))
	}
	stored := map[string]uint64{}
	c := meta.Cursor()
	for k, v := c.Seek([]byte(cursorPrefix)); k != nil && len(k) >= len(cursorPrefix) && string(k[:len(cursorPrefix)]) == cursorPrefix; k, v = c.Next() {
		if len(v) != 8 {
			return &CorruptError{Key: string(k), Err: fmt.Errorf("cursor value has %d bytes, want 8", len(v))}
		}
		stored[string(k[len(cursorPrefix):])] = binary.BigEndian.Uint64(v)
	}
	for name, seq := range stored {
		if !slices.Contains(q.cfg.Consumers, name) {
			q.log.Info().Str("consumer", name).Uint64("cursor", seq).Msg("removing cursor of a consumer no longer configured")
			if err := meta.Delete([]byte(cursorPrefix + name)); err != nil {
				return fmt.Errorf("delete cursor %s: %w", name, err)
			}
		}
	}
	for _, name := range q.cfg.Consumers {
		seq, ok := stored[name]
		if !ok {
			// A new consumer starts with whatever is still stored.
			seq = st.head - 1
			if err := meta.Put([]byte(cursorPrefix+name), u64(seq)); err != nil {
				return fmt.Errorf("create cursor %s: %w", name, err)
			}
		}
		st.cursors[name] = seq
	}
	if err := q.loadSplits(tx, &st); err != nil {
		return err
	}
	if err := q.startTimeline(tx, &st); err != nil {
		return err
	}
	if err := q.dx.rebuild(tx, q.tl.now().g, int64(q.cfg.DedupWindow)); err != nil {
		return err
	}
	// Consumers removed above may have been the ones holding messages back.
	if err := trim(tx, &st); err != nil {
		return err
	}
	// Counted once here (a walk of the bucket); inserts keep it current.
	st.dead = deadLetterCount(tx)
	q.st = st
	q.counters.DeadLetters = st.dead
	return nil
}

// CorruptError reports a record of the queue file that cannot be understood.
type CorruptError struct {
	Key string
	Err error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("corrupt queue record %q: %v", e.Key, e.Err)
}
func (e *CorruptError) Unwrap() error { return e.Err }

func u64(v uint64) []byte {
	b := make([]byte, 8)
	binary.BigEndian.PutUint64(b, v)
	return b
}

// submit hands o to the committer and waits for its commit.
func (q *Queue) submit(ctx context.Context, o *op) error {
	if q.readOnly {
		return ErrReadOnly
	}
	if err := q.damagedError(); err != nil {
		return err
	}
	o.done = make(chan struct{})
	q.closeMu.RLock()
	if q.closed {
		q.closeMu.RUnlock()
		return ErrClosed
	}
	select {
	case q.ops <- o:
	case <-ctx.Done():
		q.closeMu.RUnlock()
		return ctx.Err()
	}
	q.closeMu.RUnlock()
	// Once handed over the op may commit whatever the caller does, so its
	// outcome is always waited for: a caller must never report a failure
	// for data that was in fact stored.
	<-o.done
	return o.err
}

func (q *Queue) commitLoop() {
	defer q.wg.Done()
	batch := make([]*op, 0, 64)
	prev := 0 // size of the previous batch
	for {
		var first *op
		select {
		case o, ok := <-q.ops:
			if !ok {
				return
			}
			first = o
		case fn := <-q.compactReq:
			fn()
			continue
		}
		batch = append(batch[:0], first)
		batch = q.gather(batch, prev)
		prev = len(batch)
		q.commit(batch)
	}
}

// coalesceWait is the longest a commit waits for more writes, and only when
// the previous commit carried more than it has now: under concurrent load a
// few hundred microseconds buy one fsync for many requests, while a lone
// request (previous batch of one) never waits.
const coalesceWait = 200 * time.Microsecond

// gather adds the writes waiting now, then, if there are fewer than the
// previous batch had, waits briefly for more.
func (q *Queue) gather(batch []*op, prev int) []*op {
	want := min(prev, q.cfg.MaxBatch)
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for len(batch) < q.cfg.MaxBatch {
		select {
		case o, ok := <-q.ops:
			if !ok {
				return batch
			}
			batch = append(batch, o)
			continue
		default:
		}
		if len(batch) >= want {
			return batch
		}
		if timer == nil {
			timer = time.NewTimer(coalesceWait)
		}
		select {
		case o, ok := <-q.ops:
			if !ok {
				return batch
			}
			batch = append(batch, o)
		case <-timer.C:
			return batch
		}
	}
	return batch
}

// commit runs a batch of ops in one transaction and reports to each.
func (q *Queue) commit(batch []*op) {
	q.mu.Lock()
	st, counters := q.st.clone(), q.counters
	q.mu.Unlock()
	st.freed = 0

	err := q.update(func(tx *bolt.Tx) error {
		for _, o := range batch {
			o.err = o.apply(tx, &st, &counters)
			var r rejection
			if o.err != nil && !errors.As(o.err, &r) {
				return o.err
			}
		}
		if err := q.dx.flush(tx); err != nil {
			return err
		}
		meta := tx.Bucket(bucketMeta)
		if err := meta.Put(keyClock, q.tl.state(q.tl.now()).value()); err != nil {
			return fmt.Errorf("put clock: %w", err)
		}
		return meta.Put(keyBytes, u64(uint64(st.bytes)))
	})
	appended := false
	if err == nil {
		q.dx.committed()
	} else {
		q.dx.rolledBack()
	}
	if err == nil {
		counters.Commits++
		q.mu.Lock()
		appended = st.last != q.st.last
		q.st, q.counters = st, counters
		q.mu.Unlock()
	}
	if err == nil && q.compacting {
		for _, o := range batch {
			if o.err == nil {
				q.compactDirty |= o.dirty
			}
		}
	}
	for _, o := range batch {
		switch {
		case err != nil:
			o.err = fmt.Errorf("commit queue: %w", err)
		case o.err != nil:
			o.err = o.err.(rejection).error
		}
		close(o.done)
	}
	if appended {
		q.wakeReaders()
	}
	if err == nil && st.freed > 0 {
		// Deleting reads each message's leaf page again, after the reader
		// released it: counted like reads, or the last deletes of a drain
		// stay resident (some 13 MiB) until the next 1 MiB is read.
		q.noteTouched(st.freed)
	}
}

// Append stores entries durably, skipping those whose DedupKey was seen
// within the dedup window, and returns once they are committed. Either all
// new entries are stored or none (ErrFull, or a commit error).
func (q *Queue) Append(ctx context.Context, entries []Entry) (AppendResult, error) {
	var res AppendResult
	dedup := q.cfg.DedupWindow > 0
	var ids dedupIDs
	if dedup {
		ids.encode(entries, q.dx.hash)
	}
	o := &op{apply: func(tx *bolt.Tx, st *state, c *Counters) error {
		// The op may run again in a retried batch: results are recomputed
		// from scratch every time.
		res = AppendResult{}
		ids.reset()
		now := q.tl.now()
		var need int64
		for i, e := range entries {
			if dedup && ids.has(i) {
				dup, err := ids.duplicate(tx, q.dx, i, now.g, int64(q.cfg.DedupWindow))
				if err != nil {
					return err
				}
				if dup {
					res.Duplicates++
					continue
				}
			}
			need += recordSize(e.Data)
		}
		if q.cfg.MaxBytes > 0 && st.bytes+need > q.cfg.MaxBytes {
			if q.cfg.WhenFull == Reject || need > q.cfg.MaxBytes {
				res = AppendResult{}
				return rejection{ErrFull}
			}
			if err := dropOldest(tx, st, c, q.cfg.MaxBytes-need); err != nil {
				return err
			}
		}
		if res.Duplicates < len(entries) {
			if err := noteEpoch(tx, st, now, q.tl.step); err != nil {
				return err
			}
		}
		msgs := tx.Bucket(bucketMsgs)
		msgs.FillPercent = appendFill
		nowNs := uint64(now.wall.UnixNano())
		for i, e := range entries {
			if dedup && ids.dup(i) {
				continue
			}
			seq, err := msgs.NextSequence()
			if err != nil {
				return fmt.Errorf("next sequence: %w", err)
			}
			// Key and value in one allocation (bbolt holds both until the
			// commit).
			kv := make([]byte, 16+len(e.Data))
			binary.BigEndian.PutUint64(kv, seq)
			binary.BigEndian.PutUint64(kv[8:], nowNs)
			copy(kv[16:], e.Data)
			if err := msgs.Put(kv[:8:8], kv[8:]); err != nil {
				return fmt.Errorf("put message %d: %w", seq, err)
			}
			if dedup && ids.has(i) {
				if err := q.dx.add(tx, ids.id(i), ids.hash(i), now.g); err != nil {
					return err
				}
			}
			st.last = seq
			st.bytes += recordSize(e.Data)
			res.Accepted++
		}
		return nil
	}}
	if err := q.submit(ctx, o); err != nil {
		return AppendResult{}, err
	}
	return res, nil
}

func recordSize(data []byte) int64 { return int64(8 + 8 + len(data)) }

// deleteFront deletes stored messages from the head until stop returns
// true, moving cursors that lag behind past them. It returns how many it
// deleted.
func deleteFront(tx *bolt.Tx, st *state, stop func(seq uint64, v []byte) bool) (uint64, error) {
	msgs := tx.Bucket(bucketMsgs)
	var n uint64
	c := msgs.Cursor()
	// Cursor.Delete followed by Next can skip a key, and First again walks
	// every leaf emptied so far in this transaction (quadratic: minutes for
	// a million); a Seek past the deleted key goes straight to its leaf.
	var next [8]byte
	for k, v := c.First(); k != nil; k, v = c.Seek(next[:]) {
		seq := binary.BigEndian.Uint64(k)
		if stop(seq, v) {
			break
		}
		if err := c.Delete(); err != nil {
			return n, fmt.Errorf("delete message %d: %w", seq, err)
		}
		binary.BigEndian.PutUint64(next[:], seq+1)
		st.bytes -= recordSize(v[8:])
		st.freed += recordSize(v[8:])
		st.head = seq + 1
		n++
	}
	if n == 0 {
		return 0, nil
	}
	if err := pruneEpochs(tx, st); err != nil {
		return n, err
	}
	meta := tx.Bucket(bucketMeta)
	for name, cur := range st.cursors {
		if cur < st.head-1 {
			st.cursors[name] = st.head - 1
			if err := meta.Put([]byte(cursorPrefix+name), u64(st.head-1)); err != nil {
				return n, fmt.Errorf("advance cursor %s: %w", name, err)
			}
		}
	}
	return n, joinDeleted(meta, st)
}

// trim deletes messages every consumer has acknowledged.
func trim(tx *bolt.Tx, st *state) error {
	upTo := st.minCursor()
	_, err := deleteFront(tx, st, func(seq uint64, _ []byte) bool { return seq > upTo })
	return err
}

func dropOldest(tx *bolt.Tx, st *state, c *Counters, limit int64) error {
	n, err := deleteFront(tx, st, func(uint64, []byte) bool { return st.bytes <= limit })
	c.Dropped += n
	return err
}

// Close stops the committer after the writes already submitted and closes
// the file. It is a no-op the second time.
func (q *Queue) Close() error {
	q.closeMu.Lock()
	if q.closed {
		q.closeMu.Unlock()
		return nil
	}
	q.closed = true
	close(q.done)
	close(q.ops)
	q.closeMu.Unlock()
	q.wg.Wait()
	defer q.dx.free() // the committer, its only user, has stopped
	if q.damagedError() != nil {
		// bbolt panicked on this file: its close may wait on state the
		// panic left behind. The process is about to exit anyway.
		closed := make(chan error, 1)
		go func() { closed <- q.guard(q.db.Close) }()
		select {
		case err := <-closed:
			return err
		case <-time.After(2 * time.Second):
			return fmt.Errorf("close queue: %w: gave up waiting", ErrDamaged)
		}
	}
	if !q.readOnly {
		// The last commit writes the freelist, which the others leave out
		// (openDB): the next open then reads it instead of walking every
		// page of the file (about half a second for a million queued
		// messages). Its first commit drops it again. After a crash the
		// open walks, as before.
		q.db.NoFreelistSync = false
		if err := q.guard(q.saveClock); err != nil {
			q.log.Warn().Err(err).Msg("save the clock reading at close: the next start counts from the last commit")
		}
	}
	if err := q.db.Close(); err != nil {
		return fmt.Errorf("close queue: %w", err)
	}
	return nil
}

// Counters returns totals since Open.
func (q *Queue) Counters() Counters {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.counters
}

// Path is the queue file.
func (q *Queue) Path() string { return q.cfg.Path }

// Ping round-trips an empty write through the committer: it fails when
// the commit path is stuck or the file is gone (the systemd watchdog and
// /readyz use it). Concurrent pings share one round trip, so a wedged
// committer holds at most one waiting goroutine however often it is asked.
func (q *Queue) Ping(ctx context.Context) error {
	q.pingMu.Lock()
	c := q.ping
	if c == nil {
		c = &pingCall{done: make(chan struct{})}
		q.ping = c
		go q.runPing(c)
	}
	q.pingMu.Unlock()
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return fmt.Errorf("queue ping: %w", ctx.Err())
	}
}

// pingCall is the one outstanding ping; err is set before done closes.
type pingCall struct {
	done chan struct{}
	err  error
}

func (q *Queue) runPing(c *pingCall) {
	c.err = q.submit(context.Background(), &op{apply: func(*bolt.Tx, *state, *Counters) error { return nil }})
	q.pingMu.Lock()
	q.ping = nil
	q.pingMu.Unlock()
	close(c.done)
}

// FileSize is the size of the queue file on disk.
func (q *Queue) FileSize() int64 {
	fi, err := os.Stat(q.cfg.Path)
	if err != nil {
		return 0
	}
	return fi.Size()
}
