package buffer

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
	"sync/atomic"
	"unsafe"

	bolt "go.etcd.io/bbolt"
)

// The dedup window (format 3).
//
// On disk, bucket "dedupw" holds one append-only record per commit that
// accepted keys: key 8-byte record sequence (the bucket's NextSequence) +
// 8-byte gateway time of the commit; value the commit's keys, each encoded
// by appendDedupID. Records are only appended at the end and deleted from
// the front, a whole record (one commit's keys) at a time, when its time
// has left the window: a commit writes one new key at the end of the tree
// instead of two random B-tree inserts per message.
//
// In memory, dedupIndex is an open-addressing hash table of uint64 slots:
// the upper 32 bits a fingerprint of the encoded key's hash, the lower 32
// bits the sequence of the record that holds the key. It is rebuilt at
// Open from the records within the window. A fingerprint only picks
// candidates: a key is a duplicate only when the record a candidate slot
// names really holds the same encoded key (byte for byte) and that
// record's time is within the window. A hash collision therefore costs one
// record read, never a lost message.
var bucketDedupW = []byte("dedupw")

// Format 2's dedup buckets; read only by the migration and salvage.
var (
	bucketDedupV2  = []byte("dedup")
	bucketDedupTV2 = []byte("dedupt")
)

// maxDedupKeyLen: longer keys are stored as their SHA-256 (as in format 2).
const maxDedupKeyLen = 128

// storedDedupKey is what is remembered of key k.
func storedDedupKey(k string) []byte {
	if len(k) <= maxDedupKeyLen {
		return []byte(k)
	}
	sum := sha256.Sum256([]byte(k))
	return sum[:]
}

// Encoding of one stored key in a record (first byte = tag):
//
//	0x01..0x7F n      raw: n bytes follow
//	0x81..0xFF 0x80|n n characters of [0-9A-Za-z-_], 6 bits each, packed
//	                  big-endian into ceil(6n/8) bytes (Wittra's 20-character
//	                  ids: 16 bytes instead of 21)
//	0x80              a lower-case canonical UUID: its 16 bytes follow
//	0x00              raw: uvarint length, then the bytes (0 or ≥ 128)
//
// Every form decodes to exactly one key, so two keys are equal exactly when
// their encodings are: duplicates are confirmed by comparing encodings.
const b64Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_"

var b64Index = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for i := 0; i < len(b64Alphabet); i++ {
		t[b64Alphabet[i]] = int8(i)
	}
	return t
}()

func hexVal(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// appendUUID appends the 16 bytes of a lower-case canonical UUID.
func appendUUID(dst, id []byte) ([]byte, bool) {
	if len(id) != 36 || id[8] != '-' || id[13] != '-' || id[18] != '-' || id[23] != '-' {
		return dst, false
	}
	var out [16]byte
	j := 0
	for i := 0; i < 36; i++ {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			continue
		}
		hi, ok1 := hexVal(id[i])
		lo, ok2 := hexVal(id[i+1])
		if !ok1 || !ok2 {
			return dst, false
		}
		out[j] = hi<<4 | lo
		j++
		i++
	}
	return append(dst, out[:]...), true
}

// appendDedupID appends the encoding of a stored key.
func appendDedupID(dst, id []byte) []byte {
	n := len(id)
	if n == 36 {
		if out, ok := appendUUID(append(dst, 0x80), id); ok {
			return out
		}
	}
	packable := n >= 1 && n <= 127
	for i := 0; packable && i < n; i++ {
		packable = b64Index[id[i]] >= 0
	}
	switch {
	case packable:
		dst = append(dst, 0x80|byte(n))
		var acc uint32
		bits := 0
		for _, c := range id {
			acc = acc<<6 | uint32(b64Index[c])
			bits += 6
			if bits >= 8 {
				dst = append(dst, byte(acc>>(bits-8)))
				bits -= 8
			}
		}
		if bits > 0 {
			dst = append(dst, byte(acc<<(8-bits)))
		}
		return dst
	case n >= 1 && n <= 127:
		dst = append(dst, byte(n))
	default:
		dst = append(dst, 0)
		dst = binary.AppendUvarint(dst, uint64(n))
	}
	return append(dst, id...)
}

var errBadDedupRecord = errors.New("malformed dedup record")

