package buffer

import (
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"

	"wittra-gateway/internal/clock"
)

// Ages (MaxAge, DedupWindow) are measured in "gateway time": nanoseconds
// the gateway observed passing. While running it advances with the
// monotonic clock, which never steps; across a restart it advances by the
// time the queue can tell passed (see startTimeline). A wall clock that
// boots at 1970 and steps to today, or steps ten days forward, moves no
// message closer to expiry.
//
// Records keep their wall-clock receive time (so the msgs layout and
// `queue export` are unchanged). Their gateway time is derived: the
// "epochs" bucket holds, from a first sequence on, the offset
// wall − gateway time that was in force, and whether the wall clock was
// trusted then. A new epoch is written only when the offset moves by more
// than ClockStep (a step, a restart that could not credit its down time)
// or trust changes; epochs with no stored record left are deleted. Bound:
// one epoch per such event while its records are stored.
//
// Dedup keys store their gateway time directly.
//
// The meta key "clock" holds the last committed reading (gateway time,
// wall, monotonic, boot id, trusted), written with every commit, so a
// restart knows where gateway time stood.

var (
	bucketEpochs = []byte("epochs")
	keyClock     = []byte("clock")
)

// Defaults of the clock settings.
const (
	DefaultClockStep  = time.Minute
	DefaultMaxOffline = 30 * 24 * time.Hour
)

// epoch: from sequence first on, records were stamped with a wall clock
// that read gateway time + offset.
type epoch struct {
	first   uint64
	offset  int64 // wall − gateway time, ns
	trusted bool  // the wall clock was not known to be wrong
}

func (e epoch) value() []byte {
	v := binary.BigEndian.AppendUint64(nil, uint64(e.offset))
	if e.trusted {
		return append(v, 1)
	}
	return append(v, 0)
}

// epochFor is the epoch in force for seq. Epochs are sorted by first; a
// record older than every epoch (none is) counts as trusted, offset 0.
func epochFor(eps []epoch, seq uint64) epoch {
	i, found := slices.BinarySearchFunc(eps, seq, func(e epoch, s uint64) int {
		switch {
		case e.first < s:
			return -1
		case e.first > s:
			return 1
		}
		return 0
	})
	if found {
		return eps[i]
	}
	if i == 0 {
		return epoch{trusted: true}
	}
	return eps[i-1]
}

// reading is one look at both clocks.
type reading struct {
	wall    time.Time
	g       int64 // gateway time, ns
	mono    time.Duration
	trusted bool // wall not before the build floor
}

func (r reading) offset() int64 { return r.wall.UnixNano() - r.g }

// timeline turns clock readings into gateway time and notices a wall
// clock known to be wrong.
type timeline struct {
	clk   clock.Clock
	floor time.Time
	step  time.Duration
	log   zerolog.Logger

	mu    sync.Mutex
	g0    int64
	m0    time.Duration
	boot  string
	last  reading
	steps uint64
}

func (t *timeline) now() reading {
	t.mu.Lock()
	defer t.mu.Unlock()
	w, m := t.clk.Now(), t.clk.Mono()
	if m < t.last.mono {
		m = t.last.mono // a Clock must not go back; never let gateway time
	}
	r := reading{wall: w, g: t.g0 + int64(m-t.m0), mono: m, trusted: !w.Before(t.floor)}
	if d := time.Duration(r.offset() - t.last.offset()); d > t.step || d < -t.step {
		t.steps++
		// Where the wall clock would be had it not stepped, and where it is.
		t.log.Error().Time("expected_wall", t.last.wall.Add(time.Duration(r.g-t.last.g))).Time("wall", w).
			Stringer("step", d).Bool("trusted", r.trusted).
			Msg("wall clock stepped: message ages are measured by the monotonic clock and do not move; receive times taken before the step may be off by the step")
	}
	if r.trusted != t.last.trusted {
		t.logTrust(r)
	}
	t.last = r
	return r
}

