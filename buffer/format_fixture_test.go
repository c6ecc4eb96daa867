package buffer

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
)

// fixtureManifest mirrors buffer/internal/mkfixture's Manifest.
type fixtureManifest struct {
	Consumers []string          `json:"consumers"`
	Head      uint64            `json:"head"`
	Last      uint64            `json:"last"`
	Cursors   map[string]uint64 `json:"cursors"`
	Messages  []struct {
		Seq      uint64 `json:"seq"`
		TimeNs   int64  `json:"time_ns"`
		Data     string `json:"data"`
		DedupKey string `json:"dedup_key"`
	} `json:"messages"`
	DedupKeys   []string `json:"dedup_keys"`
	DeadLetters []struct {
		Consumer string `json:"consumer"`
		Seq      uint64 `json:"seq"`
		Reason   string `json:"reason"`
		Data     string `json:"data"`
	} `json:"dead_letters"`
	KV []struct {
		Namespace string `json:"namespace"`
		Key       string `json:"key"`
		Value     string `json:"value"`
	} `json:"kv"`
}

const fixtureRoot = "testdata/format"

// fixtureVersions lists the vN directories under testdata/format.
func fixtureVersions(t *testing.T) []uint64 {
	t.Helper()
	entries, err := os.ReadDir(fixtureRoot)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`^v([0-9]+)$`)
	var vs []uint64
	for _, e := range entries {
		if m := re.FindStringSubmatch(e.Name()); m != nil && e.IsDir() {
			v, _ := strconv.ParseUint(m[1], 10, 64)
			vs = append(vs, v)
		}
	}
	slices.Sort(vs)
	return vs
}

// copyFixture copies a fixture's queue file to a temporary directory: a
// fixture is never opened in place (Open migrates).
func copyFixture(t *testing.T, v uint64) (string, fixtureManifest) {
	t.Helper()
	dir := filepath.Join(fixtureRoot, fmt.Sprintf("v%d", v))
	b, err := os.ReadFile(filepath.Join(dir, "queue.db"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "queue.db")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	var m fixtureManifest
	mb, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(mb, &m); err != nil {
		t.Fatalf("%s/manifest.json: %v", dir, err)
	}
	return path, m
}

// TestFormatFixturesCoverEveryVersion fails when the code's versions and
// the committed fixtures disagree: a version bump (a new migration step)
// needs a fixture written by the code of that version, and a fixture needs
// the code to know its version.
func TestFormatFixturesCoverEveryVersion(t *testing.T) {
	got := fixtureVersions(t)
	if !slices.Equal(got, KnownFormats()) {
		t.Fatalf("fixture directories under %s: %v; versions this code knows: %v. "+
			"A format bump needs testdata/format/vN written by `go run ./buffer/internal/mkfixture` at that version, and a migration step",
			fixtureRoot, got, KnownFormats())
	}
	for i, m := range migrations {
		if m.from != uint64(i+1) {
			t.Fatalf("migrations[%d] upgrades from version %d, want %d (steps must be in order, one per version)", i, m.from, i+1)
		}
	}
	// Each fixture really is a file of its version (v1: without a number).
	for _, v := range got {
		path, _ := copyFixture(t, v)
		db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		var found uint64
		var stamped bool
		err = db.View(func(tx *bolt.Tx) error {
			stamped = tx.Bucket(bucketMeta).Get(keyFormat) != nil
			var err error
			found, _, err = fileFormat(tx)
			return err
		})
		db.Close()
		if err != nil {
			t.Fatal(err)
		}
		if found != v || (v == 1) == stamped {
			t.Fatalf("fixture v%d: file says version %d (stamped %v)", v, found, stamped)
		}
	}
}

// TestFormatFixturesOpenWithCurrentCode opens the file every earlier
// version wrote: every stored message reaches each consumer after its
// cursor, once and in order; nothing acknowledged comes back; the dedup
// window, dead letters and KV entries survive.
func TestFormatFixturesOpenWithCurrentCode(t *testing.T) {
	for _, v := range fixtureVersions(t) {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			path, m := copyFixture(t, v)
			testFixture(t, v, path, m, true)
		})
	}
}

