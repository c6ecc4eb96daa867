package buffer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
)

// The queue file carries two layout numbers in its meta bucket (see doc.go):
//
//	"format"      the layout of the whole file. Written when the file is
//	              created; a file without it is version 1 (every file
//	              written before the number existed).
//	"format/msgs" the layout of the msgs bucket alone: what `queue export`
//	              needs. A version that changes the msgs bucket's keys or
//	              values must bump it too; one that only changes other
//	              buckets leaves it, and a rolled-back binary can still
//	              export the messages of a file it cannot run on.
var (
	keyFormat     = []byte("format")
	keyMsgsFormat = []byte("format/msgs")
)

// MsgsFormat is the layout of the msgs bucket this code reads and writes.
const MsgsFormat = 1

// migration upgrades a file of version to version+1. It runs inside the one
// transaction that upgrades the file, so a failure leaves the file exactly
// as it was. It returns what it changed, for the log (e.g. "cursors": 2).
type migration struct {
	from  uint64
	about string
	apply func(tx *bolt.Tx) (map[string]int, error)
}

// migrations holds one step per version bump, in order: migrations[i]
// upgrades version i+1 to i+2. Adding a step is what bumps FormatVersion;
// TestFormatFixturesCoverEveryVersion then wants a testdata/format/vN
// fixture written by the code of that version.
var migrations = []migration{
	{from: 1, about: "gateway time: epochs bucket, dedup times read as gateway time", apply: migrateGatewayTime},
	{from: 2, about: "dedup window: one append-only record per commit instead of the dedup and dedupt trees", apply: migrateDedupWindow},
}

// FormatVersion is the file layout this code writes and runs on.
func FormatVersion() uint64 { return 1 + uint64(len(migrations)) }

// KnownFormats lists every version this code can open (older ones are
// migrated).
func KnownFormats() []uint64 {
	v := make([]uint64, FormatVersion())
	for i := range v {
		v[i] = uint64(i + 1)
	}
	return v
}

// maxPlausibleFormat bounds the format versions a newer gateway could
// write (one per layout change); a larger number is damage.
const maxPlausibleFormat = 1 << 16

// ErrNewerFormat is matched by a FormatError: the file was written by a
// newer gateway.
var ErrNewerFormat = errors.New("queue file written by a newer version")

// FormatError reports a queue file this binary must not run on.
type FormatError struct {
	Path  string
	Found uint64   // the file's format version
	Known []uint64 // the versions this binary knows
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("queue file has format version %d; this binary knows versions %v: it was written by a newer wittra-gateway. "+
		"Nothing was changed. Run the newer version again, or read the messages out with `wittra-gateway queue export`",
		e.Found, e.Known)
}

func (e *FormatError) Is(target error) bool { return target == ErrNewerFormat }

// fileFormat reads the file's versions: 0 when the file is new (no
// buckets at all), 1 when it predates version numbers.
func fileFormat(tx *bolt.Tx) (format, msgs uint64, err error) {
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		if tx.Bucket(bucketMsgs) == nil {
			return 0, 0, nil
		}
		return 1, 1, nil
	}
	read := func(key []byte) (uint64, error) {
		v := meta.Get(key)
		switch {
		case v == nil:
			return 1, nil
		case len(v) != 8:
			return 0, &CorruptError{Key: string(key), Err: fmt.Errorf("value has %d bytes, want 8", len(v))}
		}
		n := binary.BigEndian.Uint64(v)
		if n == 0 || n > maxPlausibleFormat {
			// Damage (a flipped byte), not a newer gateway's file: refusing
			// it as newer would stop the site until someone came; it is
			// quarantined and salvaged like any damaged page.
			return 0, &CorruptError{Key: string(key), Err: fmt.Errorf("format version %d is not one any gateway writes", n)}
		}
		return n, nil
	}
	if format, err = read(keyFormat); err != nil {
		return 0, 0, err
	}
	if msgs, err = read(keyMsgsFormat); err != nil {
		return 0, 0, err
	}
	return format, msgs, nil
}