// logTrust logs a change of trust once, when it happens.
func (t *timeline) logTrust(r reading) {
	if r.trusted {
		t.log.Info().Time("wall", r.wall).Time("build_floor", t.floor).Msg("wall clock trusted: after the build time")
		return
	}
	t.log.Error().Time("wall", r.wall).Time("build_floor", t.floor).
		Msg("wall clock is earlier than this binary's build time: it is wrong (no real-time clock, NTP not synced yet?). Nothing expires because of it; receive times taken now are corrected once it is right")
}

// ClockStatus is what the queue knows about the wall clock.
type ClockStatus struct {
	Trusted bool      // the wall clock is not before the build floor
	Steps   uint64    // steps larger than ClockStep seen since Open
	Wall    time.Time // the wall clock now
	Floor   time.Time // the build floor
	// Offset is wall clock minus gateway time: 0 on a box whose clock was
	// always right; it moves by each step.
	Offset time.Duration
}

// Clock reads the clock status (for /metrics and the start line).
func (q *Queue) Clock() ClockStatus {
	r := q.tl.now()
	q.tl.mu.Lock()
	steps := q.tl.steps
	q.tl.mu.Unlock()
	return ClockStatus{Trusted: r.trusted, Steps: steps, Wall: r.wall, Floor: q.tl.floor, Offset: time.Duration(r.offset())}
}

// clockState is the meta "clock" value: the last committed reading.
type clockState struct {
	g       int64
	wall    int64
	mono    time.Duration
	trusted bool
	boot    string
}

func (c clockState) value() []byte {
	v := binary.BigEndian.AppendUint64(nil, uint64(c.g))
	v = binary.BigEndian.AppendUint64(v, uint64(c.wall))
	v = binary.BigEndian.AppendUint64(v, uint64(c.mono))
	if c.trusted {
		v = append(v, 1)
	} else {
		v = append(v, 0)
	}
	return append(v, c.boot...)
}

func readClockState(meta *bolt.Bucket) (clockState, bool, error) {
	v := meta.Get(keyClock)
	if v == nil {
		return clockState{}, false, nil
	}
	if len(v) < 25 {
		return clockState{}, false, &CorruptError{Key: string(keyClock), Err: fmt.Errorf("value has %d bytes, want at least 25", len(v))}
	}
	return clockState{
		g:       int64(binary.BigEndian.Uint64(v)),
		wall:    int64(binary.BigEndian.Uint64(v[8:])),
		mono:    time.Duration(binary.BigEndian.Uint64(v[16:])),
		trusted: v[24] == 1,
		boot:    string(v[25:]),
	}, true, nil
}

func (t *timeline) state(r reading) clockState {
	return clockState{g: r.g, wall: r.wall.UnixNano(), mono: r.mono, trusted: r.trusted, boot: t.boot}
}

// startTimeline sets gateway time at open from the last committed reading:
//   - same boot: the monotonic clock says exactly how long the queue was
//     closed;
//   - another boot: at least the time since this boot began; more only by
//     the wall clocks' difference when both readings were trusted, and by
//     at most MaxOffline of it;
//   - no reading (a new file, or one written before gateway time existed):
//     gateway time starts at the wall clock, so stored wall times are
//     gateway times, or at the newest stored time if that is later (no
//     time is assumed to have passed).
func (q *Queue) startTimeline(tx *bolt.Tx, st *state) error {
	meta := tx.Bucket(bucketMeta)
	prev, ok, err := readClockState(meta)
	if err != nil {
		return err
	}
	q.resumeTimeline(tx, prev, ok, q.cfg.MaxOffline)
	if err := loadEpochs(tx, st); err != nil {
		return err
	}
	if !ok && len(st.epochs) == 0 {
		// A new file: gateway time started at the wall clock.
		if err := putEpoch(tx, st, epoch{first: 0, offset: 0, trusted: true}); err != nil {
			return err
		}
	}
	// A restart starts a new epoch for any offset change beyond clock
	// noise: the step threshold is for telling a step from drift while
	// running, not an error to carry over.
	if err := noteEpoch(tx, st, q.tl.last, time.Millisecond); err != nil {
		return err
	}
	return meta.Put(keyClock, q.tl.state(q.tl.last).value())
}

