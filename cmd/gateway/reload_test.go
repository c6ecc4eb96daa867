package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"wittra-gateway/internal/testutil"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// systemctl reload (SIGHUP) re-reads the config: tokens, routes, the log
// level and broker users change live; a broken config is refused and the
// running one kept; what needs a restart is named.
func TestReloadOnSIGHUP(t *testing.T) {
	bin := testutil.BuildGateway(t)
	dir := t.TempDir()
	addrs := testutil.FreeAddrs(t, 2)
	webhook, broker := addrs[0], addrs[1]
	cfgPath, logPath := filepath.Join(dir, "config.yaml"), filepath.Join(dir, "gateway.log")
	write := func(token, level, maxBytes, users string) {
		t.Helper()
		cfg := `gateway: {id: reload-gw}
log: {level: ` + level + `}
webhook:
  listen: ` + webhook + `
  routes: [{path: /wittra, token: ` + token + `}]
buffer: {path: ` + yamlString(filepath.Join(dir, "q.db")) + `, max_bytes: ` + maxBytes + `}
admin: {listen: ""}
broker:
  listeners: [{type: tcp, address: ` + broker + `}]
  users: ` + users + `
sinks: [{name: local, type: broker}]
`
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	post := func(token string) int {
		t.Helper()
		req, _ := http.NewRequest("POST", "http://"+webhook+"/wittra", strings.NewReader(`{"deviceId":"D1"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("auth-token", token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	connect := func(user, password string) error {
		opts := paho.NewClientOptions().AddBroker("tcp://" + broker).SetClientID("reload-" + user).
			SetUsername(user).SetPassword(password).SetConnectTimeout(10 * time.Second).SetAutoReconnect(false)
		c := paho.NewClient(opts)
		tok := c.Connect()
		if !tok.WaitTimeout(15 * time.Second) {
			t.Fatal("connect did not finish")
		}
		if tok.Error() == nil {
			c.Disconnect(100)
		}
		return tok.Error()
	}
	// reloaded sends SIGHUP and waits for the n-th reload line in the log.
	reloaded := func(p *testutil.Process, n int, msg string) string {
		t.Helper()
		if err := p.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		var out []byte
		if !testutil.Poll(15*time.Second, func() bool {
			out, _ = os.ReadFile(logPath)
			return strings.Count(string(out), msg) >= n || p.Exited()
		}) {
			t.Fatalf("no %q line after SIGHUP:\n%s", msg, out)
		}
		if strings.Count(string(out), msg) < n {
			t.Fatalf("the gateway exited on SIGHUP: %v\n%s", p.Err, out)
		}
		return string(out)
	}

	write("old-token", "info", "64MiB", `[{username: alice, password: a-pass}]`)
	p := testutil.StartGateway(t, bin, cfgPath, logPath, webhook, broker)
	if got := post("old-token"); got != 200 {
		t.Fatalf("post with the first token: %d", got)
	}
	if err := connect("bob", "b-pass"); err == nil {
		t.Fatal("bob connected before he was configured")
	}

	write("new-token", "debug", "64MiB", `[{username: alice, password: a-pass}, {username: bob, password: b-pass}]`)
	out := reloaded(p, 1, `"message":"config reloaded"`)
	if got := post("new-token"); got != 200 {
		t.Fatalf("post with the reloaded token: %d", got)
	}
	if got := post("old-token"); got != 401 {
		t.Fatalf("post with the replaced token: %d, want 401", got)
	}
	if err := connect("bob", "b-pass"); err != nil {
		t.Fatalf("bob after the reload: %v", err)
	}
	if !strings.Contains(out, `"applied":["broker.users","broker.allow_anonymous","webhook.routes","log.level"]`) {
		t.Fatalf("reload line does not list what was applied:\n%s", out)
	}

	// A broken config changes nothing.
	if err := os.WriteFile(cfgPath, []byte("webhook: {listen: [oops\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	reloaded(p, 1, "reload refused")
	if got := post("new-token"); got != 200 {
		t.Fatalf("after a refused reload: %d, want the running config kept", got)
	}

	// What cannot change live is named, and the process keeps running.
	write("new-token", "debug", "32MiB", `[{username: alice, password: a-pass}, {username: bob, password: b-pass}]`)
	out = reloaded(p, 2, `"message":"config reloaded"`)
	if !strings.Contains(out, `"needs_restart":["buffer"]`) {
		t.Fatalf("a buffer change is not named as needing a restart:\n%s", out)
	}
	if p.Exited() {
		t.Fatal("the gateway exited")
	}
}
