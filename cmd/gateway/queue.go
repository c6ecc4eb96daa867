package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"wittra-gateway/bridge"
	"wittra-gateway/buffer"
)

// QueueCommand inspects the queue file offline. The file lock is only
// waited for briefly: a running gateway holds it, and the answer then is an
// error, not a hang.
type QueueCommand struct {
	Stdout, Stderr io.Writer
}

const queueUsage = `usage: wittra-gateway queue <stats|peek|export|purge|salvage> [-config PATH] [flags]

  stats            depth and oldest age per sink
  peek [-n N]      the next N messages (default 10) of -sink (default: the first sink)
  export [-dead]   every stored message (or dead letter) as JSON lines
  purge -yes       delete every stored message (they are NOT delivered)
  salvage -from F  copy every readable message of the damaged queue file F
                   (e.g. a quarantined queue.db.corrupt-<time>) into the queue
`

func (c *QueueCommand) Run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return usageError{fmt.Errorf("queue needs a subcommand\n%s", strings.TrimRight(queueUsage, "\n"))}
	}
	sub, args := args[0], args[1:]
	if sub == "help" || sub == "-h" || sub == "--help" {
		fmt.Fprint(c.Stdout, queueUsage)
		return nil
	}
	var path, sinkName string
	var n int
	var yes, dead bool
	var from string
	fs := newFlagSet("queue "+sub, c.Stderr, &path)
	switch sub {
	case "stats":
	case "export":
		fs.BoolVar(&dead, "dead", false, "export the dead letters (messages a sink refused) instead")
	case "peek":
		fs.IntVar(&n, "n", 10, "how many messages")
		fs.StringVar(&sinkName, "sink", "", "whose next messages (default: the first sink)")
	case "purge":
		fs.BoolVar(&yes, "yes", false, "really delete every stored message")
	case "salvage":
		fs.StringVar(&from, "from", "", "the damaged queue file to salvage")
	default:
		return usageError{fmt.Errorf("unknown queue subcommand %q\n%s", sub, queueUsage)}
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := LoadQueueConfig(path)
	if err != nil {
		return usageError{err}
	}
	if sub == "purge" && !yes {
		return usageError{errors.New("purge deletes undelivered messages: add -yes to confirm")}
	}
	if sub == "salvage" && from == "" {
		return usageError{errors.New("salvage needs -from FILE (the damaged queue file)")}
	}
	names := make([]string, len(cfg.Sinks))
	for i, s := range cfg.Sinks {
		names[i] = s.Name
	}
	bc := bufferConfig(cfg, names)
	bc.LockTimeout = time.Second
	out := bufio.NewWriter(c.Stdout)
	defer out.Flush()
	if sub == "export" {
		// Export only reads, through the read-only path that skips the
		// format version check: after a rollback an operator can still
		// get the messages out of a file a newer version wrote.
		q, err := buffer.OpenReadOnly(bc.Path, bc.LockTimeout, zerolog.New(c.Stderr))
		if err != nil {
			return err
		}
		defer q.Close()
		if dead {
			return deadExport(out, q)
		}
		return queueExport(out, q, 0, -1)
	}
	if sub == "salvage" {
		return queueSalvage(ctx, out, bc, from, zerolog.New(c.Stderr))
	}
	q, err := buffer.Open(bc, zerolog.Nop())
	if err != nil {
		return err
	}
	defer q.Close()
	switch sub {
	case "stats":
		return queueStats(out, q)
	case "peek":
		if sinkName == "" && len(names) > 0 {
			sinkName = names[0]
		}
		return queuePeek(out, q, sinkName, n)
	default:
		deleted, err := q.Purge(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "purged %d messages\n", deleted)
		return nil
	}
}

func queueStats(w io.Writer, q *buffer.Queue) error {
	st, err := q.Stats()
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "file         %s\nmessages     %d\nbytes        %d\ndead letters %d\n", q.Path(), st.Messages, st.Bytes, st.DeadLetters)
	fmt.Fprintf(w, "\n%-20s %10s %10s %10s %14s\n", "SINK", "DEPTH", "BACKLOG", "LIVE", "OLDEST AGE")
	for _, c := range st.Consumers {
		age := "-"
		if !c.Oldest.IsZero() {
			age = c.OldestAge.Round(time.Second).String()
		}
		fmt.Fprintf(w, "%-20s %10d %10d %10d %14s\n", c.Name, c.Depth, c.Backlog, c.Live, age)
	}
	return nil
}

