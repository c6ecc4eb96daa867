package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"wittra-gateway/bridge"
	"wittra-gateway/buffer"
	"wittra-gateway/internal/testutil"
)

// Damaged queue files under the real binary: the site must come back by
// itself, deliver what was salvaged and take new posts.

const damageMessages = 3000

type damageSite struct {
	t *testing.T
	*gatewayProc
	queuePath              string
	webhook, broker, admin string
}

// newDamageSite writes a config with an embedded-broker sink (retained,
// one device per message, so a late subscriber sees every publication) and,
// when withDeadSink, an MQTT sink whose broker never answers (its cursor
// holds a backlog).
func newDamageSite(t *testing.T, withDeadSink bool) *damageSite {
	addrs := testutil.FreeAddrs(t, 4)
	dead := ""
	if withDeadSink {
		dead = fmt.Sprintf("  - {name: upstream, type: mqtt, url: \"tcp://%s\", topic_prefix: wittra}\n", addrs[3])
	}
	s := &damageSite{t: t, webhook: addrs[0], broker: addrs[1], admin: addrs[2]}
	s.gatewayProc = newGatewayProc(t, "damage-gw", s.webhook, s.admin, "queue.db", fmt.Sprintf(`broker:
  enabled: true
  listeners: [{type: tcp, address: %s}]
  allow_anonymous: true
sinks:
  - {name: local, type: broker, topic_prefix: wittra, values: false, retain: true}
%s`, s.broker, dead))
	s.queuePath = filepath.Join(s.dir, "queue.db")
	return s
}

// fill queues damageMessages messages offline, through the real intake,
// with no sink running: payloadId s00000…, one device each.
func (s *damageSite) fill() {
	t := s.t
	cfg, err := LoadConfig(s.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{}
	for _, sc := range cfg.Sinks {
		names = append(names, sc.Name)
	}
	q, err := buffer.Open(bufferConfig(cfg, names), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(bridge.NewReceiver(receiverConfig(cfg), q, zerolog.Nop()))
	for i := 0; i < damageMessages; i += 500 {
		var items []string
		for j := i; j < i+500; j++ {
			items = append(items, fmt.Sprintf(`{"deviceId":"D%05d","payloadId":"s%05d","data":"%s"}`, j, j, strings.Repeat("v", 40)))
		}
		resp, err := http.Post(srv.URL+"/wittra", "application/json", strings.NewReader("["+strings.Join(items, ",")+"]"))
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("fill post %d: %v %v", i, err, resp)
		}
		resp.Body.Close()
	}
	srv.Close()
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
}

// pagesOfType lists pages whose header says branch (1) or leaf (2) and
// that carry their own id: pages of some bucket's tree, or older copies.
func pagesOfType(t *testing.T, path string, flags uint16) []int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for id := int64(2); (id+1)*4096 <= int64(len(b)); id++ {
		p := b[id*4096:]
		if int64(binary.LittleEndian.Uint64(p)) == id && binary.LittleEndian.Uint16(p[8:]) == flags {
			ids = append(ids, id)
		}
	}
	return ids
}

// dedupIndexPages lists leaf pages of the dedup window (queue format 3):
// 16-byte record keys, the ids as values.
func dedupIndexPages(t *testing.T, path string) []int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []int64
	for _, id := range pagesOfType(t, path, 2) {
		e := b[id*4096+16:] // first leaf element: flags, pos, ksize, vsize
		// The dedup window's records (queue format 3): a 16-byte key
		// (record sequence + time) and the ids as value.
		if binary.LittleEndian.Uint32(e[8:]) == 16 && binary.LittleEndian.Uint32(e[12:]) > 0 {
			out = append(out, id)
		}
	}
	return out
}

func smashPages(t *testing.T, path string, ids ...int64) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rng := rand.New(rand.NewPCG(uint64(len(ids)), 99))
	junk := make([]byte, 4096)
	for _, id := range ids {
		for i := range junk {
			junk[i] = byte(rng.Uint32())
		}
		if _, err := f.WriteAt(junk, id*4096); err != nil {
			t.Fatal(err)
		}
	}
}