// resumeTimeline sets the timeline's origin from the previous run's last
// reading (ok false: none); see startTimeline.
func (q *Queue) resumeTimeline(tx *bolt.Tx, prev clockState, ok bool, maxOffline time.Duration) {
	tl := q.tl
	w, m, boot := tl.clk.Now(), tl.clk.Mono(), tl.clk.BootID()
	trusted := !w.Before(tl.floor)
	var g0 int64
	if !ok {
		// Never behind what the file holds: ages are not negative.
		g0 = max(w.UnixNano(), newestStored(tx))
	} else {
		elapsed := m // a new boot: at least its uptime passed
		gap := time.Duration(w.UnixNano() - prev.wall)
		switch {
		case prev.boot == boot && m >= prev.mono:
			elapsed = m - prev.mono
		case prev.trusted && trusted && gap > elapsed:
			elapsed = min(gap, maxOffline)
		}
		g0 = prev.g + int64(elapsed)
		if d := gap - elapsed; d > tl.step || d < -tl.step {
			q.log.Warn().Time("last_wall", time.Unix(0, prev.wall)).Time("wall", w).Stringer("wall_gap", gap).Stringer("counted", elapsed).
				Bool("same_boot", prev.boot == boot).Msg("wall clock moved between runs by other than the time counted as passed: message ages count what the queue could verify")
		}
	}
	tl.g0, tl.m0, tl.boot = g0, m, boot
	tl.last = reading{wall: w, g: g0, mono: m, trusted: trusted}
	if !trusted {
		tl.logTrust(tl.last)
	}
}

// readOnlyTimeline sets up the timeline of a read-only queue (export):
// receive times come out as a running gateway would show them.
func (q *Queue) readOnlyTimeline(tx *bolt.Tx) error {
	q.tl = &timeline{clk: clock.System(), floor: clock.BuildFloor(""), step: DefaultClockStep, log: q.log}
	var prev clockState
	var ok bool
	if meta := tx.Bucket(bucketMeta); meta != nil {
		var err error
		if prev, ok, err = readClockState(meta); err != nil {
			return err
		}
	}
	if tx.Bucket(bucketMsgs) == nil {
		return nil
	}
	q.resumeTimeline(tx, prev, ok, DefaultMaxOffline)
	if b := tx.Bucket(bucketEpochs); b != nil {
		return b.ForEach(func(k, v []byte) error {
			if len(k) != 8 || len(v) != 9 {
				return &CorruptError{Key: fmt.Sprintf("epochs/%x", k), Err: fmt.Errorf("epoch has %d+%d bytes, want 8+9", len(k), len(v))}
			}
			q.st.epochs = append(q.st.epochs, epoch{first: binary.BigEndian.Uint64(k), offset: int64(binary.BigEndian.Uint64(v)), trusted: v[8] == 1})
			return nil
		})
	}
	return nil
}

// migrateGatewayTime upgrades format 1 to 2: it adds the epochs bucket
// with one epoch for every stored record, offset 0, trusted: gateway time
// starts as the wall clock (startTimeline, no "clock" reading yet), so the
// stored receive times and dedup times keep their meaning and are not
// rewritten. Records stamped before the build floor still count as unsure
// (receiveTime). The msgs bucket is unchanged (MsgsFormat stays 1).
func migrateGatewayTime(tx *bolt.Tx) (map[string]int, error) {
	b, err := tx.CreateBucketIfNotExists(bucketEpochs)
	if err != nil {
		return nil, fmt.Errorf("create bucket epochs: %w", err)
	}
	if err := b.Put(u64(0), epoch{trusted: true}.value()); err != nil {
		return nil, fmt.Errorf("put epoch: %w", err)
	}
	return map[string]int{"epochs": 1}, nil
}

// newestStored is the newest time the file holds (last message, newest
// dedup key), or 0.
func newestStored(tx *bolt.Tx) int64 {
	var newest int64
	if b := tx.Bucket(bucketMsgs); b != nil {
		if _, v := b.Cursor().Last(); len(v) >= 8 {
			newest = int64(binary.BigEndian.Uint64(v))
		}
	}
	if b := tx.Bucket(bucketDedupW); b != nil {
		if k, _ := b.Cursor().Last(); len(k) == 16 {
			newest = max(newest, int64(binary.BigEndian.Uint64(k[8:])))
		}
	}
	if b := tx.Bucket(bucketDedupTV2); b != nil { // a format 2 file
		if k, _ := b.Cursor().Last(); len(k) >= 8 {
			newest = max(newest, int64(binary.BigEndian.Uint64(k)))
		}
	}
	return newest
}

