package buffer

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
)

// salvageReads is the format version whose layout the salvage reads (and
// writes). TestFormatFixturesSalvage fails when FormatVersion moves on.
const salvageReads = 3

// SalvageReport counts what a salvage copied out of a damaged file.
type SalvageReport struct {
	Salvaged uint64 // messages copied, each after the lowest cursor
	// Lost is how many messages not yet delivered to every consumer could
	// not be read. It is only known when the file's sequence and cursors
	// were readable (LostKnown).
	Lost      uint64
	LostKnown bool
	// Cursors are the consumers' acknowledged sequences recovered; nil when
	// the meta bucket could not be read (every consumer then gets every
	// salvaged message: at-least-once).
	Cursors      map[string]uint64
	DedupKeys    int
	DeadLetters  int
	KVEntries    int
	Last         uint64 // sequence the new file continues from
	DamagedPages int
}

// salvageMinTime and salvageMaxAhead bound a plausible receive time: a page
// found by scanning the file is taken for a message page only if every
// value starts with one.
var salvageMinTime = time.Date(2015, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()

const salvageMaxAhead = 366 * 24 * time.Hour

func plausibleTime(ns uint64) bool {
	return int64(ns) >= salvageMinTime && int64(ns) <= time.Now().Add(salvageMaxAhead).UnixNano()
}

// salvageBatchBytes bounds the message bytes one salvage transaction writes
// (and holds in memory).
const salvageBatchBytes = 4 << 20

// Salvage copies everything readable from the damaged queue file src into
// a new queue file dst (which must not exist), without bbolt reading src:
//
//   - every bucket is walked from the current meta page, page by page,
//     skipping damaged pages and what hangs below them;
//   - then every page of the file is scanned on its own, so message pages
//     cut off by a damaged branch page are found too. Such a page is taken
//     only if every key is a sequence after the lowest cursor and every
//     value starts with a plausible receive time; a message is never copied
//     twice;
//   - cursors, dedup keys (from either of the two dedup buckets), dead
//     letters and KV entries are copied as far as readable. Cursors found
//     only by the scan take the highest value seen (they only grow).
//
// Messages keep their sequence numbers and receive times, so cursors stay
// meaningful and delivery resumes after each consumer's cursor
// (at-least-once). The new file continues the sequence after the highest
// one seen, so no number is reused.
func Salvage(src, dst string, log zerolog.Logger) (rep SalvageReport, err error) {
	if _, err := os.Stat(dst); err == nil {
		return rep, fmt.Errorf("salvage: %s exists", dst)
	}
	pf, err := openPageFile(src)
	if err != nil {
		return rep, fmt.Errorf("salvage: %w", err)
	}
	defer pf.Close()
	out, err := bolt.Open(dst, 0o600, &bolt.Options{Timeout: time.Second, NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return rep, fmt.Errorf("salvage: create %s: %w", dst, err)
	}
	defer func() {
		if cerr := out.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("salvage: close %s: %w", dst, cerr)
		}
		if err != nil {
			os.Remove(dst)
		}
	}()
	s := &salvager{pf: pf, out: out, w: newWalker(pf, 0), dedup: map[string]uint64{}, present: map[uint64]bool{}}
	if err := s.run(); err != nil {
		return rep, fmt.Errorf("salvage %s: %w", src, err)
	}
	rep = s.report()
	log.Info().Str("from", src).Str("to", dst).Uint64("salvaged", rep.Salvaged).Uint64("lost", rep.Lost).Bool("lost_known", rep.LostKnown).
		Bool("cursors_recovered", rep.Cursors != nil).Int("dedup_keys", rep.DedupKeys).Int("dead_letters", rep.DeadLetters).
		Int("kv_entries", rep.KVEntries).Int("damaged_pages", rep.DamagedPages).Msg("queue salvage finished")
	return rep, nil
}

type salvager struct {
	pf  *pageFile
	out *bolt.DB
	w   *walker

	seq      uint64 // msgs bucket sequence; seqKnown when read from its header
	seqKnown bool
	cursors  map[string]uint64 // from the meta bucket; nil = unknown
	splits   map[string][]byte // "split/<name>" values read with cursors (split.go)
	scanCur  map[string]uint64 // cursors found by the page scan
	dedup    map[string]uint64 // encoded key → latest accept time
	clock    []byte            // meta "clock" (format 2), nil when unread
	epochs   [][2][]byte       // bucket epochs (format 2)
	dead     [][2][]byte
	kv       [][3][]byte
	present  map[uint64]bool // sequences copied
	maxSeq   uint64
	bytes    int64
	pending  [][2][]byte
	pendSize int
	flushErr error
	badScan  int
}

func (s *salvager) run() error {
	if s.pf.meta.err == nil {
		s.walkTrees()
	} else {
		s.w.bad = append(s.w.bad, s.pf.meta.err)
	}
	// Cursors are needed to judge scanned pages: when the meta bucket was
	// unreadable, a first scan looks for them.
	if s.cursors == nil {
		s.scan(false)
	}
	s.scan(true)
	if err := errors.Join(s.flushErr, s.flush()); err != nil {
		return err
	}
	return s.finish()
}

// minCursor is the lowest known cursor (0 when none is known: every
// message found is kept).
func (s *salvager) minCursor() uint64 {
	c := s.cursors
	if c == nil {
		c = s.scanCur
	}
	if len(c) == 0 {
		return 0
	}
	lowest := ^uint64(0)
	for _, v := range c {
		lowest = min(lowest, v)
	}
	return lowest
}

func (s *salvager) walkTrees() {
	root := make([]byte, 16)
	le.PutUint64(root, s.pf.meta.root)
	var msgs []byte
	s.w.walkBucket("", root, func(k, v []byte, lflags uint32) {
		if lflags&leafFlagBucket == 0 || len(v) < 16 {
			return
		}
		switch string(k) {
		case string(bucketMsgs):
			msgs = slices.Clone(v)
			s.seq, s.seqKnown = le.Uint64(v[8:]), true
		case string(bucketMeta):
			cursors := map[string]uint64{}
			s.w.walkBucket("meta", v, func(k, v []byte, _ uint32) {
				if name, ok := strings.CutPrefix(string(k), cursorPrefix); ok && len(v) == 8 {
					cursors[name] = binary.BigEndian.Uint64(v)
				}
				if name, ok := strings.CutPrefix(string(k), splitPrefix); ok && len(v) == 16 {
					if s.splits == nil {
						s.splits = map[string][]byte{}
					}
					s.splits[name] = slices.Clone(v)
				}
				if string(k) == string(keyClock) && len(v) >= 25 {
					s.clock = slices.Clone(v)
				}
			})
			s.cursors = cursors
		case string(bucketEpochs):
			s.w.walkBucket("epochs", v, func(k, v []byte, _ uint32) {
				if len(k) == 8 && len(v) == 9 {
					s.epochs = append(s.epochs, [2][]byte{slices.Clone(k), slices.Clone(v)})
				}
			})
		case string(bucketDedupW):
			s.w.walkBucket("dedupw", v, func(k, v []byte, _ uint32) {
				s.addDedupRecord(k, v)
			})
		case string(bucketDedupV2): // a format 2 file
			s.w.walkBucket("dedup", v, func(k, v []byte, _ uint32) {
				if len(v) == 8 {
					s.addDedup(appendDedupID(nil, k), binary.BigEndian.Uint64(v))
				}
			})
		case string(bucketDedupTV2):
			s.w.walkBucket("dedupt", v, func(k, v []byte, _ uint32) {
				if len(k) > 8 {
					s.addDedup(appendDedupID(nil, k[8:]), binary.BigEndian.Uint64(k))
				}
			})
		case string(bucketDead):
			s.w.walkBucket("dead", v, func(k, v []byte, _ uint32) {
				if len(k) >= 8 && len(v) >= 16 {
					s.dead = append(s.dead, [2][]byte{slices.Clone(k), slices.Clone(v)})
				}
			})
		case string(bucketKV):
			s.w.walkBucket("kv", v, func(ns, nv []byte, lflags uint32) {
				if lflags&leafFlagBucket == 0 {
					return
				}
				s.w.walkBucket("kv/"+string(ns), nv, func(k, v []byte, lflags uint32) {
					if lflags&leafFlagBucket == 0 {
						s.kv = append(s.kv, [3][]byte{slices.Clone(ns), slices.Clone(k), slices.Clone(v)})
					}
				})
			})
		}
	})
	if msgs != nil {
		s.w.walkBucket("msgs", msgs, func(k, v []byte, lflags uint32) {
			if lflags == 0 && len(k) == 8 && len(v) >= 8 {
				s.addMsg(binary.BigEndian.Uint64(k), v)
			}
		})
	}
}

// addDedupRecord takes the keys of a dedupw record; false when k, v is not
// one.
func (s *salvager) addDedupRecord(k, v []byte) bool {
	_, g, ok := parseDedupRecordKey(k)
	if !ok || len(v) == 0 || !plausibleTime(uint64(g)) || forEachDedupID(v, func([]byte) {}) != nil {
		return false
	}
	forEachDedupID(v, func(id []byte) { s.addDedup(id, uint64(g)) })
	return true
}

// addDedup notes the encoded key k (appendDedupID) accepted at gateway
// time at.
func (s *salvager) addDedup(k []byte, at uint64) {
	if !plausibleTime(at) {
		return
	}
	if at > s.dedup[string(k)] {
		s.dedup[string(k)] = at
	}
}

func (s *salvager) addMsg(seq uint64, v []byte) {
	if seq == 0 || s.present[seq] || seq <= s.minCursor() {
		return
	}
	s.present[seq] = true
	s.maxSeq = max(s.maxSeq, seq)
	s.bytes += int64(8 + len(v))
	s.pending = append(s.pending, [2][]byte{u64(seq), slices.Clone(v)})
	s.pendSize += len(v)
	if s.pendSize >= salvageBatchBytes && s.flushErr == nil {
		s.flushErr = s.flush()
	}
}

// flush writes the pending messages in one transaction.
func (s *salvager) flush() error {
	if len(s.pending) == 0 {
		return nil
	}
	err := s.out.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketMsgs)
		if err != nil {
			return err
		}
		b.FillPercent = appendFill
		for _, kv := range s.pending {
			if err := b.Put(kv[0], kv[1]); err != nil {
				return err
			}
		}
		return nil
	})
	s.pending, s.pendSize = s.pending[:0], 0
	return err
}

