package certreload

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"wittra-gateway/internal/testpki"
	"wittra-gateway/internal/testutil"
)

// loadFirst writes a client certificate of a new CA to dir and loads it:
// the CA (for renewals), the certificate, its two files and the Reloader.
func loadFirst(t *testing.T, dir string) (*testpki.CA, testpki.Leaf, string, string, *Reloader) {
	ca := testpki.NewCA(t, "ca")
	first := ca.Client(t, "gw01", time.Now().Add(-time.Hour), time.Now().Add(48*time.Hour))
	certFile, keyFile := first.Write(t, dir, "dev")
	r, err := New(certFile, keyFile, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return ca, first, certFile, keyFile, r
}

func TestReloadOnChangeKeepsOldOnBrokenRenewal(t *testing.T) {
	ca, first, certFile, keyFile, r := loadFirst(t, t.TempDir())
	if got := r.Leaf().SerialNumber; got.Cmp(first.Cert.SerialNumber) != 0 {
		t.Fatalf("leaf serial %v, want %v", got, first.Cert.SerialNumber)
	}

	// A certificate without its key does not load: the old one stays.
	second := ca.Client(t, "gw01", time.Now().Add(-time.Hour), time.Now().Add(96*time.Hour))
	testpki.WriteFile(t, certFile, second.CertPEM)
	time.Sleep(CheckInterval + 100*time.Millisecond)
	if c, _ := r.GetClientCertificate(nil); c.Leaf.SerialNumber.Cmp(first.Cert.SerialNumber) != 0 {
		t.Fatal("a half-written renewal replaced the working certificate")
	}

	// Once the key follows, the new pair is served.
	testpki.WriteFile(t, keyFile, second.KeyPEM)
	testutil.WaitFor(t, 10*time.Second, "renewed certificate picked up", func() bool {
		c, _ := r.GetCertificate(nil)
		return c.Leaf.SerialNumber.Cmp(second.Cert.SerialNumber) == 0
	})
	if !r.Leaf().NotAfter.Equal(second.Cert.NotAfter) {
		t.Fatal("Leaf does not describe the reloaded certificate")
	}
}

func TestNewRefusesUnusablePair(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "ca")
	a := ca.Client(t, "a", time.Now(), time.Now().Add(time.Hour))
	b := ca.Client(t, "b", time.Now(), time.Now().Add(time.Hour))
	certFile, _ := a.Write(t, dir, "a")
	_, keyFile := b.Write(t, dir, "b")
	if _, err := New(certFile, keyFile, zerolog.Nop()); err == nil {
		t.Fatal("mismatched certificate and key accepted")
	}
	if _, err := New(dir+"/missing.crt", keyFile, zerolog.Nop()); err == nil {
		t.Fatal("missing file accepted")
	}
}

// A renewal whose file is slow to read (here a FIFO nobody writes yet)
// must not hold up handshakes: they get the current certificate meanwhile.
func TestSlowReloadDoesNotBlockHandshakes(t *testing.T) {
	dir := t.TempDir()
	ca, first, certFile, keyFile, r := loadFirst(t, dir)
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	r.now = func() time.Time { return time.Unix(0, clock.Load()) }

	second := ca.Client(t, "gw01", time.Now().Add(-time.Hour), time.Now().Add(96*time.Hour))
	fifo := filepath.Join(dir, "renewed.pem")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("no FIFOs here: %v", err)
	}
	if err := os.Rename(fifo, certFile); err != nil {
		t.Fatal(err)
	}
	clock.Add(int64(2 * CheckInterval))
	reading := make(chan *tls.Certificate, 1)
	go func() { reading <- r.Current() }() // blocks opening the FIFO
	// Wait until that call is the one checking.
	testutil.WaitFor(t, 30*time.Second, "the reload started", r.checking.Load)
	clock.Add(int64(2 * CheckInterval))
	served := make(chan *tls.Certificate, 1)
	go func() { c, _ := r.GetCertificate(nil); served <- c }()
	select {
	case c := <-served:
		if c.Leaf.SerialNumber.Cmp(first.Cert.SerialNumber) != 0 {
			t.Fatal("a handshake during the reload got another certificate than the current one")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a handshake waited for the slow reload")
	}
	// Let the reload finish: the renewed certificate arrives through the FIFO.
	if err := os.WriteFile(keyFile, second.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	w, err := os.OpenFile(certFile, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(second.CertPEM)
	w.Close()
	if c := <-reading; c.Leaf.SerialNumber.Cmp(second.Cert.SerialNumber) != 0 {
		t.Fatal("the slow reload did not install the renewed certificate")
	}
}
