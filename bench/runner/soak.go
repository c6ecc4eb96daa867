package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"wittra-gateway/internal/freeport"
	"wittra-gateway/internal/wmsg"
)

// The soak scenario: the real gateway for a bounded, long-ish run under
// everything a site box meets — steady intake over a rotating device
// population, an external mosquitto that goes away and comes back, an
// ordinary subscriber coming and going on the embedded broker, resent
// payloadIds, queue-full episodes and one SIGKILL — sampled every few
// seconds, failing when a resource trends upward after warm-up or an
// acknowledged message never arrives. See bench/README.md "soak".

// soakPlan is the soak's timing and sizes, all derived from the duration
// so that a 45 s CI run still sees one of every event.
type soakPlan struct {
	dur         time.Duration // intake runs this long
	rate        float64       // messages/s offered
	batch       int           // messages per request
	workers     int
	population  int           // devices active at any time
	shift       int           // devices retired (and new ones added) per round of population messages
	period      time.Duration // mosquitto stop/start period
	down        time.Duration // mosquitto down per period
	subOn       time.Duration // embedded subscriber connected
	subOff      time.Duration // and away
	killAt      time.Duration // the SIGKILL
	warmup      time.Duration // samples before this are not judged
	sampleEvery time.Duration
	dedupWindow time.Duration
	maxBytes    int64
	resendEvery int // one request in this many resends an acknowledged batch
	minJudged   time.Duration
}

func newSoakPlan(d time.Duration, rate float64) soakPlan {
	clamp := func(v, lo, hi time.Duration) time.Duration { return max(lo, min(hi, v)) }
	p := soakPlan{dur: d, rate: rate, batch: 5, workers: 16, population: 100_000, shift: 10_000, resendEvery: 20,
		minJudged: 60 * time.Second}
	p.period = clamp(d/4, 15*time.Second, time.Minute)
	p.down = p.period / 4
	p.subOn = clamp(d/8, 5*time.Second, 40*time.Second)
	p.subOff = p.subOn / 2
	p.sampleEvery = clamp(d/150, time.Second, 5*time.Second)
	// Short enough that the dedup index reaches its steady size (window ×
	// intake) early in the run; the gateway's default (24h) would make it
	// grow for the whole run by design.
	p.dedupWindow = clamp(d/10, 10*time.Second, time.Minute)
	p.killAt = clamp(d/10, 5*time.Second, 90*time.Second)
	// Judged from the later of: the restart plus a dedup window and a sweep
	// (30 s), or 40% of the run.
	p.warmup = max(p.killAt+p.dedupWindow+40*time.Second, d*2/5)
	if p.warmup > d*3/4 {
		p.warmup = d * 3 / 4
	}
	// A fifth of an outage's intake (records ~330 B): each mosquitto outage
	// fills it early, even when a loaded machine takes a third of the rate,
	// and ends in a queue-full episode (503 + Retry-After).
	p.maxBytes = max(256<<10, int64(rate*330*p.down.Seconds()/5))
	return p
}

// ackLog records, per sequence, when the attempt that got a 200 started
// and when its reply came (ms since the run's start, +1 so 0 = never).
type ackLog struct {
	start0 time.Time
	sent   []atomic.Uint32
	acked  []atomic.Uint32
}

func newAckLog(n uint64, t0 time.Time) *ackLog {
	return &ackLog{start0: t0, sent: make([]atomic.Uint32, n), acked: make([]atomic.Uint32, n)}
}

func (a *ackLog) ms(t time.Time) uint32 { return uint32(t.Sub(a.start0).Milliseconds()) + 1 }

func (a *ackLog) size() uint64 { return uint64(len(a.acked)) }

// seenSet counts receipts per sequence (saturating at 255).
type seenSet struct{ n []atomic.Uint32 }

func newSeenSet(n uint64) *seenSet { return &seenSet{n: make([]atomic.Uint32, n)} }

// mark returns true on the first receipt.
func (s *seenSet) mark(seq uint64) (first, ok bool) {
	if seq >= uint64(len(s.n)) {
		return false, false
	}
	return s.n[seq].Add(1) == 1, true
}