// scan reads every page of the file on its own (not through the tree) and
// takes what looks like queue data from leaf pages the tree walk did not
// reach. With msgs false it only collects cursors.
func (s *salvager) scan(msgs bool) {
	pages := s.w.hwm // pages past the high-water mark were never written
	for id := uint64(2); id < pages; {
		next := id + 1
		if s.w.visited(id) {
			id = next
			continue
		}
		func() {
			defer func() {
				if recover() != nil {
					s.badScan++
				}
			}()
			p, err := s.pf.page(id, pages)
			if err != nil || le.Uint16(p[8:]) != flagLeaf {
				return
			}
			next = id + 1 + uint64(le.Uint32(p[12:]))
			s.scanLeaf(p, msgs, 0)
		}()
		id = next
	}
}

func (s *salvager) scanLeaf(p []byte, msgs bool, depth int) {
	count := int(le.Uint16(p[10:]))
	type msg struct {
		seq uint64
		v   []byte
	}
	var found []msg
	allMsgs := count > 0
	lowest := s.minCursor()
	for i := range count {
		k, v, _, lflags, err := element(p, i)
		if err != nil {
			return
		}
		if lflags&leafFlagBucket != 0 {
			allMsgs = false
			if depth == 0 && len(v) > 16 && le.Uint64(v) == 0 && checkPage(v[16:]) == nil && le.Uint16(v[16+8:]) == flagLeaf {
				s.scanLeaf(v[16:], msgs, depth+1) // an inline bucket
			}
			if string(k) == string(bucketMsgs) && len(v) >= 16 && !s.seqKnown {
				s.seq = max(s.seq, le.Uint64(v[8:]))
			}
			continue
		}
		if !msgs {
			if name, ok := strings.CutPrefix(string(k), cursorPrefix); ok && len(v) == 8 {
				if s.scanCur == nil {
					s.scanCur = map[string]uint64{}
				}
				s.scanCur[name] = max(s.scanCur[name], binary.BigEndian.Uint64(v))
			}
			continue
		}
		if len(k) == 16 && len(v) > 0 && s.addDedupRecord(k, v) { // a dedupw page
			allMsgs = false
			continue
		}
		if len(k) > 8 && len(v) == 0 && plausibleTime(binary.BigEndian.Uint64(k)) {
			s.addDedup(appendDedupID(nil, k[8:]), binary.BigEndian.Uint64(k)) // a format 2 dedupt page
		}
		if len(k) != 8 || len(v) < 8 || !plausibleTime(binary.BigEndian.Uint64(v)) {
			allMsgs = false
			continue
		}
		seq := binary.BigEndian.Uint64(k)
		if seq <= lowest || (s.seqKnown && seq > s.seq) || seq >= 1<<48 {
			allMsgs = false
			continue
		}
		found = append(found, msg{seq, v})
	}
	if msgs && allMsgs {
		for _, m := range found {
			s.addMsg(m.seq, m.v)
		}
	}
}

