package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"time"
)

// devices measures memory per device: the gateway with the default local
// sink (values and retain on) receives one full Wittra message (~600 B,
// a dozen value topics) from each of 1,000, then 10,000, then 100,000
// distinct devices. After each step the queue is drained, a settling load
// re-sends known devices (no new retained topics, but enough garbage for
// the collector to run a few times), and RSS plus the live heap of the
// last GC (GODEBUG=gctrace=1) are read.
func (r *runner) devices() error {
	const scen = "devices"
	dir := r.path("devices")
	os.RemoveAll(dir)
	os.Setenv("GODEBUG", "gctrace=1") // the gateway inherits it; the live heap per GC goes to its log
	gw, err := r.startGateway("wittra-gateway", dir, filepath.Join(dir, "queue.db"), r.localSinkYAML(), true)
	os.Unsetenv("GODEBUG")
	if err != nil {
		return err
	}
	defer gw.stop()

	time.Sleep(2 * time.Second)
	base, _ := readMem(gw.p.pid())
	baseLive := lastLiveHeap(gw.log)
	r.info(scen, "0 devices (ready)", mib(base.RSS), fmt.Sprintf("RSS; anon %s; live heap %s", mib(base.Anon), mib(baseLive)))

	steps := []int{1_000, 10_000, 100_000}
	done := 0
	for _, n := range steps {
		add := n - done
		if _, _, err := r.load(dir, fmt.Sprintf("devices-%d", n), 5*time.Minute, "-url", gw.url(), "-c", "16",
			"-shape", "full", "-devices", strconv.Itoa(add), "-device-base", strconv.Itoa(done), "-n", strconv.Itoa(add)); err != nil {
			return err
		}
		done = n
		if err := r.waitDrained(gw, "local", 5*time.Minute); err != nil {
			return err
		}
		// Settle: known devices again, so the GC runs with all n devices live.
		if _, _, err := r.load(dir, fmt.Sprintf("settle-%d", n), 4*time.Second, "-url", gw.url(), "-c", "8",
			"-shape", "full", "-devices", strconv.Itoa(min(n, 1000)), "-n", "20000"); err != nil {
			return err
		}
		if err := r.waitDrained(gw, "local", 5*time.Minute); err != nil {
			return err
		}
		time.Sleep(time.Second)
		m, _ := gw.metrics()
		mem, _ := readMem(gw.p.pid())
		live := lastLiveHeap(gw.log)
		topics := m["wittra_gateway_broker_retained_topics"]
		heapAlloc := int64(m["go_memstats_heap_alloc_bytes"])
		perLive := float64(live-baseLive) / float64(n)
		perAnon := float64(mem.Anon-base.Anon) / float64(n)
		note := fmt.Sprintf("anon %s + file %s; live heap %s (heap_alloc %s); %.0f retained topics, %.1f per device; per device: live heap %.0f B, anon RSS %.0f B",
			mib(mem.Anon), mib(mem.File), mib(live), mib(heapAlloc), topics, topics/float64(n), perLive, perAnon)
		switch n {
		case 10_000:
			r.check(scen, "RSS, 10,000 devices", float64(mem.RSS)/(1<<20), "%.1f MiB", 64, false, note)
		default:
			r.info(scen, fmt.Sprintf("RSS, %d devices", n), mib(mem.RSS), note)
		}
		if n == 100_000 {
			r.check(scen, "bytes per device, 100,000", perLive, "%.0f B", 2048, false,
				fmt.Sprintf("live heap growth ÷ devices (GC trace); anon RSS growth ÷ devices %.0f B", perAnon))
		}
	}
	if err := gw.stop(); err != nil {
		return err
	}
	return r.devicesChurn()
}

// devicesChurn shows the bound: with retain_max_topics at 120,000 (10,000
// devices of 12 topics), 100,000 distinct devices pass through; memory
// should stay where 10,000 devices put it, the rest evicted and counted.
func (r *runner) devicesChurn() error {
	const scen = "devices"
	const capTopics = 120_000
	dir := r.path("devices-churn")
	os.RemoveAll(dir)
	sink := fmt.Sprintf("  - {name: local, type: broker, topic_prefix: wittra, values: %v, retain: %v, retain_max_topics: %d}\n", r.values, r.retain, capTopics)
	gw, err := r.startGateway("wittra-gateway", dir, filepath.Join(dir, "queue.db"), sink, true)
	if err != nil {
		return err
	}
	defer gw.stop()
	var anon10k int64
	done := 0
	for _, n := range []int{10_000, 100_000} {
		if _, _, err := r.load(dir, fmt.Sprintf("churn-%d", n), 5*time.Minute, "-url", gw.url(), "-c", "16",
			"-shape", "full", "-devices", strconv.Itoa(n-done), "-device-base", strconv.Itoa(done), "-n", strconv.Itoa(n-done)); err != nil {
			return err
		}
		done = n
		if err := r.waitDrained(gw, "local", 5*time.Minute); err != nil {
			return err
		}
		time.Sleep(time.Second)
		m, _ := gw.metrics()
		mem, _ := readMem(gw.p.pid())
		note := fmt.Sprintf("retain_max_topics %d: %.0f topics held, %.0f evicted (counted in /metrics); RSS %s, heap_alloc %s",
			capTopics, m["wittra_gateway_broker_retained_topics"], m[`wittra_gateway_broker_retained_cleared_topics_total{reason="cap"}`],
			mib(mem.RSS), mib(int64(m["go_memstats_heap_alloc_bytes"])))
		if n == 10_000 {
			anon10k = mem.Anon
			r.info(scen, "churn: anon RSS, 10,000 devices", mib(mem.Anon), note)
			continue
		}
		r.check(scen, "churn: anon RSS, 100k ÷ 10k", float64(mem.Anon)/float64(anon10k), "%.2f×", 1.25, false,
			note+"; RSS beyond anon is file pages (bbolt: the dedup index of every payloadId)")
	}
	return gw.stop()
}

// waitDrained waits until the sink's queue depth is 0.
func (r *runner) waitDrained(s *server, sink string, d time.Duration) error {
	key := fmt.Sprintf(`wittra_gateway_queue_depth_messages{sink=%q}`, sink)
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if m, err := s.metrics(); err == nil && m[key] == 0 {
			return nil
		}
		if s.p.exited() {
			return fmt.Errorf("gateway exited\n%s", tail(s.log, 5))
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("queue of sink %s not drained after %s", sink, d)
}

// reGCTrace matches a GODEBUG=gctrace=1 line's heap figures:
// "start->end->live MB".
var reGCTrace = regexp.MustCompile(`^gc \d+ @.* (\d+)->(\d+)->(\d+) MB`)

// lastLiveHeap returns the live heap after the last GC in log (MiB
// resolution), or 0.
func lastLiveHeap(log string) int64 {
	f, err := os.Open(log)
	if err != nil {
		return 0
	}
	defer f.Close()
	var live int64
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if m := reGCTrace.FindStringSubmatch(sc.Text()); m != nil {
			v, _ := strconv.ParseInt(m[3], 10, 64)
			live = v << 20
		}
	}
	return live
}