// soakLoad is the webhook sender: paced batches of consecutive sequences,
// each retried until answered 200 (a real sender retries 503s), and now and
// then a resend of a batch already acknowledged (a dedup hit).
type soakLoad struct {
	plan   soakPlan
	url    string
	run    string
	acks   *ackLog
	client *http.Client

	next                        atomic.Uint64
	requests, retries, behind   atomic.Uint64
	accepted, dupReplies        atomic.Uint64
	resends, resendDups, reNew  atomic.Uint64
	code200, code503, codeOther atomic.Uint64
	transportErr                atomic.Uint64
	recentMu                    sync.Mutex
	recent                      []resendable
	recentAt                    int
}

type resendable struct {
	first uint64
	at    time.Time
}

func (l *soakLoad) spec(first uint64) *wmsg.Spec {
	round := int(first / uint64(l.plan.population))
	return &wmsg.Spec{Run: l.run, Project: "soak", Devices: l.plan.population, DeviceBase: round * l.plan.shift}
}

// run sends until ctx ends.
func (l *soakLoad) runLoad(ctx context.Context) {
	tokens := make(chan struct{}, l.plan.workers)
	go func() {
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		start := time.Now()
		var issued uint64
		for {
			select {
			case <-ctx.Done():
				close(tokens)
				return
			case now := <-t.C:
				due := uint64(now.Sub(start).Seconds() * l.plan.rate / float64(l.plan.batch))
				for ; issued < due; issued++ {
					select {
					case tokens <- struct{}{}:
					default:
						l.behind.Add(1)
					}
				}
			}
		}
	}()
	var wg sync.WaitGroup
	for w := 0; w < l.plan.workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			for range tokens {
				n++
				if n%l.plan.resendEvery == 0 {
					if r, ok := l.pickResend(); ok {
						l.resend(ctx, r)
						continue
					}
				}
				first := l.next.Add(uint64(l.plan.batch)) - uint64(l.plan.batch)
				if first+uint64(l.plan.batch) > l.acks.size() {
					return
				}
				l.sendUntilAcked(ctx, first)
			}
		}()
	}
	wg.Wait()
}