// writeDedupRecords writes keys (encoded key → accept time) as dedupw
// records, one per accept time, oldest first.
func writeDedupRecords(tx *bolt.Tx, keys map[string]uint64) error {
	w, err := tx.CreateBucketIfNotExists(bucketDedupW)
	if err != nil {
		return err
	}
	w.FillPercent = appendFill
	sorted := slices.SortedFunc(maps.Keys(keys), func(a, b string) int {
		if c := cmp.Compare(keys[a], keys[b]); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	for len(sorted) > 0 {
		g := keys[sorted[0]]
		var v []byte
		n := 0
		for n < len(sorted) && keys[sorted[n]] == g && len(v) < 1<<16 {
			v = append(v, sorted[n]...)
			n++
		}
		sorted = sorted[n:]
		seq, err := w.NextSequence()
		if err != nil {
			return err
		}
		if err := w.Put(dedupRecordKey(seq, int64(g)), v); err != nil {
			return err
		}
	}
	return nil
}

// finish writes cursors, dedup keys, dead letters, KV entries, the byte
// total, the sequence and the format into the new file.
func (s *salvager) finish() error {
	last := max(s.seq, s.maxSeq)
	cursors := s.cursors
	if cursors == nil {
		cursors = s.scanCur
	}
	for _, c := range cursors {
		last = max(last, c)
	}
	s.seq = last
	return s.out.Update(func(tx *bolt.Tx) error {
		msgs, err := tx.CreateBucketIfNotExists(bucketMsgs)
		if err != nil {
			return err
		}
		if err := msgs.SetSequence(last); err != nil {
			return err
		}
		if err := stamp(tx); err != nil {
			return err
		}
		meta := tx.Bucket(bucketMeta)
		if err := meta.Put(keyBytes, u64(uint64(s.bytes))); err != nil {
			return err
		}
		for name, c := range cursors {
			if err := meta.Put([]byte(cursorPrefix+name), u64(c)); err != nil {
				return err
			}
		}
		// Split points only with the cursors they were read with; without
		// them a consumer sends its acknowledged live messages again.
		for name, v := range s.splits {
			if _, ok := s.cursors[name]; ok {
				if err := meta.Put(splitKey(name), v); err != nil {
					return err
				}
			}
		}
		if err := writeDedupRecords(tx, s.dedup); err != nil {
			return err
		}
		// Gateway time (timeline.go): the last clock reading and the
		// epochs keep ages and receive-time corrections; without them the
		// stored wall times are taken as gateway times, as for format 1.
		epochs, err := tx.CreateBucketIfNotExists(bucketEpochs)
		if err != nil {
			return err
		}
		if len(s.epochs) == 0 {
			s.epochs = [][2][]byte{{u64(0), epoch{trusted: true}.value()}}
		}
		for _, e := range s.epochs {
			if err := epochs.Put(e[0], e[1]); err != nil {
				return err
			}
		}
		if s.clock != nil {
			if err := meta.Put(keyClock, s.clock); err != nil {
				return err
			}
		}
		if len(s.dead) > 0 {
			b, err := tx.CreateBucketIfNotExists(bucketDead)
			if err != nil {
				return err
			}
			for _, d := range s.dead {
				if err := b.Put(d[0], d[1]); err != nil {
					return err
				}
			}
		}
		for _, e := range s.kv {
			root, err := tx.CreateBucketIfNotExists(bucketKV)
			if err != nil {
				return err
			}
			b, err := root.CreateBucketIfNotExists(e[0])
			if err != nil {
				return err
			}
			if err := b.Put(e[1], e[2]); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *salvager) report() SalvageReport {
	rep := SalvageReport{
		Salvaged:     uint64(len(s.present)),
		Cursors:      s.cursors,
		DedupKeys:    len(s.dedup),
		DeadLetters:  len(s.dead),
		KVEntries:    len(s.kv),
		Last:         s.seq,
		DamagedPages: len(s.w.bad),
	}
	if rep.Cursors == nil && s.scanCur != nil {
		rep.Cursors = s.scanCur
	}
	if s.seqKnown && s.cursors != nil {
		lowest := s.minCursor()
		if s.seq > lowest {
			expected := s.seq - lowest
			rep.LostKnown = true
			if expected > rep.Salvaged {
				rep.Lost = expected - rep.Salvaged
			}
		} else {
			rep.LostKnown = true
		}
	}
	return rep
}

// Markers beside the queue file (see Open):
//
//	<path>.opening  how many opens in a row began and did not finish. An
//	                open that dies inside bbolt (a fault or a panic in one
//	                of its goroutines, which no recover reaches) leaves it;
//	                at openMarkerLimit the file is quarantined unchecked.
//	<path>.damaged  written when bbolt panicked at run time; the next start
//	                quarantines the file at once.
const openMarkerLimit = 2

func openingMarker(path string) string { return path + ".opening" }
func damagedMarker(path string) string { return path + ".damaged" }

func readOpenings(path string) int {
	b, err := os.ReadFile(openingMarker(path))
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(string(bytes.TrimSpace(b)))
	return n
}

func writeMarker(path, content string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = f.WriteString(content)
	return errors.Join(err, f.Sync(), f.Close())
}

// setOpenings records n unfinished opens (0 removes the marker).
func setOpenings(path string, n int) error {
	if n <= 0 {
		if err := os.Remove(openingMarker(path)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		return nil
	}
	return writeMarker(openingMarker(path), strconv.Itoa(n)+"\n")
}

// Import salvages the damaged queue file from (a quarantined
// <path>.corrupt-<time>, say) into this queue: every readable message
// after the lowest cursor of that file is appended in order with a new
// sequence number and its original receive time, and its dedup keys are
// merged (so duplicates of those messages stay refused). Consumers of the
// damaged file that had some of them get them again (at-least-once).
// MaxBytes is not applied: this is an operator's explicit request.
func (q *Queue) Import(ctx context.Context, from string) (SalvageReport, error) {
	dir, err := os.MkdirTemp(filepath.Dir(q.cfg.Path), ".salvage-")
	if err != nil {
		return SalvageReport{}, fmt.Errorf("import: %w", err)
	}
	defer os.RemoveAll(dir)
	tmp := filepath.Join(dir, "salvaged.db")
	rep, err := Salvage(from, tmp, q.log)
	if err != nil {
		return rep, err
	}
	src, err := bolt.Open(tmp, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		return rep, fmt.Errorf("import: %w", err)
	}
	defer src.Close()
	var after uint64 // last sequence of the source copied so far
	for {
		var batch [][]byte
		size := 0
		err := src.View(func(tx *bolt.Tx) error {
			c := tx.Bucket(bucketMsgs).Cursor()
			for k, v := c.Seek(u64(after + 1)); k != nil && size < salvageBatchBytes; k, v = c.Next() {
				batch = append(batch, slices.Clone(v))
				size += len(v)
				after = binary.BigEndian.Uint64(k)
			}
			return nil
		})
		if err != nil {
			return rep, fmt.Errorf("import: read: %w", err)
		}
		if len(batch) == 0 {
			break
		}
		if err := q.submit(ctx, &op{apply: func(tx *bolt.Tx, st *state, _ *Counters) error {
			msgs := tx.Bucket(bucketMsgs)
			msgs.FillPercent = appendFill
			for _, v := range batch {
				seq, err := msgs.NextSequence()
				if err != nil {
					return err
				}
				if err := msgs.Put(u64(seq), v); err != nil {
					return err
				}
				st.last = seq
				st.bytes += int64(8 + len(v))
			}
			return nil
		}}); err != nil {
			return rep, fmt.Errorf("import: %w", err)
		}
	}
	// Dedup keys, record by record with their accept times; a key this
	// queue already remembers keeps its own time.
	var recs [][2][]byte
	err = src.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDedupW).ForEach(func(k, v []byte) error {
			recs = append(recs, [2][]byte{slices.Clone(k), slices.Clone(v)})
			return nil
		})
	})
	if err != nil {
		return rep, fmt.Errorf("import: read dedup keys: %w", err)
	}
	for chunk := range slices.Chunk(recs, 100) {
		if err := q.submit(ctx, &op{apply: func(tx *bolt.Tx, _ *state, _ *Counters) error {
			now := q.tl.now()
			for _, r := range chunk {
				_, g, ok := parseDedupRecordKey(r[0])
				if !ok {
					continue
				}
				var ids [][]byte
				err := forEachDedupID(r[1], func(id []byte) {
					if dup, _ := q.dx.seen(tx, id, q.dx.hash(id), now.g, 1<<62); !dup {
						ids = append(ids, id)
					}
				})
				if err != nil {
					continue
				}
				if err := q.dx.putRecord(tx, g, ids); err != nil {
					return err
				}
			}
			return nil
		}}); err != nil {
			return rep, fmt.Errorf("import: dedup keys: %w", err)
		}
	}
	return rep, nil
}
