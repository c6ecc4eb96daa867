package main

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"wittra-gateway/internal/testutil"
)

// TestDedupSurvivesKill9: every payloadId that got a 200 before a SIGKILL
// under load is refused as a duplicate after the restart (the dedup window
// is rebuilt from the committed records), and a new one is still taken.
func TestDedupSurvivesKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("subprocess crash test; skipped with -short")
	}
	h := crashNewHarness(t)
	g := h.crashStart()
	load := h.crashStartLoad(8)
	h.crashLoadFor(g, load, time.Second, 200)
	err := g.Cmd.Process.Kill()
	load.crashHalt()
	if err != nil {
		t.Fatalf("kill -9: %v", err)
	}
	g.WaitKilled(t, crashExitTimeout)
	acked := h.acked.Minus(new(testutil.IDSet))
	if len(acked) == 0 {
		t.Fatal("nothing was acknowledged before the kill")
	}
	g = h.crashStart()
	client := &http.Client{Timeout: 10 * time.Second}
	post := func(payloadID string) string {
		t.Helper()
		body := fmt.Sprintf(`{"deviceId":"DAGAIN","projectId":"crash","payloadId":%q,"payloadType":"DATA","source":"p","timestamp":%q,"payload":{"temperature":1}}`,
			payloadID, time.Now().UTC().Format("2006-01-02T15:04:05.000000+00:00"))
		resp, err := client.Post(h.webhookURL, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatalf("post %s: %v", payloadID, err)
		}
		defer resp.Body.Close()
		reply, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("post %s: %d %s", payloadID, resp.StatusCode, reply)
		}
		return strings.TrimSpace(string(reply))
	}
	for _, id := range acked {
		if got := post(id); got != `{"accepted":0,"duplicates":1}` {
			t.Fatalf("payloadId %s, acknowledged before the kill, posted again: %s, want a duplicate", id, got)
		}
	}
	if got := post("after-the-kill"); got != crashAckedBody {
		t.Fatalf("new payloadId after the restart: %s, want accepted", got)
	}
	t.Logf("%d acknowledged payloadIds refused again after kill -9 and restart", len(acked))
	h.crashStopClean(g)
}
