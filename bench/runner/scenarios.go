package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"wittra-gateway/internal/freeport"
)

// loadReport is the part of wittra-load's -json output the runner reads.
type loadReport struct {
	Run        string            `json:"run"`
	Clients    int               `json:"clients"`
	DurationS  float64           `json:"duration_s"`
	Messages   uint64            `json:"messages"`
	Accepted   uint64            `json:"accepted"`
	ServerNew  uint64            `json:"server_new"`
	ServerDups uint64            `json:"server_dups"`
	AcceptedPS float64           `json:"accepted_per_s"`
	Behind     uint64            `json:"behind"`
	Errors     map[string]uint64 `json:"errors"`
	Latency    latency           `json:"request_latency"`
	Sub        *struct {
		Received   uint64  `json:"received"`
		Unique     uint64  `json:"unique"`
		Duplicated uint64  `json:"duplicated"`
		Lost       uint64  `json:"lost"`
		Unexpected uint64  `json:"unexpected"`
		Foreign    uint64  `json:"foreign"`
		WaitS      float64 `json:"wait_s"`
		E2E        latency `json:"e2e_latency"`
	} `json:"subscriber"`
}

type latency struct {
	Count uint64  `json:"count"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	Max   float64 `json:"max_ms"`
}

func (l latency) String() string {
	return fmt.Sprintf("p50 %.2f / p90 %.2f / p99 %.2f / max %.1f ms", l.P50, l.P90, l.P99, l.Max)
}

func errorsString(m map[string]uint64) string {
	if len(m) == 0 {
		return "none"
	}
	var parts []string
	for k, v := range m {
		parts = append(parts, fmt.Sprintf("%s: %d", k, v))
	}
	return strings.Join(parts, ", ")
}

// server is a gateway or a harness server under test.
type server struct {
	p                      *proc
	name, dir, queue, log  string
	webhook, admin, broker string
	ready                  time.Duration
	readyMem               memInfo
}

func (s *server) url() string { return "http://" + s.webhook + "/wittra" }

func (s *server) stop() error {
	if s == nil || s.p == nil {
		return nil
	}
	return s.p.stop(15 * time.Second)
}

// waitDepthZero polls the metric depthKey until it reads 0, the process
// exits or timeout passes. It returns the time from since to the 0 (zero
// when never) and the last depth read (-1 when none).
func (s *server) waitDepthZero(depthKey string, since time.Time, timeout time.Duration) (time.Duration, float64) {
	last := -1.0
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline) && !s.p.exited(); time.Sleep(100 * time.Millisecond) {
		if m, err := s.metrics(); err == nil {
			if last = m[depthKey]; last == 0 {
				return time.Since(since), last
			}
		}
	}
	return 0, last
}

func (s *server) metrics() (map[string]float64, error) {
	return metrics("http://" + s.admin + "/metrics")
}

func (r *runner) localSinkYAML() string {
	return fmt.Sprintf("  - {name: local, type: broker, topic_prefix: wittra, values: %v, retain: %v}\n", r.values, r.retain)
}

// startGateway writes a config and starts the real binary on it.
func (r *runner) startGateway(name, dir, queue, sinksYAML string, brokerOn bool) (*server, error) {
	s, err := newServer(name, dir, queue)
	if err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf(`gateway: {id: bench}
log: {level: warn, format: json}
webhook:
  listen: %s
  routes: [{path: /wittra}]
buffer: {path: %s}
admin: {listen: %s}
broker:
  enabled: %v
  listeners: [{type: tcp, address: %s}]
sinks:
%s`, s.webhook, queue, s.admin, brokerOn, s.broker, sinksYAML)
	cfgPath := filepath.Join(dir, name+".yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	if err := s.launch(r.binary("wittra-gateway"), "run", "-config", cfgPath); err != nil {
		return nil, err
	}
	return s, nil
}

// newServer makes dir and picks the ports of a server named name.
func newServer(name, dir, queue string) (*server, error) {
	if err := mkdir(dir); err != nil {
		return nil, err
	}
	addrs, err := freeport.Addrs(3)
	if err != nil {
		return nil, err
	}
	return &server{name: name, dir: dir, queue: queue, log: filepath.Join(dir, name+".log"),
		webhook: addrs[0], admin: addrs[1], broker: addrs[2]}, nil
}

// launch starts bin with args and waits until it is ready.
func (s *server) launch(bin string, args ...string) error {
	var err error
	if s.p, err = startProc(s.name, s.log, nil, bin, args...); err != nil {
		return err
	}
	if s.ready, err = waitReady(s.p, "http://"+s.admin+"/readyz", 30*time.Second); err != nil {
		s.stop()
		return fmt.Errorf("%v\n%s", err, tail(s.log, 5))
	}
	s.readyMem, _ = readMem(s.p.pid())
	return nil
}

// startHarness starts bench/baseline or bench/profile.
func (r *runner) startHarness(name, dir string, extra ...string) (*server, error) {
	s, err := newServer(name, dir, filepath.Join(dir, "queue.db"))
	if err != nil {
		return nil, err
	}
	args := append([]string{"-queue", s.queue, "-webhook", s.webhook, "-admin", s.admin, "-broker", s.broker,
		"-values=" + strconv.FormatBool(r.values), "-retain=" + strconv.FormatBool(r.retain)}, extra...)
	if err := s.launch(r.binary(name), args...); err != nil {
		return nil, err
	}
	return s, nil
}

// load runs wittra-load to completion and returns its report and CPU time.
func (r *runner) load(dir, label string, d time.Duration, args ...string) (*loadReport, float64, error) {
	var rep loadReport
	args = append([]string{"-json", "-label", label, "-d", d.String()}, args...)
	ps, err := r.runJSON("wittra-load", filepath.Join(dir, "load-"+label+".log"), &rep, d+90*time.Second, r.binary("wittra-load"), args...)
	if err != nil {
		return nil, 0, err
	}
	return &rep, cpuSeconds(ps), nil
}

// bgLoad is a wittra-load running in the background.
type bgLoad struct {
	p   *proc
	out *bytes.Buffer
	log string
}

func (r *runner) startLoad(dir, label string, d time.Duration, args ...string) (*bgLoad, error) {
	b := &bgLoad{out: new(bytes.Buffer), log: filepath.Join(dir, "load-"+label+".log")}
	args = append([]string{"-json", "-label", label, "-d", d.String()}, args...)
	var err error
	b.p, err = startProc("wittra-load", b.log, b.out, r.binary("wittra-load"), args...)
	return b, err
}

// finish stops sending (SIGINT) and returns the report.
func (b *bgLoad) finish() (*loadReport, error) {
	b.p.signal(syscall.SIGINT)
	if err := b.p.wait(60 * time.Second); err != nil {
		return nil, fmt.Errorf("wittra-load: %v\n%s", err, tail(b.log, 5))
	}
	var rep loadReport
	if err := json.Unmarshal(b.out.Bytes(), &rep); err != nil {
		return nil, fmt.Errorf("wittra-load output: %v: %q\n%s", err, b.out.String(), tail(b.log, 5))
	}
	return &rep, nil
}

// measureLoad runs a closed-loop load against s and reports the figures
// every intake row needs.
type intakeFigures struct {
	rep           *loadReport
	mem           memInfo
	gwCores       float64
	loadCores     float64
	otherCores    float64
	commits       float64
	cpuUsPerMsg   float64
	msgsPerCommit float64
	writePerMsg   float64 // bytes written to storage per accepted message
}

func (r *runner) measureIntake(s *server, label string, clients int, d time.Duration, withMetrics bool) (*intakeFigures, error) {
	var m0 map[string]float64
	if withMetrics {
		m0, _ = s.metrics()
	}
	ms := sampleMem(s.p.pid(), 100*time.Millisecond)
	cw := startCPU(s.p.pid())
	w0 := writeBytes(s.p.pid())
	t0 := time.Now()
	rep, loadCPU, err := r.load(s.dir, label, d, "-url", s.url(), "-c", strconv.Itoa(clients))
	w1 := writeBytes(s.p.pid())
	win := time.Since(t0).Seconds()
	f := &intakeFigures{rep: rep}
	ours, others := cw.end(loadCPU / win)
	f.mem = ms.end()
	if err != nil {
		return nil, err
	}
	f.gwCores, f.loadCores, f.otherCores = ours[s.p.pid()], loadCPU/win, others
	if rep.Accepted > 0 {
		f.cpuUsPerMsg = f.gwCores * win / float64(rep.Accepted) * 1e6
		f.writePerMsg = float64(w1-w0) / float64(rep.Accepted)
	}
	if withMetrics {
		if m1, err := s.metrics(); err == nil {
			f.commits = m1["wittra_gateway_queue_commits_total"] - m0["wittra_gateway_queue_commits_total"]
			if f.commits > 0 {
				f.msgsPerCommit = float64(rep.Accepted) / f.commits
			}
		}
	}
	return f, nil
}

func (r *runner) cpuNote(f *intakeFigures) string {
	return fmt.Sprintf("server %.2f cores (%.0f µs CPU/msg), wittra-load %.2f, other processes %.2f", f.gwCores, f.cpuUsPerMsg, f.loadCores, f.otherCores)
}

func (r *runner) intake() error {
	const scen = "intake"
	dir := r.path("intake")
	os.RemoveAll(dir)
	gw, err := r.startGateway("wittra-gateway", filepath.Join(dir, "gateway"), filepath.Join(dir, "gateway", "queue.db"), r.localSinkYAML(), true)
	if err != nil {
		return err
	}
	defer gw.stop()
	r.emptyGW = &gw.readyMem
	r.info("start-up", "ready, empty queue", fmt.Sprintf("%.0f ms", gw.ready.Seconds()*1000), "RSS at ready "+mib(gw.readyMem.RSS))
	if _, _, err := r.load(gw.dir, "warmup", 2*time.Second, "-url", gw.url(), "-c", "32"); err != nil {
		return err
	}
	clients := []int{32, 64}
	gwRate := map[int]float64{}
	gwCPU := map[int]float64{} // µs of CPU per accepted message
	var gwMem memInfo
	for _, c := range clients {
		f, err := r.measureIntake(gw, fmt.Sprintf("gateway-c%d", c), c, r.intakeDur, true)
		if err != nil {
			return err
		}
		gwRate[c], gwCPU[c] = f.rep.AcceptedPS, f.cpuUsPerMsg
		r.check(scen, fmt.Sprintf("accepted/s, %d clients", c), f.rep.AcceptedPS, "%.0f", 25000, true, r.cpuNote(f))
		r.info(scen, fmt.Sprintf("request latency, %d clients", c), f.rep.Latency.String(), "errors: "+errorsString(f.rep.Errors))
		r.info(scen, fmt.Sprintf("messages per commit, %d cl.", c), fmt.Sprintf("%.1f", f.msgsPerCommit), fmt.Sprintf("%.0f commits in %.1f s; %.1f KiB written to disk per message (%.0f MiB/s)", f.commits, f.rep.DurationS, f.writePerMsg/1024, f.writePerMsg*f.rep.AcceptedPS/(1<<20)))
		r.check("memory", fmt.Sprintf("RSS at full intake, %d cl.", c), float64(f.mem.RSS)/(1<<20), "%.1f MiB", 40, false,
			fmt.Sprintf("max anon %s + file %s (bbolt mmap)", mib(f.mem.Anon), mib(f.mem.File)))
		gwMem.RSS = max(gwMem.RSS, f.mem.RSS)
	}
	if m, err := gw.metrics(); err == nil {
		r.info(scen, "queue file after intake", mib(int64(m["wittra_gateway_queue_file_bytes"])), fmt.Sprintf("%.0f messages accepted in total", sumPrefix(m, "wittra_gateway_messages_accepted_total")))
	}
	if err := gw.stop(); err != nil {
		r.note("gateway stop after intake: %v", err)
	}

	stopErr, err := r.against("baseline", "baseline", dir, clients, func(c int, f *intakeFigures) {
		r.info("baseline", fmt.Sprintf("accepted/s, %d clients", c), fmt.Sprintf("%.0f", f.rep.AcceptedPS),
			"MaxBatch 1 (one commit per message); p99 "+fmt.Sprintf("%.1f ms; %.1f KiB written/msg; ", f.rep.Latency.P99, f.writePerMsg/1024)+r.cpuNote(f))
		if f.rep.AcceptedPS > 0 {
			r.check(scen, fmt.Sprintf("gateway ÷ baseline, %d cl.", c), gwRate[c]/f.rep.AcceptedPS, "%.1f×", 10, true, "")
		}
	})
	if err != nil {
		return err
	}
	if stopErr != nil {
		r.note("baseline stop: %v", stopErr)
	}
	return r.ceiling(dir, clients, gwRate, gwCPU)
}

// ceiling measures bench/noop (net/http answering without storing
// anything) with the same load generator in the same run: the HTTP
// stack's rate on this machine now, against which the gateway's intake is
// judged (a shared machine moves both alike). Then bench/noop -bolt, the
// same server storing each body with a bare bbolt group commit: what the
// storage the gateway is built on allows here, as a fraction of the same
// ceiling.
func (r *runner) ceiling(dir string, clients []int, gwRate, gwCPU map[int]float64) error {
	const scen = "intake"
	noop := map[int]float64{}
	stopErr, err := r.against("noop", "noop", dir, clients, func(c int, f *intakeFigures) {
		noop[c] = f.rep.AcceptedPS
		r.info("ceiling", fmt.Sprintf("no-op handler req/s, %d cl.", c), fmt.Sprintf("%.0f", f.rep.AcceptedPS),
			fmt.Sprintf("net/http, body read, no storage; p99 %.1f ms; ", f.rep.Latency.P99)+r.cpuNote(f))
		if f.rep.AcceptedPS > 0 {
			r.check(scen, fmt.Sprintf("gateway ÷ no-op ceiling, %d cl.", c), 100*gwRate[c]/f.rep.AcceptedPS, "%.0f %%", 70, true, "")
		}
		if f.cpuUsPerMsg > 0 && gwCPU[c] > 0 {
			r.check(scen, fmt.Sprintf("CPU/msg ÷ no-op's, %d cl.", c), gwCPU[c]/f.cpuUsPerMsg, "%.1f×", 2.5, false,
				fmt.Sprintf("%.0f vs %.0f µs per request", gwCPU[c], f.cpuUsPerMsg))
		}
	})
	if err != nil {
		return err
	}
	if stopErr != nil {
		return stopErr
	}
	stopErr, err = r.against("noop", "bolt", dir, clients, func(c int, f *intakeFigures) {
		share := "–"
		if noop[c] > 0 {
			share = fmt.Sprintf("%.0f %% of the no-op ceiling", 100*f.rep.AcceptedPS/noop[c])
		}
		r.info("ceiling", fmt.Sprintf("bare bbolt group commit req/s, %d cl.", c), fmt.Sprintf("%.0f", f.rep.AcceptedPS),
			fmt.Sprintf("%s; body appended, one commit (two fdatasyncs) per batch, no dedup or delivery; p99 %.1f ms; %.1f KiB written/msg; ", share, f.rep.Latency.P99, f.writePerMsg/1024)+r.cpuNote(f))
	}, "-bolt")
	if err != nil {
		return err
	}
	return stopErr
}

// against runs the harness kind (bench/baseline or bench/noop) with args
// extra in dir/label, with a warm-up, measures its intake at each client
// count as the gateway's was, and hands each figure to report. A failure to
// stop the harness comes back apart (stopErr), after the figures.
func (r *runner) against(kind, label, dir string, clients []int, report func(c int, f *intakeFigures), extra ...string) (stopErr, err error) {
	h, err := r.startHarness(kind, filepath.Join(dir, label), extra...)
	if err != nil {
		return nil, err
	}
	defer h.stop()
	if _, _, err := r.load(h.dir, "warmup", time.Second, "-url", h.url(), "-c", "32"); err != nil {
		return nil, err
	}
	for _, c := range clients {
		f, err := r.measureIntake(h, fmt.Sprintf("%s-c%d", label, c), c, r.baselineDur, false)
		if err != nil {
			return nil, err
		}
		report(c, f)
	}
	return h.stop(), nil
}

func sumPrefix(m map[string]float64, prefix string) float64 {
	var s float64
	for k, v := range m {
		if strings.HasPrefix(k, prefix) {
			s += v
		}
	}
	return s
}

func (r *runner) latency() error {
	const scen = "latency"
	dir := r.path("latency")
	os.RemoveAll(dir)
	gw, err := r.startGateway("wittra-gateway", dir, filepath.Join(dir, "queue.db"), r.localSinkYAML(), true)
	if err != nil {
		return err
	}
	defer gw.stop()
	sub := "tcp://" + gw.broker
	if _, _, err := r.load(dir, "warmup", 2*time.Second, "-url", gw.url(), "-rate", "1000", "-c", "16", "-sub", sub); err != nil {
		return err
	}
	ms := sampleMem(gw.p.pid(), 200*time.Millisecond)
	cw := startCPU(gw.p.pid())
	t0 := time.Now()
	rep, loadCPU, err := r.load(dir, "rate1000", r.latencyDur, "-url", gw.url(), "-rate", "1000", "-c", "16", "-sub", sub)
	win := time.Since(t0).Seconds()
	ours, others := cw.end(loadCPU / win)
	mem := ms.end()
	if err != nil {
		return err
	}
	note := fmt.Sprintf("%.0f msg/s achieved, errors: %s; gateway %.2f cores, other processes %.2f", rep.AcceptedPS, errorsString(rep.Errors), ours[gw.p.pid()], others)
	r.check(scen, "request p99 at 1,000 msg/s", rep.Latency.P99, "%.2f ms", 10, false, note)
	r.info(scen, "request latency", rep.Latency.String(), "")
	if rep.Sub == nil {
		return fmt.Errorf("no subscriber report")
	}
	r.check(scen, "end-to-end p50", rep.Sub.E2E.P50, "%.2f ms", 2, false, "POST → MQTT subscriber on the embedded broker")
	r.check(scen, "end-to-end p99", rep.Sub.E2E.P99, "%.2f ms", 7.5, false, rep.Sub.E2E.String())
	r.check(scen, "lost / duplicated", float64(rep.Sub.Lost+rep.Sub.Duplicated), "%.0f", 0, false,
		fmt.Sprintf("lost %d, duplicated %d of %d accepted", rep.Sub.Lost, rep.Sub.Duplicated, rep.Accepted))
	r.info("memory", "RSS at 1,000 msg/s", mib(mem.RSS), fmt.Sprintf("anon %s + file %s", mib(mem.Anon), mib(mem.File)))
	return gw.stop()
}

// fill queues n messages offline and returns fill's report.
type fillReport struct {
	Messages     uint64  `json:"messages"`
	PayloadBytes uint64  `json:"payload_bytes"`
	FileBytes    int64   `json:"file_bytes"`
	Seconds      float64 `json:"seconds"`
	PerS         float64 `json:"per_s"`
}

func (r *runner) fill(dir, queue string, n uint64, consumers string) (*fillReport, error) {
	var fr fillReport
	_, err := r.runJSON("fill", filepath.Join(dir, "fill.log"), &fr, 15*time.Minute, r.binary("fill"),
		"-queue", queue, "-n", strconv.FormatUint(n, 10), "-consumers", consumers)
	return &fr, err
}

// qstat summarises a closed queue file's buckets.
func (r *runner) qstat(dir, queue, label string) string {
	out, err := exec.Command(r.binary("qstat"), queue).Output()
	if err != nil {
		return "qstat: " + err.Error()
	}
	os.WriteFile(filepath.Join(dir, "qstat-"+label+".json"), out, 0o644)
	var q struct {
		FileBytes int64 `json:"file_bytes"`
		Free      int   `json:"free_pages"`
		Buckets   map[string]struct {
			Keys      int     `json:"keys"`
			PageBytes int64   `json:"page_bytes"`
			Fill      float64 `json:"fill_ratio"`
		} `json:"buckets"`
	}
	if err := json.Unmarshal(out, &q); err != nil {
		return "qstat: " + err.Error()
	}
	var parts []string
	for _, name := range []string{"msgs", "dedupw"} {
		b := q.Buckets[name]
		parts = append(parts, fmt.Sprintf("%s %d keys %s (pages %.0f%% full)", name, b.Keys, mib(b.PageBytes), b.Fill*100))
	}
	parts = append(parts, fmt.Sprintf("free pages %s", mib(int64(q.Free)*4096)))
	return strings.Join(parts, "; ")
}

func copyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// pristine is the filled queue file kept for drain-mqtt.
func (r *runner) pristine() string { return r.path("drain", "pristine.db") }

func (r *runner) drain() error {
	const scen = "drain"
	dir, queue, err := r.freshDir(scen)
	if err != nil {
		return err
	}
	fr, err := r.fill(dir, queue, r.drainN, "local")
	if err != nil {
		return err
	}
	r.info(scen, "queued offline (bench/fill)", fmt.Sprintf("%d msgs", fr.Messages),
		fmt.Sprintf("%.0f msg/s through bridge.Receiver in-process, %s of message bodies", fr.PerS, mib(int64(fr.PayloadBytes))))
	ratio := float64(fr.FileBytes) / float64(fr.PayloadBytes)
	r.check("disk", fmt.Sprintf("file ÷ payload, %dk queued", r.drainN/1000), ratio, "%.2f×", 1.5, false,
		fmt.Sprintf("file %s for %s payload; %s", mib(fr.FileBytes), mib(int64(fr.PayloadBytes)), r.qstat(dir, queue, "full")))
	if err := copyFile(r.pristine(), queue); err != nil {
		return err
	}

	gw, err := r.startGateway("wittra-gateway", dir, queue, r.localSinkYAML(), true)
	if err != nil {
		return err
	}
	defer gw.stop()
	ms := sampleMem(gw.p.pid(), 100*time.Millisecond)
	r.check("start-up", fmt.Sprintf("ready, %dk queued", r.drainN/1000), gw.ready.Seconds()*1000, "%.0f ms", 1000, false, "exec → /readyz 200 (delivery starts at once)")
	emptyNote := ""
	if r.emptyGW != nil {
		emptyNote = fmt.Sprintf("; empty queue: %s", mib(r.emptyGW.RSS))
	}
	r.check("start-up", fmt.Sprintf("RSS at ready, %dk queued", r.drainN/1000), float64(gw.readyMem.RSS)/(1<<20), "%.1f MiB", 40, false,
		fmt.Sprintf("anon %s + file %s%s", mib(gw.readyMem.Anon), mib(gw.readyMem.File), emptyNote))

	sub := "tcp://" + gw.broker
	live, err := r.startLoad(dir, "live", r.drainTimeout, "-url", gw.url(), "-rate", "1000", "-c", "16",
		"-project", "live", "-device-base", "1000000", "-sub", sub, "-sub-topic", "wittra/live/+/data")
	if err != nil {
		return err
	}
	cw := startCPU(gw.p.pid())
	depthKey := `wittra_gateway_queue_depth_messages{sink="local"}`
	drainedAt, lastDepth := gw.waitDepthZero(depthKey, gw.p.start, r.drainTimeout)
	ours, others := cw.end(0)
	liveRep, lerr := live.finish()
	mem := ms.end()
	if drainedAt == 0 {
		r.add(row{Scenario: scen, Measure: "drain to embedded broker", Value: fmt.Sprintf("not drained: depth %.0f after %s", lastDepth, r.drainTimeout), Target: "≥ 50000 msg/s", Result: "MISSED"})
	} else {
		rate := float64(fr.Messages) / drainedAt.Seconds()
		fromReady := float64(fr.Messages) / (drainedAt - gw.ready).Seconds()
		r.check(scen, "drain to embedded broker", rate, "%.0f msg/s", 50000, true,
			fmt.Sprintf("%dk in %.1f s from exec (%.0f msg/s from ready); gateway %.2f cores + wittra-load, others %.2f", fr.Messages/1000, drainedAt.Seconds(), fromReady, ours[gw.p.pid()], others))
	}
	if lerr != nil {
		return lerr
	}
	if liveRep.Sub != nil {
		r.check(scen, "live 1,000/s e2e p99 while draining", liveRep.Sub.E2E.P99, "%.1f ms", 100, false,
			fmt.Sprintf("%s; lost %d, dup %d of %d; request %s", liveRep.Sub.E2E.String(), liveRep.Sub.Lost, liveRep.Sub.Duplicated, liveRep.Accepted, liveRep.Latency.String()))
	}
	r.check("memory", fmt.Sprintf("RSS max, draining %dk", r.drainN/1000), float64(mem.RSS)/(1<<20), "%.1f MiB", 64, false,
		fmt.Sprintf("max anon %s + file %s (bbolt mmap pages)", mib(mem.Anon), mib(mem.File)))

	// Disk after the drain: the sweep (every 30 s) compacts a mostly empty file.
	var fileAfter, compactions float64
	waitUntil := time.Now().Add(45 * time.Second)
	for time.Now().Before(waitUntil) {
		m, err := gw.metrics()
		if err == nil {
			fileAfter, compactions = m["wittra_gateway_queue_file_bytes"], m["wittra_gateway_queue_compactions_total"]
			if compactions > 0 {
				break
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	if err := gw.stop(); err != nil {
		r.note("gateway stop after drain: %v", err)
	}
	fi, _ := os.Stat(queue)
	if fi != nil {
		fileAfter = float64(fi.Size())
	}
	r.check("disk", "file after drain", fileAfter/(1<<20), "%.1f MiB", 16, false,
		fmt.Sprintf("%.0f compaction(s) within %.0f s of the drain; target: a fresh queue's first 16 MiB allocation; %s", compactions, 45.0, r.qstat(dir, queue, "after")))
	return nil
}

func (r *runner) drainMQTT() error {
	const scen = "drain-mqtt"
	dir, queue, err := r.freshDir(scen)
	if err != nil {
		return err
	}
	var n uint64
	if _, err := os.Stat(r.pristine()); err == nil {
		if err := copyFile(queue, r.pristine()); err != nil {
			return err
		}
		n = r.drainN
	} else {
		fr, err := r.fill(dir, queue, r.drainN, "plant")
		if err != nil {
			return err
		}
		n = fr.Messages
	}
	ports, err := freeport.Ports(1)
	if err != nil {
		return err
	}
	mqttAddr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	sinks := fmt.Sprintf("  - {name: plant, type: mqtt, url: \"tcp://%s\", client_id: wittra-bench, qos: 1, topic_prefix: wittra}\n", mqttAddr)
	gw, err := r.startGateway("wittra-gateway", dir, queue, sinks, false)
	if err != nil {
		first := strings.SplitN(err.Error(), "\n", 2)[0]
		r.add(row{Scenario: scen, Measure: "drain to mosquitto", Value: "not run", Result: "N/A",
			Note: "the gateway refused the type: mqtt config: " + lastLine(err.Error(), first)})
		return nil
	}
	defer gw.stop()
	depthKey := `wittra_gateway_queue_depth_messages{sink="plant"}`
	r.info("start-up", fmt.Sprintf("ready, %dk queued, sink down", n/1000), fmt.Sprintf("%.0f ms", gw.ready.Seconds()*1000), "RSS at ready "+mib(gw.readyMem.RSS))
	time.Sleep(time.Second)
	if m, err := gw.metrics(); err == nil {
		r.info(scen, "queued while mosquitto down", fmt.Sprintf("%.0f", m[depthKey]), fmt.Sprintf("of %d filled", n))
	}

	conf := filepath.Join(dir, "mosquitto.conf")
	// set_tcp_nodelay as the README recommends for a broker the gateway
	// publishes to at QoS 1 (each PUBACK otherwise waits for Nagle).
	os.WriteFile(conf, []byte(fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\nlog_dest file %s\nmax_inflight_messages 0\nset_tcp_nodelay true\n",
		ports[0], filepath.Join(dir, "mosquitto-own.log"))), 0o644)
	mosqBin := "/usr/sbin/mosquitto"
	if p, err := exec.LookPath("mosquitto"); err == nil {
		mosqBin = p
	}
	mosq, err := startProc("mosquitto", filepath.Join(dir, "mosquitto.log"), nil, mosqBin, "-c", conf)
	if err != nil {
		return err
	}
	defer mosq.stop(5 * time.Second)
	t0 := time.Now()
	if err := waitTCP(mqttAddr, 5*time.Second); err != nil {
		return fmt.Errorf("mosquitto: %v\n%s", err, tail(filepath.Join(dir, "mosquitto.log"), 5))
	}
	ms := sampleMem(gw.p.pid(), 100*time.Millisecond)
	// The drain is judged by the backlog's last message reaching a
	// subscriber of mosquitto, not by the depth reading 0.
	watch, err := watchBacklog("tcp://"+mqttAddr, "wittra/fill/+/data", n, t0)
	if err != nil {
		return err
	}
	defer watch.close()
	live, err := r.startLoad(dir, "live", 2*r.drainTimeout, "-url", gw.url(), "-rate", "1000", "-c", "16",
		"-project", "live", "-device-base", "1000000", "-sub", "tcp://"+mqttAddr, "-sub-topic", "wittra/live/+/data")
	if err != nil {
		return err
	}
	// The subscriber runs in this process; the cores of all four say what
	// bounds the drain on this machine.
	gwPID, mosqPID, subPID, livePID := gw.p.pid(), mosq.pid(), os.Getpid(), live.p.pid()
	cw := startCPU(gwPID, mosqPID, subPID, livePID)
	drained := watch.wait(2 * r.drainTimeout)
	cores, others := cw.end(0)
	win := cw.seconds()
	liveRep, lerr := live.finish()
	mem := ms.end()
	if drained > 0 {
		total := others
		for _, c := range cores {
			total += c
		}
		// per message delivered in the window: the backlog and the live
		// load's 1,000/s
		perMsg := func(pid int) float64 { return cores[pid] * win / (float64(n) + 1000*win) * 1e6 }
		r.info(scen, "cores while draining to mosquitto", fmt.Sprintf("%.2f", total),
			fmt.Sprintf("gateway %.2f (%.0f µs/msg), mosquitto %.2f (%.0f µs/msg), QoS 1 subscriber (bench runner) %.2f (%.0f µs/msg), live load %.2f, other processes %.2f",
				cores[gwPID], perMsg(gwPID), cores[mosqPID], perMsg(mosqPID), cores[subPID], perMsg(subPID), cores[livePID], others))
	}
	if drained == 0 {
		depth := -1.0
		if m, err := gw.metrics(); err == nil {
			depth = m[depthKey]
		}
		r.add(row{Scenario: scen, Measure: "drain to mosquitto (QoS 1)", Value: fmt.Sprintf("not drained: %d of %d backlog messages received after %s (depth %.0f)",
			watch.got.Load(), n, 2*r.drainTimeout, depth), Result: "MISSED"})
	} else {
		r.check(scen, "drain to mosquitto (QoS 1, tcp_nodelay)", float64(n)/drained.Seconds(), "%.0f msg/s", 30000, true,
			fmt.Sprintf("%dk in %.1f s from mosquitto start to the backlog's last message at a subscriber (%d received twice), 1,000/s live on top",
				n/1000, drained.Seconds(), watch.dups.Load()))
	}
	if lerr != nil {
		return lerr
	}
	if liveRep.Sub != nil {
		r.check(scen, "live 1,000/s e2e p99 while draining", liveRep.Sub.E2E.P99, "%.1f ms", 100, false,
			fmt.Sprintf("%s; lost %d, dup %d of %d", liveRep.Sub.E2E.String(), liveRep.Sub.Lost, liveRep.Sub.Duplicated, liveRep.Accepted))
	}
	r.check("memory", fmt.Sprintf("RSS max, draining %dk to mosquitto", n/1000), float64(mem.RSS)/(1<<20), "%.1f MiB", 64, false, fmt.Sprintf("anon %s + file %s", mib(mem.Anon), mib(mem.File)))
	return gw.stop()
}

func lastLine(s, fallback string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if l == "" {
			continue
		}
		var j struct {
			Error   string `json:"error"`
			Message string `json:"message"`
		}
		if json.Unmarshal([]byte(l), &j) == nil && j.Error != "" {
			return j.Error
		}
		return l
	}
	return fallback
}

func waitTCP(addr string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			return c.Close()
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fmt.Errorf("%s not listening after %s", addr, d)
}

func (r *runner) profile() error {
	const scen = "profile"
	dir := r.path("profile")
	os.RemoveAll(dir)
	secs := 10
	if r.quick {
		secs = 5
	}
	h, err := r.startHarness("profile", filepath.Join(dir, "intake"))
	if err != nil {
		return err
	}
	defer h.stop()
	load, err := r.startLoad(h.dir, "c64", time.Duration(secs+4)*time.Second, "-url", h.url(), "-c", "64")
	if err != nil {
		return err
	}
	time.Sleep(2 * time.Second)
	cpuProf := filepath.Join(dir, "intake.cpu.prof")
	if err := fetch(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", h.admin, secs), cpuProf, time.Duration(secs+30)*time.Second); err != nil {
		return err
	}
	rep, err := load.finish()
	if err != nil {
		return err
	}
	allocProf := filepath.Join(dir, "intake.allocs.prof")
	if err := fetch("http://"+h.admin+"/debug/pprof/allocs", allocProf, 30*time.Second); err != nil {
		return err
	}
	if err := h.stop(); err != nil {
		r.note("profile harness stop: %v", err)
	}
	r.info(scen, "intake, 64 clients (harness)", fmt.Sprintf("%.0f msg/s", rep.AcceptedPS), "profile: "+cpuProf)
	bin := r.binary("profile")
	r.appendix("intake CPU, flat", pprofTop(bin, cpuProf, "-top"))
	r.appendix("intake CPU, cumulative", pprofTop(bin, cpuProf, "-top", "-cum"))
	r.appendix("intake allocations (bytes, whole run)", pprofTop(bin, allocProf, "-top", "-sample_index=alloc_space"))

	// Drain: prefill with the forwarder held, profile until empty.
	addrs, err := freeport.Addrs(3)
	if err != nil {
		return err
	}
	ddir := filepath.Join(dir, "drain")
	mkdir(ddir)
	dcpu, dalloc := filepath.Join(dir, "drain.cpu.prof"), filepath.Join(dir, "drain.allocs.prof")
	var dres map[string]float64
	_, err = r.runJSON("profile", filepath.Join(ddir, "profile.log"), &dres, 15*time.Minute, bin,
		"-queue", filepath.Join(ddir, "queue.db"), "-webhook", addrs[0], "-admin", addrs[1], "-broker", addrs[2],
		"-values="+strconv.FormatBool(r.values), "-retain="+strconv.FormatBool(r.retain),
		"-prefill", strconv.FormatUint(r.drainN, 10), "-cpuprofile", dcpu, "-memprofile", dalloc, "-exit-after-drain")
	if err != nil {
		return err
	}
	r.info(scen, fmt.Sprintf("drain %dk (harness, no live load)", r.drainN/1000), fmt.Sprintf("%.0f msg/s", dres["drain_per_s"]),
		fmt.Sprintf("%.0f commits, %.0f B and %.1f allocations per message; profile: %s", dres["commits"], dres["alloc_bytes_per_msg"], dres["mallocs_per_msg"], dcpu))
	r.appendix("drain CPU, flat", pprofTop(bin, dcpu, "-top"))
	r.appendix("drain CPU, cumulative", pprofTop(bin, dcpu, "-top", "-cum"))
	r.appendix("drain allocations (bytes, drain only)", pprofTop(bin, dalloc, "-top", "-sample_index=alloc_space", "-base", dalloc+".base"))
	return nil
}

func fetch(url, path string, timeout time.Duration) error {
	c := &http.Client{Timeout: timeout}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func pprofTop(bin, prof string, args ...string) string {
	args = append([]string{"tool", "pprof", "-nodecount=25"}, args...)
	args = append(args, bin, prof)
	cmd := exec.Command("go", args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Sprintf("go tool pprof: %v\n%s", err, out)
	}
	os.WriteFile(prof+strings.ReplaceAll(strings.Join(args[3:len(args)-2], ""), "-", "_")+".txt", out, 0o644)
	return string(out)
}

func (r *runner) appendix(title, text string) {
	r.appendices = append(r.appendices, "### "+title+"\n"+text)
}

// drainJetStream drains a backlog into an R=3 stream on a local 3-node
// JetStream cluster (bench/natscluster, in one process) through a
// `type: jetstream` sink: the figure is the gateway's delivery rate with
// every message acknowledged by a majority of the replicas.
func (r *runner) drainJetStream() error {
	const scen = "drain-jetstream"
	dir, queue, err := r.freshDir(scen)
	if err != nil {
		return err
	}
	urlsFile := filepath.Join(dir, "urls.txt")
	cl, err := startProc("natscluster", filepath.Join(dir, "natscluster.log"), nil, r.binary("natscluster"),
		"-dir", filepath.Join(dir, "nats"), "-out", urlsFile)
	if err != nil {
		return err
	}
	defer cl.stop(15 * time.Second)
	var urls []string
	for deadline := time.Now().Add(90 * time.Second); ; {
		if b, err := os.ReadFile(urlsFile); err == nil {
			urls = strings.Fields(string(b))
			break
		}
		if cl.exited() || time.Now().After(deadline) {
			return fmt.Errorf("natscluster not ready\n%s", tail(filepath.Join(dir, "natscluster.log"), 5))
		}
		time.Sleep(100 * time.Millisecond)
	}

	// A fifth of the drain backlog: an R=3 stream takes far longer per
	// message than the embedded broker.
	fr, err := r.fill(dir, queue, r.drainN/5, "central")
	if err != nil {
		return err
	}
	n := fr.Messages
	quoted := make([]string, len(urls))
	for i, u := range urls {
		quoted[i] = strconv.Quote(u)
	}
	sinks := fmt.Sprintf("  - {name: central, type: jetstream, urls: [%s], stream: {name: WITTRA, replicas: 3}}\n", strings.Join(quoted, ", "))
	t0 := time.Now()
	gw, err := r.startGateway("wittra-gateway", dir, queue, sinks, false)
	if err != nil {
		return err
	}
	defer gw.stop()
	ms := sampleMem(gw.p.pid(), 100*time.Millisecond)
	depthKey := `wittra_gateway_queue_depth_messages{sink="central"}`
	drained, lastDepth := gw.waitDepthZero(depthKey, t0, 2*r.drainTimeout)
	mem := ms.end()
	if drained == 0 {
		r.add(row{Scenario: scen, Measure: "drain to 3-node JetStream (R=3)", Value: fmt.Sprintf("not drained: depth %.0f after %s", lastDepth, 2*r.drainTimeout), Result: "MISSED"})
	} else {
		r.info(scen, "drain to 3-node JetStream (R=3)", fmt.Sprintf("%.0f msg/s", float64(n)/drained.Seconds()),
			fmt.Sprintf("%dk in %.1f s from gateway start, %d devices; the cluster runs on the same machine (no target)", n/1000, drained.Seconds(), 1000))
	}
	r.info("memory", fmt.Sprintf("RSS max, draining %dk to JetStream", n/1000), mib(mem.RSS), fmt.Sprintf("anon %s + file %s", mib(mem.Anon), mib(mem.File)))
	return gw.stop()
}
