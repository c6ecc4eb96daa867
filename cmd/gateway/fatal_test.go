package main

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// Many components failing at once must not block any of them: a blocked
// sender (a forwarder) would make the shutdown wait forever on it.
func TestFatalErrorsNeverBlockTheirSenders(t *testing.T) {
	g := &gateway{log: zerolog.Nop(), fatal: make(chan error, 1)}
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.fail(fmt.Errorf("component %d", i))
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("senders of fatal errors are blocked")
	}
	select {
	case err := <-g.fatal:
		if err == nil || errors.Unwrap(err) != nil {
			t.Fatalf("first fatal error = %v", err)
		}
	default:
		t.Fatal("no fatal error was delivered to the run loop")
	}
}
