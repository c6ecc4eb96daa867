package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"wittra-gateway/internal/freeport"
	"wittra-gateway/internal/wmsg"
)

func dialTCP(addr string) (net.Conn, error) { return net.DialTimeout("tcp", addr, time.Second) }

func errorsAs(err error, target any) bool { return errors.As(err, target) }

// soakGateway is the gateway under soak: one config, restartable on the
// same ports and queue file.
type soakGateway struct {
	mu                     sync.Mutex
	p                      *proc
	bin, cfg, dir          string
	webhook, admin, broker string
	starts                 int
}

func (g *soakGateway) start() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.starts++
	p, err := startProc("wittra-gateway", filepath.Join(g.dir, fmt.Sprintf("gateway-%d.log", g.starts)), nil, g.bin, "run", "-config", g.cfg)
	if err != nil {
		return err
	}
	if _, err := waitReady(p, "http://"+g.admin+"/readyz", 60*time.Second); err != nil {
		killHard(p)
		return fmt.Errorf("%v\n%s", err, tail(p.log.Name(), 5))
	}
	g.p = p
	return nil
}

func (g *soakGateway) proc() *proc {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.p
}

// kill is the SIGKILL a power cut or the OOM killer deals.
func (g *soakGateway) kill() {
	g.mu.Lock()
	p := g.p
	g.p = nil
	g.mu.Unlock()
	if p != nil {
		killHard(p)
	}
}

func (r *runner) soak() (err error) {
	const scen = "soak"
	plan := newSoakPlan(r.soakDur, r.soakRate)
	out := r.soakOut
	// Logs, configs, queue file and mosquitto's store go next to the
	// samples, so they outlive bench.sh's scratch directory; replaced by the
	// next run.
	dir := filepath.Join(out, "run")
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	for _, d := range []string{dir, out} {
		if err := mkdir(d); err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "soak: %s at %.0f msg/s (batches of %d), %d active devices rotating %d per round, mosquitto down %s every %s, "+
		"subscriber on %s / off %s, SIGKILL at %s, judged after %s, sample every %s, dedup_window %s, max_bytes %d; output %s\n",
		plan.dur, plan.rate, plan.batch, plan.population, plan.shift, plan.down, plan.period, plan.subOn, plan.subOff,
		plan.killAt, plan.warmup, plan.sampleEvery, plan.dedupWindow, plan.maxBytes, out)

	m, err := newMosq(dir)
	if err != nil {
		return err
	}
	if err := m.start(); err != nil {
		return err
	}
	defer m.stop()

	addrs, err := freeport.Addrs(3)
	if err != nil {
		return err
	}
	g := &soakGateway{bin: r.binary("wittra-gateway"), dir: dir, cfg: filepath.Join(dir, "gateway.yaml"),
		webhook: addrs[0], admin: addrs[1], broker: addrs[2]}
	// Values and retain on by default (the default config's local sink;
	// BENCH_VALUES / BENCH_RETAIN=false to isolate them); the queue small so
	// that mosquitto's outages fill it. retain_max_topics is well below what
	// the active population holds (~9 topics per device), so the bound bites
	// within minutes and keeps biting: the soak shows memory flat under it
	// with constant eviction. The default (2,000,000) would take hours to
	// reach at soak rates, and memory rightly rises until then.
	cfg := fmt.Sprintf(`gateway: {id: soak}
log: {level: warn, format: json}
webhook:
  listen: %s
  routes: [{path: /wittra}]
buffer: {path: %s, max_bytes: %d, dedup_window: %s}
admin: {listen: %s}
broker:
  enabled: true
  listeners: [{type: tcp, address: %s}]
sinks:
  - {name: local, type: broker, topic_prefix: wittra, values: %v, retain: %v, retain_max_topics: %d}
  - {name: plant, type: mqtt, url: "%s", client_id: wittra-soak, qos: 1, topic_prefix: wittra}
`, g.webhook, filepath.Join(dir, "queue.db"), plan.maxBytes, plan.dedupWindow, g.admin, g.broker, r.values, r.retain, soakRetainCap(plan.population), m.url())
	if err := os.WriteFile(g.cfg, []byte(cfg), 0o644); err != nil {
		return err
	}
	if err := g.start(); err != nil {
		return err
	}
	defer func() {
		if p := g.proc(); p != nil {
			if e := p.stop(30 * time.Second); e != nil && err == nil {
				var ee interface{ ExitCode() int }
				if !errorsAs(e, &ee) {
					err = fmt.Errorf("gateway stop: %w", e)
				}
			}
		}
	}()

	t0 := time.Now()
	run := wmsg.NewRunID(t0)
	n := uint64(plan.rate*plan.dur.Seconds()*1.1) + uint64(plan.batch*plan.workers)
	acks := newAckLog(n, t0)
	ext := newSoakSub("mosquitto", run, n, t0)
	extClient, err := ext.connectPersistent(m.url())
	if err != nil {
		return err
	}
	defer extClient.Disconnect(250)
	emb := newSoakSub("embedded", run, n, t0)

	load := &soakLoad{plan: plan, url: "http://" + g.webhook + "/wittra", run: run, acks: acks,
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			MaxIdleConnsPerHost: plan.workers, MaxConnsPerHost: plan.workers, IdleConnTimeout: 30 * time.Second}}}

	ctx, cancel := context.WithTimeout(context.Background(), plan.dur)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); load.runLoad(ctx) }()

	var winMu sync.Mutex
	var windows []window
	wg.Add(1)
	go func() {
		defer wg.Done()
		emb.comeAndGo(ctx, func() string { return g.broker }, plan.subOn, plan.subOff, &winMu, &windows)
	}()

	// Events: mosquitto outages and the SIGKILL.
	var evMu sync.Mutex
	var events []string
	event := func(format string, a ...any) {
		evMu.Lock()
		events = append(events, fmt.Sprintf("%6.1fs ", time.Since(t0).Seconds())+fmt.Sprintf(format, a...))
		evMu.Unlock()
		fmt.Fprintf(os.Stderr, "soak: %6.1fs %s\n", time.Since(t0).Seconds(), fmt.Sprintf(format, a...))
	}
	outages := 0
	var evErrMu sync.Mutex
	var evErr error
	setErr := func(err error) {
		evErrMu.Lock()
		evErr = errors.Join(evErr, err)
		evErrMu.Unlock()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for k := 1; ; k++ {
			at := t0.Add(time.Duration(k)*plan.period - plan.down)
			if !sleepUntil(ctx, at) {
				return
			}
			if err := m.stop(); err != nil {
				setErr(err)
				return
			}
			event("mosquitto stopped")
			sleepUntil(ctx, at.Add(plan.down))
			if err := m.start(); err != nil {
				setErr(err)
				return
			}
			outages++
			event("mosquitto started")
		}
	}()
	killed := false
	wg.Add(1)
	go func() {
		defer wg.Done()
		if !sleepUntil(ctx, t0.Add(plan.killAt)) {
			return
		}
		g.kill()
		event("gateway SIGKILLed")
		if err := g.start(); err != nil {
			setErr(fmt.Errorf("restart after SIGKILL: %w", err))
			cancel()
			return
		}
		killed = true
		event("gateway restarted (ready)")
	}()

	// Sampling, in this goroutine, until the intake ends. A gateway that
	// exits on its own, or stops answering /metrics, fails the soak.
	var samples []soakSample
	var died string
	failedSamples := 0
	tick := time.NewTicker(plan.sampleEvery)
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-tick.C:
			if s, ok := sampleGateway(g, t0, load); ok {
				samples = append(samples, s)
				continue
			}
			p := g.proc()
			if p == nil {
				continue // being killed and restarted
			}
			failedSamples++
			if p.exited() && died == "" {
				died = fmt.Sprintf("gateway exited on its own (%v): %s", p.err, crashLine(p.log.Name()))
				event("%s", died)
			}
		}
	}
	tick.Stop()
	wg.Wait()
	if evErr != nil {
		return evErr
	}
	// mosquitto must be up for the final delivery.
	if m.p == nil {
		if err := m.start(); err != nil {
			return err
		}
	}
	event("intake stopped; waiting for mosquitto's subscriber to receive every acknowledged message")
	acked := countAcked(acks)
	waitDelivered(ext, acks, acked, 30*time.Second, 5*time.Minute)
	// One more sample after the drain, for the CSV (not judged: intake
	// has stopped).
	if s, ok := sampleGateway(g, t0, load); ok {
		samples = append(samples, s)
	}

	res := analyseSoak(plan, samples, acks, ext, emb, windows, load)
	res.events, res.outages, res.killed = events, outages, killed
	res.died, res.failedSamples = died, failedSamples
	before := len(r.rows)
	r.reportSoak(scen, plan, res)
	var missed []string
	for _, x := range r.rows[before:] {
		if x.Result == "MISSED" {
			missed = append(missed, x.Measure)
		}
	}
	if err := writeSoakCSV(filepath.Join(out, "samples.csv"), samples); err != nil {
		return err
	}
	if err := plotSoak(filepath.Join(out, "soak.png"), plan, res, samples); err != nil {
		return err
	}
	r.note("soak: samples %s, plot %s, logs in %s", filepath.Join(out, "samples.csv"), filepath.Join(out, "soak.png"), dir)
	if len(missed) > 0 {
		// make soak exits non-zero.
		return fmt.Errorf("soak failed: %s", strings.Join(missed, ", "))
	}
	return nil
}

