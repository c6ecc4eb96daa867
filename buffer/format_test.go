package buffer

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
)

// setFormat overwrites the format numbers of a closed queue file.
func setFormat(t *testing.T, path string, format, msgs uint64) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if err := meta.Put(keyFormat, u64(format)); err != nil {
			return err
		}
		return meta.Put(keyMsgsFormat, u64(msgs))
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestNewFileIsStampedWithTheCurrentFormat(t *testing.T) {
	q := openQueue(t, Config{})
	if got := onDiskFormat(t, q); got != FormatVersion() {
		t.Fatalf("new file has format %d, want %d", got, FormatVersion())
	}
}

func TestNewerFormatRefusesToOpenAndChangesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	q := openQueue(t, Config{Path: path, Consumers: []string{"a", "b"}})
	appendN(t, q, 0, 5)
	q.Close()
	newer := FormatVersion() + 1
	setFormat(t, path, newer, MsgsFormat)
	before, _ := os.ReadFile(path)

	// Even with a consumer dropped from the config (which would delete
	// its cursor), nothing may be written to a file of a newer format.
	_, err := Open(Config{Path: path, Consumers: []string{"a"}}, zerolog.Nop())
	var fe *FormatError
	if !errors.As(err, &fe) || !errors.Is(err, ErrNewerFormat) {
		t.Fatalf("Open of a newer file: %v, want a *FormatError", err)
	}
	if fe.Found != newer || len(fe.Known) != int(FormatVersion()) {
		t.Fatalf("error says found %d known %v", fe.Found, fe.Known)
	}
	for _, want := range []string{"format version 2", "knows versions [1]", "queue export"} {
		if FormatVersion() == 1 && !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("the refused file was modified")
	}
	if aside, _ := filepath.Glob(path + ".corrupt-*"); len(aside) != 0 {
		t.Fatalf("a newer file was quarantined as corrupt: %v", aside)
	}

	// The read-only path still exports its messages.
	ro, err := OpenReadOnly(path, 0, zerolog.Nop())
	if err != nil {
		t.Fatalf("OpenReadOnly of a newer file whose msgs layout is known: %v", err)
	}
	var got []string
	if err := ro.Scan(0, func(r Record) bool { got = append(got, string(r.Data)); return true }); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "m0,m1,m2,m3,m4" {
		t.Fatalf("export read %q", got)
	}
	if _, err := ro.Append(context.Background(), []Entry{{Data: []byte("x")}}); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("append on a read-only queue: %v", err)
	}
	if err := ro.Close(); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("the read-only export modified the file")
	}

	// A msgs layout it does not know is refused even read-only.
	setFormat(t, path, newer, MsgsFormat+1)
	if _, err := OpenReadOnly(path, 0, zerolog.Nop()); err == nil || !strings.Contains(err.Error(), "message layout") {
		t.Fatalf("OpenReadOnly with an unknown msgs layout: %v", err)
	}
}

// withMigration registers a step to version FormatVersion()+1 for one test.
func withMigration(t *testing.T, m migration) {
	t.Helper()
	saved := migrations
	migrations = append(append([]migration(nil), saved...), m)
	t.Cleanup(func() { migrations = saved })
}

func TestMigrationIsAtomicAndLogged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	q := openQueue(t, Config{Path: path, DedupWindow: 1 << 40})
	appendN(t, q, 0, 20)
	q.Close()
	from := FormatVersion()

	// A step that writes, then fails: the file stays at the old version
	// with everything in it, and opens again once the step is fixed.
	fail := true
	withMigration(t, migration{from: from, about: "test step", apply: func(tx *bolt.Tx) (map[string]int, error) {
		if err := tx.Bucket(bucketMsgs).Delete(u64(1)); err != nil {
			return nil, err
		}
		if _, err := tx.CreateBucket([]byte("new-index")); err != nil {
			return nil, err
		}
		if fail {
			return nil, errors.New("disk on fire")
		}
		return map[string]int{"indexed": 20}, nil
	}})
	_, err := Open(Config{Path: path, Consumers: []string{"a"}, DedupWindow: 1 << 40}, zerolog.Nop())
	if err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("open with a failing migration: %v", err)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	db.View(func(tx *bolt.Tx) error {
		f, _, _ := fileFormat(tx)
		if f != from || tx.Bucket(bucketMsgs).Get(u64(1)) == nil || tx.Bucket([]byte("new-index")) != nil {
			t.Errorf("after a failed migration: format %d, message 1 present %v, new bucket %v",
				f, tx.Bucket(bucketMsgs).Get(u64(1)) != nil, tx.Bucket([]byte("new-index")) != nil)
		}
		return nil
	})
	db.Close()

	fail = false
	var logs bytes.Buffer
	q, err = Open(Config{Path: path, Consumers: []string{"a"}, DedupWindow: 1 << 40}, zerolog.New(&logs))
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if got := onDiskFormat(t, q); got != from+1 {
		t.Fatalf("format after migration %d, want %d", got, from+1)
	}
	for _, want := range []string{`"from_format":1`, `"to_format":2`, `"step1_indexed":20`, `"kept_msgs":19`, `"kept_dedup":20`} {
		if from == 1 && !strings.Contains(logs.String(), want) {
			t.Errorf("migration log lacks %s:\n%s", want, logs.String())
		}
	}
}

// A format number no gateway writes is a flipped byte, not a newer file:
// refusing it would keep the site down; it is quarantined and salvaged.
func TestImplausibleFormatIsDamageNotNewer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "q.db")
	q := openQueue(t, Config{Path: path, Consumers: []string{"a"}})
	appendN(t, q, 0, 5)
	q.Close()
	setFormat(t, path, 0x30000003, MsgsFormat)

	q, err := Open(Config{Path: path, Consumers: []string{"a"}}, zerolog.Nop())
	if err != nil {
		t.Fatalf("Open of a file with a damaged format number: %v", err)
	}
	defer q.Close()
	if c := q.Counters(); c.Quarantined != 1 || c.Salvaged != 5 {
		t.Fatalf("quarantined %d, salvaged %d; want 1 and 5", c.Quarantined, c.Salvaged)
	}
	r, _ := q.Reader("a")
	if got := readAll(t, r, 5); len(got) != 5 || string(got[4].Data) != "m4" {
		t.Fatalf("read %d records after salvage", len(got))
	}
}