// sendUntilAcked posts the batch starting at first until a 200 or the end.
func (l *soakLoad) sendUntilAcked(ctx context.Context, first uint64) {
	spec := l.spec(first)
	var body []byte
	for attempt := 0; ctx.Err() == nil; attempt++ {
		if attempt > 0 {
			l.retries.Add(1)
		}
		t0 := time.Now()
		body = spec.AppendBody(body[:0], first, l.plan.batch, t0)
		code, acc, dup, retryAfter := l.post(body)
		if code == http.StatusOK {
			l.accepted.Add(uint64(acc))
			l.dupReplies.Add(uint64(dup))
			s, a := l.acks.ms(t0), l.acks.ms(time.Now())
			for q := first; q < first+uint64(l.plan.batch); q++ {
				l.acks.sent[q].Store(s)
				l.acks.acked[q].Store(a)
			}
			l.remember(first)
			return
		}
		// 503 (queue full, Retry-After), a refused connection while the
		// gateway restarts, a timeout: wait and send the same batch again.
		wait := 200 * time.Millisecond
		if retryAfter > 0 {
			wait = retryAfter
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
}

// post is not cancelled when the intake ends: a request in flight then
// finishes (the client's timeout bounds it), so its outcome is known.
func (l *soakLoad) post(body []byte) (code, accepted, dups int, retryAfter time.Duration) {
	req, err := http.NewRequest(http.MethodPost, l.url, bytes.NewReader(body))
	if err != nil {
		return 0, 0, 0, 0
	}
	req.Header.Set("Content-Type", "application/json")
	l.requests.Add(1)
	resp, err := l.client.Do(req)
	if err != nil {
		l.transportErr.Add(1)
		return 0, 0, 0, 0
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		l.code200.Add(1)
		var reply struct{ Accepted, Duplicates int }
		if json.Unmarshal(b, &reply) == nil {
			return http.StatusOK, reply.Accepted, reply.Duplicates, 0
		}
		return http.StatusOK, 0, 0, 0
	case http.StatusServiceUnavailable:
		l.code503.Add(1)
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			// Retry sooner than asked, capped: the soak wants pressure.
			retryAfter = min(time.Duration(s)*time.Second, 500*time.Millisecond)
		}
		return resp.StatusCode, 0, 0, retryAfter
	default:
		l.codeOther.Add(1)
		return resp.StatusCode, 0, 0, 0
	}
}

// remember keeps a ring of recently acknowledged batches to resend.
func (l *soakLoad) remember(first uint64) {
	l.recentMu.Lock()
	defer l.recentMu.Unlock()
	if len(l.recent) < 256 {
		l.recent = append(l.recent, resendable{first, time.Now()})
		return
	}
	l.recent[l.recentAt] = resendable{first, time.Now()}
	l.recentAt = (l.recentAt + 1) % len(l.recent)
}

// pickResend returns an acknowledged batch well inside the dedup window.
func (l *soakLoad) pickResend() (resendable, bool) {
	l.recentMu.Lock()
	defer l.recentMu.Unlock()
	for i := range l.recent {
		r := l.recent[(l.recentAt+i)%len(l.recent)]
		if age := time.Since(r.at); age > 500*time.Millisecond && age < l.plan.dedupWindow/2 {
			return r, true
		}
	}
	return resendable{}, false
}

// resend posts an acknowledged batch again: the reply must count every
// message as a duplicate. A failed resend is not retried (it was acked).
func (l *soakLoad) resend(ctx context.Context, r resendable) {
	body := l.spec(r.first).AppendBody(nil, r.first, l.plan.batch, time.Now())
	code, acc, dup, _ := l.post(body)
	if code != http.StatusOK {
		return
	}
	l.resends.Add(1)
	l.resendDups.Add(uint64(dup))
	l.reNew.Add(uint64(acc))
}

// mosq is the external broker, stopped and started on its port.
type mosq struct {
	bin, conf, dir string
	port           int
	p              *proc
	starts         int
}

func newMosq(dir string) (*mosq, error) {
	bin := "/usr/sbin/mosquitto"
	if p, err := exec.LookPath("mosquitto"); err == nil {
		bin = p
	}
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("mosquitto is not installed (apt-get install mosquitto): %w", err)
	}
	ports, err := freeport.Ports(1)
	if err != nil {
		return nil, err
	}
	m := &mosq{bin: bin, dir: dir, conf: filepath.Join(dir, "mosquitto.conf"), port: ports[0]}
	var c bytes.Buffer
	if os.Getuid() == 0 {
		c.WriteString("user root\n") // else it drops to user mosquitto, which cannot write the temp dir
	}
	// Persistence: messages mosquitto acknowledged to the gateway survive its
	// restart for the (persistent-session) subscriber, so a loss counted at
	// the end is the gateway's. No queue limit for that subscriber.
	fmt.Fprintf(&c, "listener %d 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\nautosave_interval 0\n"+
		"max_queued_messages 0\nset_tcp_nodelay true\nlog_dest stderr\nlog_type error\nlog_type warning\n", m.port, dir)
	return m, os.WriteFile(m.conf, c.Bytes(), 0o600)
}

func (m *mosq) url() string { return fmt.Sprintf("tcp://127.0.0.1:%d", m.port) }

func (m *mosq) start() error {
	m.starts++
	p, err := startProc("mosquitto", filepath.Join(m.dir, fmt.Sprintf("mosquitto-%d.log", m.starts)), nil, m.bin, "-c", m.conf)
	if err != nil {
		return err
	}
	m.p = p
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("mosquitto exited at start: %s", tail(p.log.Name(), 5))
		}
		if c, err := dialTCP(fmt.Sprintf("127.0.0.1:%d", m.port)); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("mosquitto not listening on %d", m.port)
}

// stop is a clean stop (SIGTERM): mosquitto writes its persistence file.
func (m *mosq) stop() error {
	if m.p == nil {
		return nil
	}
	err := m.p.stop(15 * time.Second)
	m.p = nil
	var ee *exec.ExitError
	if err != nil && !errorsAs(err, &ee) {
		return err
	}
	return nil
}

func killHard(p *proc) {
	_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
	<-p.done
}