// upgrade brings the file to FormatVersion: it stamps a new file, refuses
// a newer one (a *FormatError, nothing written), and migrates an older one
// in one transaction, so the old layout stays intact until the commit.
func upgrade(db *bolt.DB, path string, log zerolog.Logger) error {
	var found uint64
	stamped := false
	err := db.View(func(tx *bolt.Tx) error {
		var err error
		found, _, err = fileFormat(tx)
		if meta := tx.Bucket(bucketMeta); meta != nil {
			stamped = meta.Get(keyFormat) != nil && meta.Get(keyMsgsFormat) != nil
		}
		return err
	})
	if err != nil {
		return err
	}
	want := FormatVersion()
	switch {
	case found > want:
		return &FormatError{Path: path, Found: found, Known: KnownFormats()}
	case found == want && stamped:
		return nil
	case found == 0 || found == want:
		// A new file is created in the current layout directly; a file of
		// version 1 that predates the number is stamped, so a later binary
		// never has to guess.
		return db.Update(stamp)
	}
	began := time.Now()
	var steps []map[string]int
	var kept map[string]int // entries per bucket after the migration
	err = db.Update(func(tx *bolt.Tx) error {
		steps = steps[:0]
		for v := found; v < want; v++ {
			m := migrations[v-1]
			counts, err := m.apply(tx)
			if err != nil {
				return fmt.Errorf("migrate queue file from format %d to %d (%s): %w", v, v+1, m.about, err)
			}
			steps = append(steps, counts)
		}
		kept = map[string]int{}
		for _, name := range [][]byte{bucketMsgs, bucketDedupW, bucketDead} {
			if b := tx.Bucket(name); b != nil {
				// Counted by cursor: Bucket.Stats reads the committed
				// pages, not what this transaction changed.
				n, c := 0, b.Cursor()
				for k, _ := c.First(); k != nil; k, _ = c.Next() {
					n++
				}
				kept[string(name)] = n
			}
		}
		return stamp(tx)
	})
	if err != nil {
		return err
	}
	ev := log.Info().Uint64("from_format", found).Uint64("to_format", want).Stringer("took", time.Since(began))
	for k, n := range kept {
		ev = ev.Int("kept_"+k, n)
	}
	for i, counts := range steps {
		for k, n := range counts {
			ev = ev.Int(fmt.Sprintf("step%d_%s", found+uint64(i), k), n)
		}
	}
	ev.Msg("queue file migrated to the current format")
	return nil
}

// stamp writes the current versions into the meta bucket (creating it).
func stamp(tx *bolt.Tx) error {
	meta, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return fmt.Errorf("create bucket meta: %w", err)
	}
	if err := meta.Put(keyFormat, u64(FormatVersion())); err != nil {
		return fmt.Errorf("write format version: %w", err)
	}
	if err := meta.Put(keyMsgsFormat, u64(MsgsFormat)); err != nil {
		return fmt.Errorf("write msgs format version: %w", err)
	}
	return nil
}

// migrateDedupWindow upgrades format 2 to 3: the keys of bucket "dedup"
// (each with its latest accept time, gateway time) become "dedupw"
// records, one per distinct accept time in time order, so every key keeps
// exactly its time and the window's edge does not move; "dedup" and
// "dedupt" are deleted. Keys longer than 128 bytes were already stored as
// their SHA-256 and are carried over as such.
func migrateDedupWindow(tx *bolt.Tx) (map[string]int, error) {
	w, err := tx.CreateBucketIfNotExists(bucketDedupW)
	if err != nil {
		return nil, fmt.Errorf("create bucket dedupw: %w", err)
	}
	w.FillPercent = appendFill
	keys, records := 0, 0
	var cur []byte
	curG := int64(-1)
	put := func() error {
		if len(cur) == 0 {
			return nil
		}
		seq, err := w.NextSequence()
		if err != nil {
			return err
		}
		if err := w.Put(dedupRecordKey(seq, curG), cur); err != nil {
			return fmt.Errorf("put dedup record: %w", err)
		}
		records++
		cur = nil
		return nil
	}
	if dedup, index := tx.Bucket(bucketDedupV2), tx.Bucket(bucketDedupTV2); dedup != nil && index != nil {
		// The time index gives time order; only a key's latest entry
		// counts (an older one was left for the sweep).
		c := index.Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			if len(k) < 8 {
				return nil, &CorruptError{Key: fmt.Sprintf("dedupt/%x", k), Err: fmt.Errorf("index key has %d bytes", len(k))}
			}
			g, key := binary.BigEndian.Uint64(k), k[8:]
			if v := dedup.Get(key); len(v) != 8 || binary.BigEndian.Uint64(v) != g {
				continue
			}
			if int64(g) != curG || len(cur) >= 1<<16 {
				if err := put(); err != nil {
					return nil, err
				}
				curG = int64(g)
			}
			cur = appendDedupID(cur, key)
			keys++
		}
		if err := put(); err != nil {
			return nil, err
		}
	}
	for _, name := range [][]byte{bucketDedupV2, bucketDedupTV2} {
		if tx.Bucket(name) != nil {
			if err := tx.DeleteBucket(name); err != nil {
				return nil, fmt.Errorf("delete bucket %s: %w", name, err)
			}
		}
	}
	return map[string]int{"dedup_keys": keys, "dedup_records": records}, nil
}