// nextDedupID splits the first encoded key off a record's value.
func nextDedupID(b []byte) (id, rest []byte, err error) {
	if len(b) == 0 {
		return nil, nil, errBadDedupRecord
	}
	tag := b[0]
	var n, hdr int
	switch {
	case tag == 0x80:
		n, hdr = 16, 1
	case tag > 0x80:
		n, hdr = (int(tag&0x7F)*6+7)/8, 1
	case tag > 0:
		n, hdr = int(tag), 1
	default:
		l, w := binary.Uvarint(b[1:])
		if w <= 0 || l > uint64(len(b)) {
			return nil, nil, errBadDedupRecord
		}
		n, hdr = int(l), 1+w
	}
	if hdr+n > len(b) {
		return nil, nil, errBadDedupRecord
	}
	return b[:hdr+n], b[hdr+n:], nil
}

// forEachDedupID calls fn with every encoded key of a record's value.
func forEachDedupID(v []byte, fn func(id []byte)) error {
	for len(v) > 0 {
		id, rest, err := nextDedupID(v)
		if err != nil {
			return err
		}
		fn(id)
		v = rest
	}
	return nil
}

func dedupRecordKey(seq uint64, g int64) []byte {
	k := make([]byte, 16)
	binary.BigEndian.PutUint64(k, seq)
	binary.BigEndian.PutUint64(k[8:], uint64(g))
	return k
}

// parseDedupRecordKey returns a record key's sequence and gateway time.
func parseDedupRecordKey(k []byte) (seq uint64, g int64, ok bool) {
	if len(k) != 16 {
		return 0, 0, false
	}
	return binary.BigEndian.Uint64(k), int64(binary.BigEndian.Uint64(k[8:])), true
}

var dedupSeed = maphash.MakeSeed()

// defaultDedupHash: a per-process seed, so keys chosen to collide cannot
// be prepared in advance (a collision is only slower, never wrong).
func defaultDedupHash(b []byte) uint64 { return maphash.Bytes(dedupSeed, b) }

// Table sizing: grow by half when more than maxLoad of the slots are used,
// halve when fewer than minLoad are (never below minSlots). In steady state
// a key costs 8 bytes / load: 10.7 to 16 bytes.
const (
	dedupMinSlots = 1024
	dedupMaxLoad  = 0.75
	dedupMinLoad  = 0.2
)

// dedupIndex is the in-memory side of the dedup window. It is only used by
// the committer goroutine (and by load before it starts); count is read by
// DedupKeys from anywhere.
//
// Bound: one slot per key accepted within DedupWindow plus one
// SweepInterval (the sweep removes expired records and their slots), at
// 8 bytes per slot and a load between dedupMinLoad and dedupMaxLoad.
type dedupIndex struct {
	hash  func([]byte) uint64
	slots []uint64 // 0 = empty; fingerprint<<32 | uint32(record sequence)
	mem   []byte   // the mapping slots lives in (nil: on the Go heap)
	used  int
	count atomic.Int64 // used, as of the last commit

	// The open transaction's record: created at the first key a commit
	// accepts (reserving a sequence), written by flush.
	pendSeq uint64 // 0 = none
	pendG   int64
	pendBuf []byte
	added   []uint64 // slots inserted in the open transaction (undone on rollback)
	removed []uint64 // slots of records deleted in it (removed on commit)
}

func newDedupIndex(hash func([]byte) uint64) *dedupIndex {
	if hash == nil {
		hash = defaultDedupHash
	}
	return &dedupIndex{hash: hash}
}

func dedupFP(h uint64) uint64 {
	fp := h >> 32
	if fp == 0 {
		fp = 1 // 0 marks an empty slot
	}
	return fp
}

func (d *dedupIndex) home(fp uint64) int { return int(fp * uint64(len(d.slots)) >> 32) }

func (d *dedupIndex) insert(slot uint64) {
	if len(d.slots) == 0 || float64(d.used+1) > dedupMaxLoad*float64(len(d.slots)) {
		d.resize(max(dedupMinSlots, len(d.slots)+len(d.slots)/2))
	}
	i := d.home(slot >> 32)
	for d.slots[i] != 0 {
		if i++; i == len(d.slots) {
			i = 0
		}
	}
	d.slots[i] = slot
	d.used++
}