func queuePeek(w io.Writer, q *buffer.Queue, sink string, n int) error {
	st, err := q.Stats()
	if err != nil {
		return err
	}
	for _, c := range st.Consumers {
		if c.Name == sink {
			return queueExport(w, q, c.Cursor+1, n)
		}
	}
	return usageError{fmt.Errorf("no sink named %q in the config", sink)}
}

// exported is one message as `queue export` prints it.
type exported struct {
	Sink     string          `json:"sink,omitempty"`   // dead letters only
	Reason   string          `json:"reason,omitempty"` // dead letters only
	Seq      uint64          `json:"seq"`
	Received time.Time       `json:"received"`
	Project  string          `json:"project"`
	Device   string          `json:"device"`
	Kind     string          `json:"kind"`
	Body     json.RawMessage `json:"body"`
}

// queueExport writes up to n messages (n < 0: all) from sequence from as JSON lines.
func queueExport(w io.Writer, q *buffer.Queue, from uint64, n int) error {
	enc := json.NewEncoder(w)
	var werr error
	err := q.Scan(from, func(rec buffer.Record) bool {
		if n == 0 {
			return false
		}
		n--
		m, err := bridge.DecodeRecord(rec)
		if err != nil {
			werr = err
			return false
		}
		werr = enc.Encode(exported{Seq: m.Seq, Received: m.Received.UTC(), Project: m.Project, Device: m.Device, Kind: m.Kind.String(), Body: m.Body})
		return werr == nil
	})
	return errors.Join(err, werr)
}

func deadExport(w io.Writer, q *buffer.Queue) error {
	enc := json.NewEncoder(w)
	var werr error
	err := q.DeadLetters(func(d buffer.DeadLetter) bool {
		m, err := bridge.DecodeRecord(d.Record)
		if err != nil {
			werr = err
			return false
		}
		werr = enc.Encode(exported{Sink: d.Consumer, Reason: d.Reason, Seq: m.Seq, Received: m.Received.UTC(), Project: m.Project, Device: m.Device, Kind: m.Kind.String(), Body: m.Body})
		return werr == nil
	})
	return errors.Join(err, werr)
}

// queueSalvage copies what can be read from a damaged queue file into the
// configured queue: as the queue itself when there is none yet (sequence
// numbers and cursors kept), else appended to it.
func queueSalvage(ctx context.Context, w io.Writer, bc buffer.Config, from string, log zerolog.Logger) error {
	if abs, _ := filepath.Abs(from); abs != "" {
		if qp, _ := filepath.Abs(bc.Path); abs == qp {
			return usageError{fmt.Errorf("-from %s is the queue file itself: salvage a copy or a quarantined file", from)}
		}
	}
	if _, err := os.Stat(from); err != nil {
		return usageError{fmt.Errorf("-from: %w", err)}
	}
	var rep buffer.SalvageReport
	var err error
	how := "appended to"
	if _, serr := os.Stat(bc.Path); errors.Is(serr, os.ErrNotExist) {
		how = "written as"
		if err := os.MkdirAll(filepath.Dir(bc.Path), 0o750); err != nil {
			return err
		}
		rep, err = buffer.Salvage(from, bc.Path, log)
	} else {
		var q *buffer.Queue
		if q, err = buffer.Open(bc, log); err != nil {
			return err
		}
		rep, err = q.Import(ctx, from)
		err = errors.Join(err, q.Close())
	}
	if err != nil {
		return err
	}
	lost := "unknown (the file's sequence or cursors were unreadable)"
	if rep.LostKnown {
		lost = strconv.FormatUint(rep.Lost, 10)
	}
	fmt.Fprintf(w, "salvaged %d messages from %s, %s %s\nlost           %s\ncursors        %v\ndedup keys     %d\ndead letters   %d\ndamaged pages  %d\n",
		rep.Salvaged, from, how, bc.Path, lost, rep.Cursors != nil, rep.DedupKeys, rep.DeadLetters, rep.DamagedPages)
	return nil
}
