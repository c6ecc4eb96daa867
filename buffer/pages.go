package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"runtime/debug"
	"unsafe"
)

// This file reads bbolt's on-disk format directly, with bounds checks on
// every field, so a damaged file can be checked and salvaged without bbolt.
// Why not bbolt itself: with NoFreelistSync its open rebuilds the freelist
// by walking every page in a goroutine of its own (DB.freepages), and an
// assertion or a memory fault there kills the process whatever recover the
// caller has (that is the crash loop this replaces). tx.Check loads the
// freelist the same way first.
//
// Layout (bbolt v1.5, go.etcd.io/bbolt/internal/common; native byte order,
// little-endian on every platform the gateway is built for):
//
//	page header (16 B)  id u64 | flags u16 | count u16 | overflow u32
//	meta (after header) magic u32 | version u32 | pageSize u32 | flags u32 |
//	                    root pgid u64 | root sequence u64 | freelist pgid u64 |
//	                    hwm pgid u64 | txid u64 | checksum u64 (FNV-64a of the
//	                    56 bytes before it)
//	branch element      pos u32 | ksize u32 | pgid u64   (pos from the element)
//	leaf element        flags u32 | pos u32 | ksize u32 | vsize u32
//	bucket value        root pgid u64 | sequence u64 [| inline leaf page when root is 0]

const (
	pageHeaderSize  = 16
	elemSize        = 16
	flagBranch      = 0x01
	flagLeaf        = 0x02
	flagMeta        = 0x04
	flagFreelist    = 0x10
	leafFlagBucket  = 0x01
	boltMagic       = 0xED0CDAED
	boltVersion     = 2
	noFreelist      = ^uint64(0)
	maxTreeDepth    = 64
	minPageSize     = 512
	maxPageSize     = 1 << 20
	defaultPageSize = 4096
)

// CheckMaxPages bounds the consistency check at open: it reads at most this
// many pages (1 GiB of 4 KiB pages; each page once, one page in memory at a
// time, plus one bit per page of the file). A file whose live tree is bigger
// is checked up to the bound; the rest is covered by the open marker (see
// salvage.go): an open that dies is quarantined at the next start.
var CheckMaxPages = 1 << 18

var le = binary.LittleEndian

// boltMeta is one meta page.
type boltMeta struct {
	pageSize uint32
	root     uint64
	rootSeq  uint64
	freelist uint64
	hwm      uint64
	txid     uint64
	err      error // why it is not valid
}

// pageFile reads pages of a bbolt file without mapping it.
type pageFile struct {
	f        *os.File
	size     int64
	pageSize int
	// data maps the file when the reader asked for it (mapped): pages are
	// then slices of it, valid until Close, and touched pages are released
	// every releasePages so the check does not grow RSS by the file's size.
	data    []byte
	touched int
	meta    boltMeta // the meta bbolt would use; meta.err set when none is valid
}

func openPageFile(path string) (*pageFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	pf := &pageFile{f: f, size: fi.Size(), pageSize: defaultPageSize}
	m0 := pf.readMeta(0, 0)
	if m0.err == nil || (m0.pageSize >= minPageSize && m0.pageSize <= maxPageSize) {
		pf.pageSize = int(m0.pageSize)
	}
	m1 := pf.readMeta(1, pf.pageSize)
	if m0.err != nil && m1.err == nil {
		pf.pageSize = int(m1.pageSize)
	}
	// As bbolt: the valid meta with the higher transaction id.
	a, b := m0, m1
	if b.txid > a.txid {
		a, b = b, a
	}
	switch {
	case a.err == nil:
		pf.meta = a
	case b.err == nil:
		pf.meta = b
	default:
		pf.meta = boltMeta{err: fmt.Errorf("both meta pages invalid: %v; %v", m0.err, m1.err)}
	}
	return pf, nil
}

// mapped maps the file read-only; a failure leaves page reads as they are.
func (pf *pageFile) mapped() {
	if data, err := mapReadOnly(pf.f, pf.size); err == nil {
		pf.data = data
	}
}

// releasePages: pages read from the mapping between two releases of its
// resident pages (mapped.go says why).
const releasePages = 4096

func (pf *pageFile) Close() error {
	if pf.data != nil {
		unmap(pf.data)
		pf.data = nil
	}
	return pf.f.Close()
}