// delete removes one slot equal to slot (none: a no-op), shifting the
// entries after it back so every probe run stays unbroken.
func (d *dedupIndex) delete(slot uint64) {
	if len(d.slots) == 0 {
		return
	}
	n := len(d.slots)
	i := d.home(slot >> 32)
	for d.slots[i] != slot {
		if d.slots[i] == 0 {
			return
		}
		if i++; i == n {
			i = 0
		}
	}
	j := i
	for {
		if j++; j == n {
			j = 0
		}
		s := d.slots[j]
		if s == 0 {
			break
		}
		k := d.home(s >> 32)
		// s may move to i when its home is not cyclically within (i, j].
		if (i <= j && i < k && k <= j) || (i > j && (i < k || k <= j)) {
			continue
		}
		d.slots[i] = s
		i = j
	}
	d.slots[i] = 0
	d.used--
	if len(d.slots) > dedupMinSlots && float64(d.used) < dedupMinLoad*float64(len(d.slots)) {
		d.resize(max(dedupMinSlots, len(d.slots)/2))
	}
}

func (d *dedupIndex) resize(n int) {
	old, oldMem := d.slots, d.mem
	d.slots, d.mem = allocSlots(n)
	defer freeSlots(oldMem)
	d.used = 0
	for _, s := range old {
		if s != 0 {
			i := d.home(s >> 32)
			for d.slots[i] != 0 {
				if i++; i == n {
					i = 0
				}
			}
			d.slots[i] = s
			d.used++
		}
	}
}

// allocSlots returns n zeroed slots outside the Go heap where the system
// allows, with the mapping that holds them. The table is the largest
// long-lived structure (about 16 MiB for a million keys): on the heap the
// collector lets the heap grow to twice what is live before it runs, so
// the table counted about twice in RSS, and each old table left behind by
// a resize stayed resident until a collection and the scavenger had run.
// A mapping is returned to the system the moment it is replaced.
func allocSlots(n int) ([]uint64, []byte) {
	mem, err := mapAnon(n * 8)
	if err != nil || len(mem) == 0 {
		return make([]uint64, n), nil
	}
	return unsafe.Slice((*uint64)(unsafe.Pointer(unsafe.SliceData(mem))), n), mem
}

// freeSlots unmaps what allocSlots mapped; no slot of it may be used after.
func freeSlots(mem []byte) {
	if mem != nil {
		_ = unmap(mem)
	}
}

// free gives the table back (Close, or a failed Open).
func (d *dedupIndex) free() {
	if d == nil { // a read-only queue has no index
		return
	}
	freeSlots(d.mem)
	d.slots, d.mem, d.used = nil, nil, 0
}

// fullSeq turns a slot's 32 sequence bits back into the record sequence:
// the latest sequence at or below top with those bits (the records of one
// window span far fewer than 2^32 commits).
func fullSeq(loc uint32, top uint64) uint64 {
	s := top&^0xFFFFFFFF | uint64(loc)
	if s > top {
		s -= 1 << 32
	}
	return s
}

// seen reports whether the encoded key id was accepted within window
// before gateway time g: a candidate slot counts only when its record
// holds id and is younger than window.
func (d *dedupIndex) seen(tx *bolt.Tx, id []byte, h uint64, g int64, window int64) (bool, error) {
	if d.used == 0 {
		return false, nil
	}
	fp := dedupFP(h)
	b := tx.Bucket(bucketDedupW)
	top := b.Sequence()
	n := len(d.slots)
	for i := d.home(fp); d.slots[i] != 0; {
		if s := d.slots[i]; s>>32 == fp {
			seq := fullSeq(uint32(s), top)
			if seq == d.pendSeq {
				if recordHolds(d.pendBuf, id) {
					return true, nil
				}
			} else if k, v := b.Cursor().Seek(u64(seq)); k != nil {
				rs, rg, ok := parseDedupRecordKey(k)
				if ok && rs == seq && g-rg < window && recordHolds(v, id) {
					return true, nil
				}
			}
		}
		if i++; i == n {
			i = 0
		}
	}
	return false, nil
}

func countDedupIDs(v []byte) int {
	n := 0
	forEachDedupID(v, func([]byte) { n++ })
	return n
}

// recordHolds: does the record value v hold the encoded key id?
func recordHolds(v, id []byte) bool {
	for len(v) > 0 {
		e, rest, err := nextDedupID(v)
		if err != nil {
			return false
		}
		if bytes.Equal(e, id) {
			return true
		}
		v = rest
	}
	return false
}

// add records the encoded key id (hash h), accepted at gateway time g, in
// the open transaction's record.
func (d *dedupIndex) add(tx *bolt.Tx, id []byte, h uint64, g int64) error {
	if d.pendSeq == 0 {
		seq, err := tx.Bucket(bucketDedupW).NextSequence()
		if err != nil {
			return fmt.Errorf("next dedup record: %w", err)
		}
		d.pendSeq, d.pendG, d.pendBuf = seq, g, d.pendBuf[:0]
	}
	d.pendG = max(d.pendG, g)
	d.pendBuf = append(d.pendBuf, id...)
	s := dedupFP(h)<<32 | uint64(uint32(d.pendSeq))
	d.insert(s)
	d.added = append(d.added, s)
	return nil
}

