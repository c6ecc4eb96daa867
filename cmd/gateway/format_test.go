package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"wittra-gateway/buffer"
	"wittra-gateway/internal/testutil"
)

// TestNewerQueueFormatExitsOneButExports is a rollback as an operator
// meets it: the queue file was written by a newer gateway. `run` must
// refuse with exit 1 naming the versions, touching nothing; `queue export`
// must still print every message.
func TestNewerQueueFormatExitsOneButExports(t *testing.T) {
	bin := testutil.BuildGateway(t)
	dir := t.TempDir()
	tg := startTestGateway(t, dir, nil)
	if err := tg.stop(); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "config.yaml")
	queueBacklog(t, cfgPath, "n", 3)
	queuePath := filepath.Join(dir, "queue.db") // as startTestGateway configures it

	newer := buffer.FormatVersion() + 7
	db, err := bolt.Open(queuePath, 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("meta")).Put([]byte("format"), binary.BigEndian.AppendUint64(nil, newer))
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}

	var stderr bytes.Buffer
	cmd := exec.Command(bin, "run", "-config", cfgPath)
	cmd.Stderr = &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatal("gateway still running on a newer queue file after 30 s")
	}
	if code := cmd.ProcessState.ExitCode(); code != exitRuntime {
		t.Fatalf("exit code %d, want %d\n%s", code, exitRuntime, stderr.String())
	}
	for _, want := range []string{fmt.Sprintf("format version %d", newer), fmt.Sprintf("knows versions %v", buffer.KnownFormats()), "queue export"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr does not say %q:\n%s", want, stderr.String())
		}
	}
	if aside, _ := filepath.Glob(queuePath + ".corrupt-*"); len(aside) != 0 {
		t.Fatalf("the newer file was quarantined: %v", aside)
	}

	out, err := exec.Command(bin, "queue", "export", "-config", cfgPath).Output()
	if err != nil {
		t.Fatalf("queue export on a newer file: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 3 || !strings.Contains(lines[2], `"payloadId":"n2"`) {
		t.Fatalf("export printed:\n%s", out)
	}
}
