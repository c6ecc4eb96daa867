// Command noop is the benchmark's HTTP ceiling: a net/http server whose
// webhook handler reads the body and answers 200 with the gateway's reply
// for one new message, storing and checking nothing. The intake scenario
// measures it with the same load generator in the same run, so the
// gateway's intake can be judged as a fraction of what the HTTP stack
// alone answers on this machine at this moment.
//
//	noop -webhook 127.0.0.1:18081 -admin 127.0.0.1:19311
//
// With -bolt it is the bare storage reference instead: each request's body
// is appended to a bbolt file at -queue (sequential keys, one bucket) and
// answered after the commit that holds it, one commit (two fdatasyncs)
// shared by all requests waiting when it starts (group commit). No dedup,
// no forwarder, no validation: what the gateway's storage dependency alone
// answers here.
//
// The other harness flags (-broker, -values, -retain) are accepted and
// ignored, so the runner starts it like bench/baseline. It serves until
// SIGINT/SIGTERM (or -max-run).
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	bolt "go.etcd.io/bbolt"
)

var reply = []byte(`{"accepted":1,"duplicates":0}` + "\n")

func main() {
	fs := flag.NewFlagSet("noop", flag.ExitOnError)
	webhook := fs.String("webhook", "127.0.0.1:0", "webhook listen address")
	admin := fs.String("admin", "", "admin listen address (/readyz)")
	queue := fs.String("queue", "", "bbolt file (with -bolt)")
	bare := fs.Bool("bolt", false, "store each body in -queue with group commit before answering")
	fs.String("broker", "", "ignored")
	fs.Bool("values", true, "ignored")
	fs.Bool("retain", true, "ignored")
	maxRun := fs.Duration("max-run", 30*time.Minute, "stop after this long even without a signal")
	fs.Parse(os.Args[1:])

	store := func(*http.Request) error { return nil }
	if *bare {
		gc, err := openGroupCommit(*queue)
		if err != nil {
			fmt.Fprintln(os.Stderr, "noop:", err)
			os.Exit(1)
		}
		defer gc.db.Close()
		go gc.run()
		store = gc.store
	}
	hook := &http.Server{Addr: *webhook, ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := store(r); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		w.Write(reply)
	})}
	servers := []*http.Server{hook}
	if *admin != "" {
		servers = append(servers, &http.Server{Addr: *admin, ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusOK)
		})})
	}
	errc := make(chan error, len(servers))
	for _, s := range servers {
		go func() {
			if err := s.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
				errc <- err
			}
		}()
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case err := <-errc:
		fmt.Fprintln(os.Stderr, "noop:", err)
		os.Exit(1)
	case <-sig:
	case <-time.After(*maxRun):
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range servers {
		s.Shutdown(ctx)
	}
}

// groupCommit appends bodies to one bbolt bucket; a request waits for the
// commit that holds it. The options are the gateway queue's.
type groupCommit struct {
	db   *bolt.DB
	reqs chan stored
}

type stored struct {
	body []byte
	done chan error
}

var bucket = []byte("q")

func openGroupCommit(path string) (*groupCommit, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucketIfNotExists(bucket); return err }); err != nil {
		db.Close()
		return nil, err
	}
	return &groupCommit{db: db, reqs: make(chan stored, 1024)}, nil
}

func (g *groupCommit) store(r *http.Request) error {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	g.reqs <- stored{body, done}
	return <-done
}

// run commits whatever has arrived by the time the previous commit ended.
func (g *groupCommit) run() {
	var batch []stored
	for first := range g.reqs {
		batch = append(batch[:0], first)
	more:
		for {
			select {
			case s := <-g.reqs:
				batch = append(batch, s)
			default:
				break more
			}
		}
		err := g.db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucket)
			for _, s := range batch {
				seq, _ := b.NextSequence()
				if err := b.Put(binary.BigEndian.AppendUint64(nil, seq), s.body); err != nil {
					return err
				}
			}
			return nil
		})
		for _, s := range batch {
			s.done <- err
		}
	}
}