func loadEpochs(tx *bolt.Tx, st *state) error {
	b, err := tx.CreateBucketIfNotExists(bucketEpochs)
	if err != nil {
		return fmt.Errorf("create bucket epochs: %w", err)
	}
	st.epochs = nil
	return b.ForEach(func(k, v []byte) error {
		if len(k) != 8 || len(v) != 9 {
			return &CorruptError{Key: fmt.Sprintf("epochs/%x", k), Err: fmt.Errorf("epoch has %d+%d bytes, want 8+9", len(k), len(v))}
		}
		st.epochs = append(st.epochs, epoch{first: binary.BigEndian.Uint64(k), offset: int64(binary.BigEndian.Uint64(v)), trusted: v[8] == 1})
		return nil
	})
}

// putEpoch stores e as the newest epoch. st.epochs is copied, never
// changed in place: readers share the published slice.
func putEpoch(tx *bolt.Tx, st *state, e epoch) error {
	if err := tx.Bucket(bucketEpochs).Put(u64(e.first), e.value()); err != nil {
		return fmt.Errorf("put epoch: %w", err)
	}
	eps := slices.Clone(st.epochs)
	if n := len(eps); n > 0 && eps[n-1].first == e.first {
		eps[n-1] = e
	} else {
		eps = append(eps, e)
	}
	st.epochs = eps
	return nil
}

// noteEpoch starts a new epoch at the next sequence when r's offset or
// trust differs from the current epoch's.
func noteEpoch(tx *bolt.Tx, st *state, r reading, step time.Duration) error {
	if n := len(st.epochs); n > 0 {
		cur := st.epochs[n-1]
		d := time.Duration(r.offset() - cur.offset)
		if cur.trusted == r.trusted && d <= step && d >= -step {
			return nil
		}
	}
	return putEpoch(tx, st, epoch{first: st.last + 1, offset: r.offset(), trusted: r.trusted})
}

// saveClock commits the current reading, so the next Open counts from
// here, not from the last write.
func (q *Queue) saveClock() error {
	return q.update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keyClock, q.tl.state(q.tl.now()).value())
	})
}

// pruneEpochs deletes epochs that no stored record uses any more.
func pruneEpochs(tx *bolt.Tx, st *state) error {
	drop := 0
	for drop+1 < len(st.epochs) && st.epochs[drop+1].first <= st.head {
		drop++
	}
	if drop == 0 {
		return nil
	}
	b := tx.Bucket(bucketEpochs)
	for _, e := range st.epochs[:drop] {
		if err := b.Delete(u64(e.first)); err != nil {
			return fmt.Errorf("delete epoch: %w", err)
		}
	}
	st.epochs = slices.Clone(st.epochs[drop:])
	return nil
}

// recordG is the gateway time of a record stamped with wall time wallNs.
func recordG(eps []epoch, seq uint64, wallNs int64) int64 {
	return wallNs - epochFor(eps, seq).offset
}

// receiveTime is a record's receive time as best known now: the stored
// wall time when the clock was trusted then; else, when it is trusted now,
// corrected to the current clock (receipt = now − age); else the stored
// time, marked unsure.
func (q *Queue) receiveTime(eps []epoch, now reading, seq uint64, wallNs int64) (t time.Time, unsure bool) {
	e := epochFor(eps, seq)
	w := time.Unix(0, wallNs)
	if e.trusted && !w.Before(q.tl.floor) {
		return w, false
	}
	if now.trusted {
		return time.Unix(0, wallNs-e.offset+now.offset()), false
	}
	return w, true
}

// timer returns receiveTime bound to the current epochs and clock.
func (q *Queue) timer() func(seq uint64, wallNs int64) (time.Time, bool) {
	q.mu.Lock()
	eps := q.st.epochs
	q.mu.Unlock()
	now := q.tl.now()
	return func(seq uint64, wallNs int64) (time.Time, bool) { return q.receiveTime(eps, now, seq, wallNs) }
}