// readMeta reads meta page n; page 1 sits at pageSize (0: the default).
func (pf *pageFile) readMeta(n int, pageSize int) boltMeta {
	if pageSize == 0 {
		pageSize = defaultPageSize
	}
	buf := make([]byte, pageHeaderSize+64)
	if _, err := pf.f.ReadAt(buf, int64(n*pageSize)); err != nil {
		return boltMeta{err: fmt.Errorf("meta page %d: %w", n, err)}
	}
	m := buf[pageHeaderSize:]
	meta := boltMeta{
		pageSize: le.Uint32(m[8:]),
		root:     le.Uint64(m[16:]),
		rootSeq:  le.Uint64(m[24:]),
		freelist: le.Uint64(m[32:]),
		hwm:      le.Uint64(m[40:]),
		txid:     le.Uint64(m[48:]),
	}
	h := fnv.New64a()
	h.Write(m[:56])
	switch {
	case le.Uint32(m[0:]) != boltMagic:
		meta.err = fmt.Errorf("meta page %d: bad magic", n)
	case le.Uint32(m[4:]) != boltVersion:
		meta.err = fmt.Errorf("meta page %d: version %d", n, le.Uint32(m[4:]))
	case le.Uint64(m[56:]) != h.Sum64():
		meta.err = fmt.Errorf("meta page %d: checksum mismatch", n)
	case meta.pageSize < minPageSize || meta.pageSize > maxPageSize || meta.pageSize&(meta.pageSize-1) != 0:
		meta.err = fmt.Errorf("meta page %d: page size %d", n, meta.pageSize)
	}
	return meta
}

// pages is the number of whole pages in the file.
func (pf *pageFile) pages() uint64 { return uint64(pf.size) / uint64(pf.pageSize) }

var errBadPage = errors.New("damaged page")

// page reads page id with its overflow pages and checks its header: its
// id, a known type and elements that fit. limit is the high-water mark (0:
// the file's size).
func (pf *pageFile) page(id, limit uint64) ([]byte, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("page %d: %w: %s", id, errBadPage, fmt.Sprintf(format, a...))
	}
	if limit == 0 || limit > pf.pages() {
		limit = pf.pages()
	}
	if id < 2 || id >= limit {
		return nil, bad("out of bounds (%d pages)", limit)
	}
	if pf.data != nil {
		return pf.mappedPage(id, limit, bad)
	}
	// One read for the usual page without overflow, a second for the rest.
	buf := make([]byte, pf.pageSize)
	if _, err := pf.f.ReadAt(buf, int64(id)*int64(pf.pageSize)); err != nil {
		return nil, bad("read: %v", err)
	}
	if got := le.Uint64(buf); got != id {
		return nil, bad("identifies as %d", got)
	}
	overflow := uint64(le.Uint32(buf[12:]))
	if id+overflow >= limit {
		return nil, bad("overflow %d past the end", overflow)
	}
	if overflow > 0 {
		buf = append(buf, make([]byte, overflow*uint64(pf.pageSize))...)
		if _, err := pf.f.ReadAt(buf[pf.pageSize:], int64(id+1)*int64(pf.pageSize)); err != nil {
			return nil, bad("read overflow: %v", err)
		}
	}
	if err := checkPage(buf); err != nil {
		return nil, bad("%v", err)
	}
	return buf, nil
}

// mappedPage is page for a mapped file: the same checks on a slice of the
// mapping instead of a copy.
func (pf *pageFile) mappedPage(id, limit uint64, bad func(string, ...any) error) ([]byte, error) {
	if pf.touched++; pf.touched >= releasePages {
		pf.touched = 0
		dontNeed(uintptr(unsafe.Pointer(&pf.data[0])), uintptr(len(pf.data)))
	}
	ps := uint64(pf.pageSize)
	buf := pf.data[id*ps : (id+1)*ps]
	if got := le.Uint64(buf); got != id {
		return nil, bad("identifies as %d", got)
	}
	overflow := uint64(le.Uint32(buf[12:]))
	if id+overflow >= limit {
		return nil, bad("overflow %d past the end", overflow)
	}
	buf = pf.data[id*ps : (id+1+overflow)*ps]
	if err := checkPage(buf); err != nil {
		return nil, bad("%v", err)
	}
	return buf, nil
}

// checkPage checks that a branch or leaf page's elements lie inside it and
// its keys ascend.
func checkPage(p []byte) error {
	if len(p) < pageHeaderSize {
		return errors.New("short")
	}
	flags, count := le.Uint16(p[8:]), int(le.Uint16(p[10:]))
	if flags != flagBranch && flags != flagLeaf {
		return fmt.Errorf("type %#x", flags)
	}
	if pageHeaderSize+count*elemSize > len(p) {
		return fmt.Errorf("%d elements do not fit", count)
	}
	var prev []byte
	for i := range count {
		k, _, _, _, err := element(p, i)
		if err != nil {
			return err
		}
		if i > 0 && string(k) <= string(prev) {
			return fmt.Errorf("key %d out of order", i)
		}
		prev = k
	}
	return nil
}