// TestFormatFixturesSalvage salvages every fixture as if it were damaged:
// a healthy file of any known version comes across whole.
func TestFormatFixturesSalvage(t *testing.T) {
	if FormatVersion() != salvageReads {
		t.Fatalf("salvage.go reads format %d, the code writes %d: teach Salvage the new layout", salvageReads, FormatVersion())
	}
	for _, v := range fixtureVersions(t) {
		t.Run(fmt.Sprintf("v%d", v), func(t *testing.T) {
			src, m := copyFixture(t, v)
			dst := filepath.Join(t.TempDir(), "salvaged.db")
			rep, err := Salvage(src, dst, zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			if rep.Salvaged != uint64(len(m.Messages)) || !rep.LostKnown || rep.Lost != 0 || rep.DamagedPages != 0 {
				t.Fatalf("salvage report %+v, want %d messages, none lost", rep, len(m.Messages))
			}
			testFixture(t, v, dst, m, false)
		})
	}
}

func testFixture(t *testing.T, v uint64, path string, m fixtureManifest, migrates bool) {
	oldest := time.Unix(0, m.Messages[0].TimeNs)
	// The window reaches back past the fixture's first key, so
	// every key in it counts as recent.
	window := time.Since(oldest) + 24*time.Hour
	var logs bytes.Buffer
	cfg := Config{Path: path, Consumers: m.Consumers, DedupWindow: window}
	q, err := Open(cfg, zerolog.New(&logs))
	if err != nil {
		t.Fatalf("open v%d fixture: %v", v, err)
	}
	defer func() { q.Close() }()
	if migrates && v < FormatVersion() && !strings.Contains(logs.String(), "migrated") {
		t.Errorf("no migration logged:\n%s", logs.String())
	}
	st, err := q.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if st.Head != m.Head || st.Last != m.Last || st.Messages != uint64(len(m.Messages)) {
		t.Fatalf("head %d last %d messages %d, want %d %d %d", st.Head, st.Last, st.Messages, m.Head, m.Last, len(m.Messages))
	}
	ctx := context.Background()
	for _, name := range m.Consumers {
		r, err := q.Reader(name)
		if err != nil {
			t.Fatal(err)
		}
		if r.Cursor() != m.Cursors[name] {
			t.Fatalf("%s cursor %d, want %d", name, r.Cursor(), m.Cursors[name])
		}
		var want []int
		for i, msg := range m.Messages {
			if msg.Seq > m.Cursors[name] {
				want = append(want, i)
			}
		}
		recs := readAll(t, r, len(want))
		if len(recs) != len(want) {
			t.Fatalf("%s read %d records, want %d", name, len(recs), len(want))
		}
		for j, i := range want {
			exp := m.Messages[i]
			if recs[j].Seq != exp.Seq || string(recs[j].Data) != exp.Data || recs[j].Time.UnixNano() != exp.TimeNs {
				t.Fatalf("%s record %d: seq %d time %d data %.24q, want %d %d %.24q", name, j, recs[j].Seq, recs[j].Time.UnixNano(), recs[j].Data, exp.Seq, exp.TimeNs, exp.Data)
			}
		}
		// Nothing more: each message exactly once.
		short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		extra, err := r.Read(short, 10, 1<<20)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%s: read past the end returned %d records, %v", name, len(extra), err)
		}
	}
	// Every dedup key of the file is still within the window.
	for _, k := range m.DedupKeys {
		res, err := q.Append(ctx, []Entry{{Data: []byte("again"), DedupKey: k}})
		if err != nil || res.Duplicates != 1 || res.Accepted != 0 {
			t.Fatalf("append of fixture key %s: %+v %v, want a duplicate", k, res, err)
		}
	}
	res, err := q.Append(ctx, []Entry{{Data: []byte("new"), DedupKey: "after-upgrade"}})
	if err != nil || res.Accepted != 1 {
		t.Fatalf("new append: %+v %v", res, err)
	}
	var dead []string
	q.DeadLetters(func(d DeadLetter) bool {
		dead = append(dead, fmt.Sprintf("%s/%d/%s/%s", d.Consumer, d.Seq, d.Reason, d.Data))
		return true
	})
	var wantDead []string
	for _, d := range m.DeadLetters {
		wantDead = append(wantDead, fmt.Sprintf("%s/%d/%s/%s", d.Consumer, d.Seq, d.Reason, d.Data))
	}
	if !slices.Equal(dead, wantDead) || q.Counters().DeadLetters != uint64(len(wantDead)) {
		t.Fatalf("dead letters %q (counter %d), want %q", dead, q.Counters().DeadLetters, wantDead)
	}
	for _, kv := range m.KV {
		got, err := q.KV(kv.Namespace).Get(kv.Key)
		if err != nil || string(got) != kv.Value {
			t.Fatalf("kv %s/%s = %q %v, want %q", kv.Namespace, kv.Key, got, err, kv.Value)
		}
	}

	// After acknowledging everything and a restart, nothing
	// acknowledged is sent again and the file is current.
	for _, name := range m.Consumers {
		r, _ := q.Reader(name)
		recs := readAll(t, r, 1) // the one appended above
		if recs[0].Seq != m.Last+1 {
			t.Fatalf("%s: new message has seq %d, want %d (sequence kept)", name, recs[0].Seq, m.Last+1)
		}
		if err := r.Ack(ctx, recs[0].Seq); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	q, err = Open(cfg, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := q.Stats(); st.Messages != 0 || st.Last != m.Last+1 {
		t.Fatalf("after acking all and reopening: %d messages, last %d", st.Messages, st.Last)
	}
	if got := onDiskFormat(t, q); got != FormatVersion() {
		t.Fatalf("file format after open = %d, want %d", got, FormatVersion())
	}
}

func onDiskFormat(t *testing.T, q *Queue) uint64 {
	t.Helper()
	var v uint64
	err := q.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketMeta).Get(keyFormat)
		if len(b) != 8 {
			return fmt.Errorf("format key has %d bytes", len(b))
		}
		v = binary.BigEndian.Uint64(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}
