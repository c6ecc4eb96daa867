// Command noop is the benchmark's HTTP ceiling: a net/http server whose
// webhook handler reads the body and answers 200 with the gateway's reply
// for one new message, storing and checking nothing. The intake scenario
// measures it with the same load generator in the same run, so the
// gateway's intake can be judged as a fraction of what the HTTP stack
// alone answers on this machine at this moment.
//
//	noop -webhook 127.0.0.1:18081 -admin 127.0.0.1:19311
//
// The other harness flags (-queue, -broker, -values, -retain) are accepted
// and ignored, so the runner starts it like bench/baseline. It serves
// until SIGINT/SIGTERM (or -max-run).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

var reply = []byte(`{"accepted":1,"duplicates":0}` + "\n")

func main() {
	fs := flag.NewFlagSet("noop", flag.ExitOnError)
	webhook := fs.String("webhook", "127.0.0.1:0", "webhook listen address")
	admin := fs.String("admin", "", "admin listen address (/readyz)")
	fs.String("queue", "", "ignored")
	fs.String("broker", "", "ignored")
	fs.Bool("values", true, "ignored")
	fs.Bool("retain", true, "ignored")
	maxRun := fs.Duration("max-run", 30*time.Minute, "stop after this long even without a signal")
	fs.Parse(os.Args[1:])

	hook := &http.Server{Addr: *webhook, ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