// element returns element i of a checked page: key, value (leaf), child
// (branch) and leaf flags.
func element(p []byte, i int) (k, v []byte, child uint64, lflags uint32, err error) {
	off := pageHeaderSize + i*elemSize
	e := p[off : off+elemSize]
	if le.Uint16(p[8:]) == flagBranch {
		pos, ksize := uint64(le.Uint32(e)), uint64(le.Uint32(e[4:]))
		start := uint64(off) + pos
		if start+ksize > uint64(len(p)) {
			return nil, nil, 0, 0, fmt.Errorf("branch key %d outside the page", i)
		}
		return p[start : start+ksize], nil, le.Uint64(e[8:]), 0, nil
	}
	lflags = le.Uint32(e)
	pos, ksize, vsize := uint64(le.Uint32(e[4:])), uint64(le.Uint32(e[8:])), uint64(le.Uint32(e[12:]))
	start := uint64(off) + pos
	if start+ksize+vsize > uint64(len(p)) {
		return nil, nil, 0, 0, fmt.Errorf("leaf element %d outside the page", i)
	}
	return p[start : start+ksize], p[start+ksize : start+ksize+vsize], 0, lflags, nil
}

// walker visits the trees of a file, page by page, skipping what is
// damaged.
type walker struct {
	pf       *pageFile
	hwm      uint64
	seen     []uint64 // bitset of pages visited: each page belongs to one tree
	maxPages int
	read     int
	bad      []error // damaged pages found
	capped   bool    // stopped at maxPages
}

func newWalker(pf *pageFile, maxPages int) *walker {
	hwm := pf.meta.hwm
	if hwm == 0 || hwm > pf.pages() {
		hwm = pf.pages()
	}
	return &walker{pf: pf, hwm: hwm, seen: make([]uint64, hwm/64+1), maxPages: maxPages}
}

func (w *walker) visited(id uint64) bool {
	return id < w.hwm && w.seen[id/64]&(1<<(id%64)) != 0
}

func (w *walker) mark(id, n uint64) bool {
	for p := id; p <= id+n && p < w.hwm; p++ {
		if w.seen[p/64]&(1<<(p%64)) != 0 {
			return false
		}
		w.seen[p/64] |= 1 << (p % 64)
	}
	return true
}

// walkBucket visits every leaf element of the bucket whose value (bucket
// header, maybe an inline page) is b. Damaged pages are recorded in w.bad
// and their subtrees skipped.
func (w *walker) walkBucket(name string, b []byte, fn func(k, v []byte, lflags uint32)) {
	if len(b) < 16 {
		w.bad = append(w.bad, fmt.Errorf("bucket %q: header of %d bytes", name, len(b)))
		return
	}
	root := le.Uint64(b)
	if root == 0 {
		inline := b[16:]
		if err := checkPage(inline); err != nil || le.Uint16(inline[8:]) != flagLeaf {
			w.bad = append(w.bad, fmt.Errorf("bucket %q: inline page: %v", name, err))
			return
		}
		w.leaf(inline, fn)
		return
	}
	w.walkPage(name, root, 0, nil, nil, fn)
}

func (w *walker) walkPage(name string, id uint64, depth int, lo, hi []byte, fn func(k, v []byte, lflags uint32)) {
	if w.maxPages > 0 && w.read >= w.maxPages {
		w.capped = true
		return
	}
	if depth > maxTreeDepth {
		w.bad = append(w.bad, fmt.Errorf("bucket %q: page %d: tree deeper than %d", name, id, maxTreeDepth))
		return
	}
	p, err := w.pf.page(id, w.hwm)
	w.read++
	if err != nil {
		w.bad = append(w.bad, fmt.Errorf("bucket %q: %w", name, err))
		return
	}
	if !w.mark(id, uint64(le.Uint32(p[12:]))) {
		w.bad = append(w.bad, fmt.Errorf("bucket %q: page %d: %w: referenced twice", name, id, errBadPage))
		return
	}
	// Keys lie within what the parent's branch element promises: the
	// first at or after its key, all before the next one's.
	count := int(le.Uint16(p[10:]))
	for i := range count {
		k, _, _, _, _ := element(p, i)
		if (i == 0 && lo != nil && string(k) < string(lo)) || (hi != nil && string(k) >= string(hi)) {
			w.bad = append(w.bad, fmt.Errorf("bucket %q: page %d: %w: key %d outside its parent's range", name, id, errBadPage, i))
			return
		}
	}
	if le.Uint16(p[8:]) == flagLeaf {
		w.leaf(p, fn)
		return
	}
	for i := range count {
		k, _, child, _, _ := element(p, i)
		next := hi
		if i+1 < count {
			next, _, _, _, _ = element(p, i+1)
		}
		w.walkPage(name, child, depth+1, k, next, fn)
	}
}

