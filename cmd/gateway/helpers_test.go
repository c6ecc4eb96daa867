package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"wittra-gateway/internal/testutil"
)

// Helpers of package main's tests; the generic harness (gateway
// subprocess, mosquitto, subscribers, ports, id sets) is internal/testutil.

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.RemoveBuilds()
	os.Exit(code)
}

// yamlString quotes s as a YAML double-quoted scalar.
func yamlString(s string) string {
	b, _ := json.Marshal(s) // JSON strings are valid YAML double-quoted scalars
	return string(b)
}

// metricValue reads one sample (name with its labels, as exposed) from
// Prometheus text; -1 when absent.
func metricValue(text, name string) float64 {
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`)
	m := re.FindStringSubmatch(text)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return -1
	}
	return v
}

// testTiming is what in-process gateways of these tests run with: delivery
// attempts end after 300 ms, so a forwarder waiting for a down sink rechecks
// what the queue deleted within the tests' time (the product waits 10 s per
// attempt); a project first seen in a webhook is asked about after 100 ms;
// the status page polls and samples every second (5 s and 10 s in the
// product), so the status tests see both move quickly.
var testTiming = timing{forwarderAttempt: 300 * time.Millisecond, wittraNewProjectPoll: 100 * time.Millisecond,
	statusRefresh: time.Second, statusSampleEvery: time.Second}

// inProc is a gateway run in this process by RunCommand, as `run` would.
type inProc struct {
	g    *gateway
	log  *testutil.LogBuffer // what it logged
	stop func() error        // cancels the run and returns its error; idempotent
}

// runInProc runs the gateway on the config file at path with timing tm; it
// stops at cleanup, and its log is shown if the test failed.
func runInProc(t *testing.T, path string, tm timing) *inProc {
	t.Helper()
	p := &inProc{log: new(testutil.LogBuffer)}
	ready := make(chan *gateway, 1)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- (&RunCommand{Stderr: p.log, ready: func(g *gateway) { ready <- g }, timing: tm}).Run(ctx, []string{"-config", path})
	}()
	var once sync.Once
	var stopErr error
	p.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case stopErr = <-done:
			case <-time.After(2 * exitTimeout):
				stopErr = errors.New("gateway did not stop")
			}
		})
		return stopErr
	}
	t.Cleanup(func() {
		if err := p.stop(); err != nil {
			t.Logf("gateway stop: %v", err)
		}
		if t.Failed() {
			t.Logf("gateway log:\n%s", testutil.Tail(p.log.String(), 24<<10))
		}
	})
	select {
	case p.g = <-ready:
	case err := <-done:
		done <- err // for stop
		cfg, _ := os.ReadFile(path)
		t.Fatalf("gateway did not start: %v\nconfig:\n%s\nlog:\n%s", err, cfg, p.log.String())
	case <-time.After(startTimeout):
		t.Fatalf("gateway not ready after %v", startTimeout)
	}
	return p
}

const (
	startTimeout = 30 * time.Second // generous: the machine may be loaded
	exitTimeout  = 10 * time.Second // a stop must take no longer (docs/contract.md#operations)
)

// gatewayConfig is a gateway config: id, the webhook and admin listening on
// the given addresses (admin "" is off), buffer's flow-mapping items, then
// rest (broker and sinks).
func gatewayConfig(id, webhook, admin, buffer, rest string) string {
	return fmt.Sprintf("gateway: {id: %s}\nlog: {level: info}\nwebhook: {listen: %s}\nbuffer: {%s}\nadmin: {listen: %s}\n%s",
		id, yamlString(webhook), buffer, yamlString(admin), rest)
}

// gatewayProc is the gateway binary with a checked config in a fresh
// directory; its log is shown when the test fails.
type gatewayProc struct{ bin, dir, cfgPath, logPath string }

// newGatewayProc writes gatewayConfig with the queue at queue (relative to
// the directory) and checks it with the binary's check-config.
func newGatewayProc(t *testing.T, id, webhook, admin, queue, rest string) *gatewayProc {
	t.Helper()
	p := &gatewayProc{bin: testutil.BuildGateway(t), dir: t.TempDir()}
	p.cfgPath, p.logPath = filepath.Join(p.dir, "config.yaml"), filepath.Join(p.dir, "gateway.log")
	cfg := gatewayConfig(id, webhook, admin, "path: "+yamlString(filepath.Join(p.dir, queue)), rest)
	if err := os.WriteFile(p.cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	testutil.CheckConfig(t, p.bin, p.cfgPath)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("gateway log:\n%s", testutil.FileTail(p.logPath, 24<<10))
		}
	})
	return p
}

// start runs the binary and waits until addrs answer.
func (p *gatewayProc) start(t *testing.T, addrs ...string) *testutil.Process {
	return testutil.StartGateway(t, p.bin, p.cfgPath, p.logPath, addrs...)
}