// crashLine is the Go runtime's first panic or fatal-error line in a log,
// else its last line.
func crashLine(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "panic: ") || strings.HasPrefix(l, "fatal error: ") {
			return l + " (log " + path + ")"
		}
	}
	return tail(path, 1)
}

func sleepUntil(ctx context.Context, t time.Time) bool {
	select {
	case <-ctx.Done():
		return false
	case <-time.After(time.Until(t)):
		return true
	}
}

func countAcked(a *ackLog) uint64 {
	var n uint64
	for i := range a.acked {
		if a.acked[i].Load() != 0 {
			n++
		}
	}
	return n
}

// waitDelivered waits until the subscriber has every acknowledged message,
// or nothing new arrived for idle, or max.
func waitDelivered(s *soakSub, a *ackLog, acked uint64, idle, maxWait time.Duration) {
	start := time.Now()
	last, lastChange := s.unique.Load(), start
	for time.Since(start) < maxWait {
		missing := uint64(0)
		for i := range a.acked {
			if a.acked[i].Load() != 0 && s.seen.n[i].Load() == 0 {
				missing++
			}
		}
		if missing == 0 {
			return
		}
		if u := s.unique.Load(); u != last {
			last, lastChange = u, time.Now()
		} else if time.Since(lastChange) > idle {
			return
		}
		time.Sleep(time.Second)
	}
}

// soakRetainCap is the soak's retain_max_topics: the value topics of 40 %
// of the active population (about 9 per device).
func soakRetainCap(population int) int { return population * 4 }