// putRecord writes a record of its own (keys of another time: Import).
func (d *dedupIndex) putRecord(tx *bolt.Tx, g int64, ids [][]byte) error {
	if len(ids) == 0 {
		return nil
	}
	b := tx.Bucket(bucketDedupW)
	seq, err := b.NextSequence()
	if err != nil {
		return fmt.Errorf("next dedup record: %w", err)
	}
	var v []byte
	for _, id := range ids {
		v = append(v, id...)
		s := dedupFP(d.hash(id))<<32 | uint64(uint32(seq))
		d.insert(s)
		d.added = append(d.added, s)
	}
	b.FillPercent = appendFill
	if err := b.Put(dedupRecordKey(seq, g), v); err != nil {
		return fmt.Errorf("put dedup record: %w", err)
	}
	return nil
}

// flush writes the open transaction's record. Its value must stay
// unchanged until the commit returns (bbolt keeps a reference).
func (d *dedupIndex) flush(tx *bolt.Tx) error {
	if d.pendSeq == 0 {
		return nil
	}
	b := tx.Bucket(bucketDedupW)
	b.FillPercent = appendFill
	if err := b.Put(dedupRecordKey(d.pendSeq, d.pendG), d.pendBuf); err != nil {
		return fmt.Errorf("put dedup record: %w", err)
	}
	return nil
}

// committed publishes the transaction's changes to the index.
func (d *dedupIndex) committed() {
	for _, s := range d.removed {
		d.delete(s)
	}
	d.endTx()
}

// rolledBack undoes the transaction's inserts.
func (d *dedupIndex) rolledBack() {
	for _, s := range d.added {
		d.delete(s)
	}
	d.endTx()
}

func (d *dedupIndex) endTx() {
	d.pendSeq, d.pendG = 0, 0
	// A huge batch's buffers are not kept for the next commit.
	if cap(d.pendBuf) > 1<<20 {
		d.pendBuf = nil
	} else {
		d.pendBuf = d.pendBuf[:0]
	}
	if cap(d.added) > 1<<16 {
		d.added = nil
	} else {
		d.added = d.added[:0]
	}
	if cap(d.removed) > 1<<16 {
		d.removed = nil
	} else {
		d.removed = d.removed[:0]
	}
	d.count.Store(int64(d.used))
}

// rebuild fills the index from the records of the window at gateway time
// g (window 0: none). Expired records are left to the sweep.
func (d *dedupIndex) rebuild(tx *bolt.Tx, g, window int64) error {
	d.free()
	d.endTx()
	b := tx.Bucket(bucketDedupW)
	if window <= 0 || b == nil {
		return nil
	}
	// Sized up front, instead of a rehash at every growth step: records
	// are numbered without gaps (deleted only from the front), so their
	// count is exact; keys per record are taken from the first and last.
	c := b.Cursor()
	fk, fv := c.First()
	lk, lv := c.Last()
	if fs, _, ok1 := parseDedupRecordKey(fk); ok1 {
		if ls, _, ok2 := parseDedupRecordKey(lk); ok2 && ls >= fs {
			per := (countDedupIDs(fv) + countDedupIDs(lv) + 1) / 2
			est := min(int(ls-fs+1)*max(per, 1), 1<<28)
			d.resize(max(dedupMinSlots, int(float64(est)/dedupMaxLoad)+1))
		}
	}
	for k, v := c.First(); k != nil; k, v = c.Next() {
		seq, rg, ok := parseDedupRecordKey(k)
		if !ok {
			return &CorruptError{Key: fmt.Sprintf("dedupw/%x", k), Err: fmt.Errorf("record key has %d bytes, want 16", len(k))}
		}
		if g-rg >= window {
			continue
		}
		loc := uint64(uint32(seq))
		if err := forEachDedupID(v, func(id []byte) { d.insert(dedupFP(d.hash(id))<<32 | loc) }); err != nil {
			return &CorruptError{Key: fmt.Sprintf("dedupw/%x", k), Err: err}
		}
	}
	d.count.Store(int64(d.used))
	return nil
}