func (w *walker) leaf(p []byte, fn func(k, v []byte, lflags uint32)) {
	for i := range int(le.Uint16(p[10:])) {
		k, v, _, lflags, _ := element(p, i)
		fn(k, v, lflags)
	}
}

// walkAll visits every bucket (nested ones too) from the meta's root. The
// root and "kv" hold only buckets in every format version: a plain value
// there is damage (bbolt would refuse to open it as a bucket).
func (w *walker) walkAll() {
	var visit func(name string, b []byte)
	visit = func(name string, b []byte) {
		w.walkBucket(name, b, func(k, v []byte, lflags uint32) {
			if lflags&leafFlagBucket != 0 {
				visit(name+"/"+string(k), v)
			} else if name == "" || name == "/"+string(bucketKV) {
				w.bad = append(w.bad, fmt.Errorf("bucket %q: %w: %q is a value, not a bucket", name, errBadPage, k))
			}
		})
	}
	root := make([]byte, 16)
	le.PutUint64(root, w.pf.meta.root)
	visit("", root)
}

// checkFile is the consistency check at open: every page of every bucket
// reachable from the current meta page has its own id, a branch or leaf
// type, elements inside it and ascending keys, lies below the high-water
// mark and is referenced once (what bbolt's open asserts, and more), up to
// CheckMaxPages pages. It returns nil for a missing or empty file (a new
// queue), an error wrapping errBadPage for damage, and other errors as is.
func checkFile(path string) (checked int, err error) {
	// A page the flash cannot read faults on the mapping (SIGBUS) where a
	// read call would return EIO: a panic recovered below, not a crash.
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: check panicked: %v", errBadPage, r)
		}
	}()
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) || (err == nil && fi.Size() == 0) {
		return 0, nil
	}
	pf, err := openPageFile(path)
	if err != nil {
		return 0, err
	}
	defer pf.Close()
	if pf.meta.err != nil {
		return 0, fmt.Errorf("%w: %v", errBadPage, pf.meta.err)
	}
	pf.mapped()
	if pf.meta.freelist != noFreelist {
		if _, err := pf.freelistPage(); err != nil {
			return 0, err
		}
	}
	w := newWalker(pf, CheckMaxPages)
	w.walkAll()
	if len(w.bad) > 0 {
		return w.read, fmt.Errorf("%w: %d found: %v", errBadPage, len(w.bad), errors.Join(w.bad...))
	}
	return w.read, nil
}

// freelistPage checks the synced freelist page bbolt would read at open.
func (pf *pageFile) freelistPage() ([]byte, error) {
	id := pf.meta.freelist
	bad := func(s string) error { return fmt.Errorf("freelist page %d: %w: %s", id, errBadPage, s) }
	if id < 2 || id >= pf.meta.hwm || id >= pf.pages() {
		return nil, bad("out of bounds")
	}
	hdr := make([]byte, pageHeaderSize)
	if _, err := pf.f.ReadAt(hdr, int64(id)*int64(pf.pageSize)); err != nil {
		return nil, bad(err.Error())
	}
	if le.Uint64(hdr) != id || le.Uint16(hdr[8:]) != flagFreelist {
		return nil, bad("wrong id or type")
	}
	overflow := uint64(le.Uint32(hdr[12:]))
	count := uint64(le.Uint16(hdr[10:]))
	if id+overflow >= pf.pages() {
		return nil, bad("overflow past the end")
	}
	buf := make([]byte, (overflow+1)*uint64(pf.pageSize))
	if _, err := pf.f.ReadAt(buf, int64(id)*int64(pf.pageSize)); err != nil {
		return nil, bad(err.Error())
	}
	if count == 0xFFFF { // the real count is the first element
		count = le.Uint64(buf[pageHeaderSize:]) + 1
	}
	if pageHeaderSize+count*8 > uint64(len(buf)) {
		return nil, bad("ids do not fit")
	}
	return buf, nil
}
