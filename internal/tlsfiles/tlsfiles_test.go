package tlsfiles

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"wittra-gateway/internal/testpki"
)

func TestClient(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, "ca")
	leaf := ca.Client(t, "gw01", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	certFile, keyFile := leaf.Write(t, dir, "gw")
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	tc, err := Config{CAFile: caFile, CertFile: certFile, KeyFile: keyFile}.Client()
	if err != nil {
		t.Fatal(err)
	}
	if tc.RootCAs == nil || len(tc.Certificates) != 1 || tc.MinVersion == 0 {
		t.Fatalf("config %+v: want the CA pool, one client certificate and a minimum version", tc)
	}
	if tc, err = (Config{CAFile: caFile, CertFile: certFile, KeyFile: keyFile}).ClientWithoutCert(); err != nil || len(tc.Certificates) != 0 {
		t.Fatalf("without cert: %v, %d certificates", err, len(tc.Certificates))
	}
	for name, c := range map[string]struct {
		cfg  Config
		want string
	}{
		"missing CA":       {Config{CAFile: filepath.Join(dir, "nope.pem")}, "read tls ca_file"},
		"cert without key": {Config{CertFile: certFile}, "must be given together"},
	} {
		if _, err := c.cfg.Client(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", name, err, c.want)
		}
	}
	notPEM := filepath.Join(dir, "junk")
	os.WriteFile(notPEM, []byte("junk"), 0o600)
	if _, err := (Config{CAFile: notPEM}).Client(); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("junk CA file: err = %v", err)
	}
}