// sweepDedupRecords deletes records from the front whose time is at or
// before cutoff (now − window: out of the window, see seen), up to about
// sweepBatch keys; their slots go at commit. more reports that
// expired records may remain.
func (d *dedupIndex) sweepDedupRecords(tx *bolt.Tx, cutoff int64) (more bool, err error) {
	c := tx.Bucket(bucketDedupW).Cursor()
	keys := 0
	for k, v := c.First(); k != nil; k, v = c.First() {
		if keys >= sweepBatch {
			return true, nil
		}
		seq, rg, ok := parseDedupRecordKey(k)
		if ok && rg > cutoff {
			return false, nil
		}
		loc := uint64(uint32(seq))
		// A malformed record goes too: it holds nothing usable.
		_ = forEachDedupID(v, func(id []byte) {
			d.removed = append(d.removed, dedupFP(d.hash(id))<<32|loc)
			keys++
		})
		if err := c.Delete(); err != nil {
			return false, fmt.Errorf("delete dedup record: %w", err)
		}
	}
	return false, nil
}

// dedupIDs are an Append's encoded keys and their hashes, computed before
// the op reaches the committer (off the one goroutine every write waits
// for).
type dedupIDs struct {
	buf    []byte
	off    []int32 // entry i's encoding is buf[off[i]:off[i+1]]; empty = no key
	hashes []uint64
	dups   []bool
	byHash map[uint64]int32 // big requests: first accepted entry per hash

	// Room for the usual request of one message, so it allocates nothing more.
	offArr  [2]int32
	hashArr [1]uint64
	dupArr  [1]bool
	bufArr  [24]byte
}

// inRequestLinear: up to this many entries, duplicates within one request
// are looked for by comparing with every earlier entry.
const inRequestLinear = 16

func (d *dedupIDs) encode(entries []Entry, hash func([]byte) uint64) {
	n := len(entries)
	if n == 1 {
		d.off, d.hashes, d.dups, d.buf = d.offArr[:], d.hashArr[:], d.dupArr[:], d.bufArr[:0]
	} else {
		d.off, d.hashes, d.dups = make([]int32, n+1), make([]uint64, n), make([]bool, n)
	}
	for i, e := range entries {
		if e.DedupKey != "" {
			if len(e.DedupKey) <= maxDedupKeyLen {
				d.buf = appendDedupID(d.buf, unsafeBytes(e.DedupKey))
			} else {
				d.buf = appendDedupID(d.buf, storedDedupKey(e.DedupKey))
			}
			d.hashes[i] = hash(d.buf[d.off[i]:])
		}
		d.off[i+1] = int32(len(d.buf))
	}
}

func (d *dedupIDs) has(i int) bool    { return d.off[i+1] > d.off[i] }
func (d *dedupIDs) id(i int) []byte   { return d.buf[d.off[i]:d.off[i+1]] }
func (d *dedupIDs) hash(i int) uint64 { return d.hashes[i] }
func (d *dedupIDs) dup(i int) bool    { return d.dups[i] }

// reset forgets the decisions of an earlier run of the op.
func (d *dedupIDs) reset() {
	clear(d.dups)
	clear(d.byHash)
}

// duplicate decides entry i (called for every keyed entry in order after
// reset): a duplicate of the window or of an
// earlier entry of the same request.
func (d *dedupIDs) duplicate(tx *bolt.Tx, dx *dedupIndex, i int, g, window int64) (bool, error) {
	dup, err := dx.seen(tx, d.id(i), d.hashes[i], g, window)
	if err != nil {
		return false, err
	}
	if !dup {
		dup = d.earlier(i)
	}
	d.dups[i] = dup
	if !dup && len(d.dups) > inRequestLinear {
		if d.byHash == nil {
			d.byHash = make(map[uint64]int32, len(d.dups))
		}
		if _, ok := d.byHash[d.hashes[i]]; !ok {
			d.byHash[d.hashes[i]] = int32(i)
		}
	}
	return dup, nil
}

// earlier: does an accepted entry before i carry the same key?
func (d *dedupIDs) earlier(i int) bool {
	if len(d.dups) > inRequestLinear {
		j, ok := d.byHash[d.hashes[i]]
		if !ok {
			return false
		}
		if bytes.Equal(d.id(int(j)), d.id(i)) {
			return true
		}
		// A hash collision within the request: compare with every one.
	}
	for j := 0; j < i; j++ {
		if !d.dups[j] && d.hashes[j] == d.hashes[i] && d.has(j) && bytes.Equal(d.id(j), d.id(i)) {
			return true
		}
	}
	return false
}

// unsafeBytes views s without copying; the bytes are only read.
func unsafeBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }
