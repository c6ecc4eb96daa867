package mqttclient

import (
	"syscall"
	"testing"
	"time"

	"wittra-gateway/internal/testutil"
)

// LinkState feeds the status page: down with the reason and since when,
// then up since the reconnection.
func TestLinkState(t *testing.T) {
	m := testutil.NewMosquitto(t, testutil.MosquittoOptions{})
	before := time.Now()
	s, _ := newSink(t, Config{URL: m.URL()}) // nothing listens yet
	waitLink := func(what string, ok func() bool) {
		t.Helper()
		if !testutil.Poll(waitLong, ok) {
			t.Fatalf("%s: state %+v", what, s.LinkState())
		}
	}
	waitLink("connection refused reported", func() bool { return s.LinkState().LastError != "" })
	if ls := s.LinkState(); ls.Connected || ls.Since.Before(before) {
		t.Fatalf("while the broker is down: %+v", ls)
	}
	m.Start()
	waitConnected(t, s)
	up := s.LinkState()
	if !up.Connected || up.LastError != "" || up.Since.Before(before) {
		t.Fatalf("connected: %+v", up)
	}
	m.Stop(syscall.SIGTERM)
	waitLink("loss noticed", func() bool { return !s.LinkState().Connected })
	waitLink("loss time recorded", func() bool { return s.LinkState().Since.After(up.Since) })
}
