package buffer

import (
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"
	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// ErrReadOnly is returned by writes to a queue opened with OpenReadOnly.
var ErrReadOnly = errors.New("queue opened read-only")

// OpenReadOnly opens an existing queue file only to read its messages and
// dead letters (Scan, DeadLetters), for `queue export`. It deliberately
// skips the format version check of Open: after a rollback to an older
// binary the file may have a newer format, and an operator must still be
// able to get the messages out. What it reads must therefore be understood:
// it refuses a file whose msgs bucket layout ("format/msgs") is newer than
// MsgsFormat. It writes nothing (no migration, no cursor, no trim), takes a
// shared lock (so it fails with ErrLocked while a gateway runs) and starts
// no goroutine; every write method returns ErrReadOnly.
func OpenReadOnly(path string, lockTimeout time.Duration, log zerolog.Logger) (*Queue, error) {
	if lockTimeout <= 0 {
		lockTimeout = DefaultLockTimeout
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true, Timeout: lockTimeout})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("open queue %s: %w (is a gateway running?)", path, ErrLocked)
	}
	if err != nil {
		return nil, fmt.Errorf("open queue %s read-only: %w", path, err)
	}
	var format, msgs uint64
	q := &Queue{
		cfg:      Config{Path: path},
		log:      log,
		db:       db,
		readOnly: true,
		readers:  map[string]*Reader{},
		ops:      make(chan *op),
		done:     make(chan struct{}),
		damaged:  make(chan struct{}),
	}
	err = db.View(func(tx *bolt.Tx) error {
		var err error
		if format, msgs, err = fileFormat(tx); err != nil {
			return err
		}
		if err := q.readOnlyTimeline(tx); err != nil {
			// Receive times then come out as stored; the messages matter.
			log.Warn().Err(err).Msg("queue file's clock records unreadable: receive times are shown as stored")
			q.st.epochs = nil
		}
		return nil
	})
	if err == nil && msgs > MsgsFormat {
		err = fmt.Errorf("its message layout is version %d, this binary reads version %d: export it with the newer wittra-gateway", msgs, MsgsFormat)
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open queue %s read-only: %w", path, err)
	}
	if format > FormatVersion() {
		log.Warn().Uint64("format", format).Uints64("known", KnownFormats()).Msg("queue file has a newer format; reading its messages only")
	}
	return q, nil
}