// startReady starts the gateway and wants /readyz within 15 s of the start.
func (s *damageSite) startReady() *testutil.Process {
	t := s.t
	began := time.Now()
	g := s.start(t, s.webhook, s.broker, s.admin)
	for {
		if code, _ := httpGet(t, "http://"+s.admin+"/readyz"); code == 200 {
			break
		}
		if g.Exited() || time.Since(began) > 15*time.Second {
			t.Fatalf("not ready 15 s after the start (exited %v: %v)", g.Exited(), g.Err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("ready %v after the start", time.Since(began).Round(time.Millisecond))
	return g
}

func (s *damageSite) metric(name string) float64 {
	_, text := httpGet(s.t, "http://"+s.admin+"/metrics")
	return metricValue(text, name)
}

func (s *damageSite) post(id string) int {
	resp, err := http.Post("http://"+s.webhook+"/wittra", "application/json", strings.NewReader(fmt.Sprintf(`{"deviceId":"N-%s","payloadId":"%s"}`, id, id)))
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// received subscribes to the embedded broker and collects payloadIds
// (retained: every publication since the start) until want are in.
func (s *damageSite) received(want int) map[string]bool {
	sub := testutil.Subscribe(s.t, "tcp://"+s.broker, "wittra/+/+/data", 0, testutil.SubscriberOptions{})
	ids := func() map[string]bool {
		got := map[string]bool{}
		for _, m := range sub.Messages() {
			var body struct {
				PayloadID string `json:"payloadId"`
			}
			if json.Unmarshal([]byte(m.Payload), &body) == nil {
				got[body.PayloadID] = true
			}
		}
		return got
	}
	testutil.Poll(30*time.Second, func() bool { return len(ids()) >= want }) // the caller counts
	time.Sleep(200 * time.Millisecond)                                       // anything beyond want would show now
	return ids()
}

func TestDamagedQueueFileAtStart(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, path string)
		exact  bool // nothing is lost: salvaged == every message
		// dedupLost: the damage destroys the dedup window itself (format
		// 3 keeps one copy of it): salvaged payloadIds are new again
		// (a duplicate delivery at worst, never a lost message).
		dedupLost bool
	}{
		{"both meta pages", func(t *testing.T, path string) { smashPages(t, path, 0, 1) }, true, false},
		{"every branch page", func(t *testing.T, path string) {
			ids := pagesOfType(t, path, 1)
			if len(ids) == 0 {
				t.Fatal("no branch page")
			}
			smashPages(t, path, ids...)
		}, true, false},
		{"dedup index pages", func(t *testing.T, path string) {
			ids := dedupIndexPages(t, path)
			if len(ids) == 0 {
				t.Fatal("no dedup index page")
			}
			smashPages(t, path, ids...)
		}, true, true},
		{"three leaf pages in the middle", func(t *testing.T, path string) {
			ids := pagesOfType(t, path, 2)
			var mid []int64
			for _, id := range ids {
				if id > ids[len(ids)/4] && id < ids[len(ids)*3/4] {
					mid = append(mid, id)
				}
			}
			rng := rand.New(rand.NewPCG(3, 3))
			var pick []int64
			for _, i := range rng.Perm(len(mid))[:3] {
				pick = append(pick, mid[i])
			}
			smashPages(t, path, pick...)
		}, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newDamageSite(t, false)
			s.fill()
			tc.damage(t, s.queuePath)
			g := s.startReady()
			quarantined := s.metric("wittra_gateway_queue_quarantined_total")
			salvaged := int(s.metric("wittra_gateway_queue_salvaged_messages_total"))
			lost := int(s.metric("wittra_gateway_queue_salvage_lost_messages_total"))
			t.Logf("quarantined %v, salvaged %d, lost %d", quarantined, salvaged, lost)
			if quarantined != 1 && tc.exact {
				t.Fatalf("quarantined %v, want 1", quarantined)
			}
			if quarantined == 1 {
				if salvaged+lost != damageMessages || (tc.exact && lost != 0) || lost > 3*4096/64 {
					t.Fatalf("salvaged %d + lost %d, want %d (exact %v)", salvaged, lost, damageMessages, tc.exact)
				}
			} else {
				salvaged = damageMessages // the smashed pages were not in use
			}
			if code := s.post("fresh-1"); code != 200 {
				t.Fatalf("new post: %d", code)
			}
			if tc.exact && !tc.dedupLost {
				// The dedup window survived: an old payloadId is a duplicate.
				resp, err := http.Post("http://"+s.webhook+"/wittra", "application/json", strings.NewReader(`{"deviceId":"D00007","payloadId":"s00007"}`))
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if !strings.Contains(string(body), `"duplicates":1`) {
					t.Fatalf("repost of a salvaged payloadId: %d %s, want a duplicate", resp.StatusCode, body)
				}
			}
			got := s.received(salvaged + 1)
			if len(got) != salvaged+1 || !got["fresh-1"] {
				t.Fatalf("subscriber received %d distinct messages (fresh one: %v), want %d salvaged + 1", len(got), got["fresh-1"], salvaged)
			}
			for id := range got {
				if id != "fresh-1" && !(len(id) == 6 && id[0] == 's') {
					t.Fatalf("received unknown payloadId %q", id)
				}
			}
			if aside, _ := filepath.Glob(s.queuePath + ".corrupt-*"); quarantined == 1 && len(aside) != 1 {
				t.Fatalf("quarantined files: %v", aside)
			}
			if g.Exited() {
				t.Fatalf("gateway exited: %v", g.Err)
			}
		})
	}
}

// TestDamagedQueueFileUnderALiveGateway overwrites the branch pages while
// the gateway runs with a backlog: it stops intake, exits with status 3
// after marking the file, and one restart (what systemd does) brings it
// back with every message salvaged. No restart loop.
func TestDamagedQueueFileUnderALiveGateway(t *testing.T) {
	s := newDamageSite(t, true)
	s.fill()
	g := s.startReady()
	if code := s.post("before"); code != 200 {
		t.Fatalf("post before damage: %d", code)
	}
	ids := pagesOfType(t, s.queuePath, 1)
	if len(ids) == 0 {
		t.Fatal("no branch page")
	}
	smashPages(t, s.queuePath, ids...)
	// The next commit walks the smashed msgs branch page.
	code := s.post("during")
	if code == 200 {
		t.Fatalf("post onto a smashed file answered 200")
	}
	if !g.WaitExit(20 * time.Second) {
		t.Fatal("gateway still running 20 s after the damage was found")
	}
	if c := g.Cmd.ProcessState.ExitCode(); c != exitQueueDamaged {
		t.Fatalf("exit status %d, want %d", c, exitQueueDamaged)
	}
	if _, err := os.Stat(s.queuePath + ".damaged"); err != nil {
		t.Fatalf("file not marked: %v", err)
	}
	t.Logf("post during damage: %d; exited %d", code, exitQueueDamaged)

	g = s.startReady()
	salvaged := s.metric("wittra_gateway_queue_salvaged_messages_total")
	if q := s.metric("wittra_gateway_queue_quarantined_total"); q != 1 || salvaged != damageMessages+1 {
		t.Fatalf("after restart: quarantined %v, salvaged %v, want 1 and %d", q, salvaged, damageMessages+1)
	}
	if code := s.post("after"); code != 200 {
		t.Fatalf("post after restart: %d", code)
	}
	// The upstream sink still holds every message: nothing was lost.
	if d := s.metric(`wittra_gateway_queue_depth_messages{sink="upstream"}`); d != damageMessages+2 {
		t.Fatalf("upstream depth %v, want %d", d, damageMessages+2)
	}
	time.Sleep(3 * time.Second)
	if g.Exited() {
		t.Fatalf("gateway exited again after the salvage: %v", g.Err)
	}
}

// TestQueueSalvageCommand salvages a damaged file offline, as an operator
// would with a quarantined queue.db.corrupt-<time>: into an empty queue
// (sequence numbers and cursors kept), then appended to a queue that has
// messages of its own.
func TestQueueSalvageCommand(t *testing.T) {
	s := newDamageSite(t, false)
	s.fill()
	damaged := filepath.Join(s.dir, "queue.db.corrupt-test")
	if err := os.Rename(s.queuePath, damaged); err != nil {
		t.Fatal(err)
	}
	ids := pagesOfType(t, damaged, 1)
	smashPages(t, damaged, append(ids, 0, 1)...) // branch pages and both metas
	run := func(args ...string) (string, error) {
		var out strings.Builder
		err := (&QueueCommand{Stdout: &out, Stderr: io.Discard}).Run(context.Background(), append(args, "-config", s.cfgPath))
		return out.String(), err
	}
	if _, err := run("salvage"); exitCode(err) != exitUsage {
		t.Fatalf("salvage without -from: %v", err)
	}
	if _, err := run("salvage", "-from", s.queuePath); exitCode(err) != exitUsage {
		t.Fatalf("salvage from the queue file itself: %v", err)
	}
	out, err := run("salvage", "-from", damaged)
	if err != nil || !strings.Contains(out, fmt.Sprintf("salvaged %d messages", damageMessages)) || !strings.Contains(out, "written as") {
		t.Fatalf("salvage into no queue: %v\n%s", err, out)
	}
	out, err = run("stats")
	if err != nil || !strings.Contains(out, fmt.Sprintf("messages     %d", damageMessages)) {
		t.Fatalf("stats after salvage: %v\n%s", err, out)
	}
	// Again, into the queue that now exists: appended after what it has.
	out, err = run("salvage", "-from", damaged)
	if err != nil || !strings.Contains(out, "appended to") {
		t.Fatalf("salvage into an existing queue: %v\n%s", err, out)
	}
	out, err = run("export")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2*damageMessages || !strings.Contains(lines[damageMessages], `"payloadId":"s00000"`) {
		t.Fatalf("export after two salvages: %d lines, line %d: %.120s", len(lines), damageMessages, lines[min(damageMessages, len(lines)-1)])
	}
}
