package main

import (
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// drainLive is the drain scenario with the live load on the SAME devices as
// the backlog (project fill, devices 0..999, as bench/fill writes them),
// run once per sink `backlog` mode on copies of one filled queue: live
// end-to-end latency while draining, and the drain rate of live_first
// against in_order's. Twice: with a durable subscriber (type subscriber:
// the gateway paces the backlog by the consumer's acknowledgements, so
// what the consumer sees is what the gateway sends first), and with a
// plain broker sink (handover: the backlog goes as fast as the broker
// takes it, and a consumer slower than that reads live messages behind
// the broker's per-client queue, losing what overflows it).
func (r *runner) drainLive() error {
	const scen = "drain-live"
	dir := r.path(scen)
	os.RemoveAll(dir)
	if err := mkdir(dir); err != nil {
		return err
	}
	src := r.pristine() // left by the drain scenario when it ran first
	n := r.drainN
	if _, err := os.Stat(src); err != nil {
		src = filepath.Join(dir, "pristine.db")
		fr, err := r.fill(dir, src, r.drainN, "local")
		if err != nil {
			return err
		}
		n = fr.Messages
	}
	for _, kind := range []string{"subscriber", "broker"} {
		if err := r.drainLiveKind(scen, dir, src, n, kind); err != nil {
			return err
		}
	}
	return nil
}

func (r *runner) drainLiveKind(scen, dir, src string, n uint64, kind string) error {
	type result struct {
		rate, p99 float64
		note      string
	}
	res := map[string]result{}
	for _, mode := range []string{"in_order", "live_first"} {
		sub := filepath.Join(dir, kind+"-"+mode)
		if err := mkdir(sub); err != nil {
			return err
		}
		queue := filepath.Join(sub, "queue.db")
		if err := copyFile(queue, src); err != nil {
			return err
		}
		sink := fmt.Sprintf("  - {name: local, type: broker, topic_prefix: wittra, values: %v, retain: %v, backlog: %s}\n", r.values, r.retain, mode)
		var subArgs []string // the load's subscriber: an ordinary one, or the durable client
		if kind == "subscriber" {
			// values: false: the consumer subscribes to the data topics
			// only, and value topics nobody subscribed to would hold the
			// first half second after its subscription (the sink waits
			// that long for more subscriptions before skipping one).
			sink = fmt.Sprintf("  - {name: local, type: subscriber, client_id: dashboard, topic_prefix: wittra, values: false, qos: 1, backlog: %s}\n", mode)
			subArgs = []string{"-sub-client-id", "dashboard", "-sub-qos", "1"}
		}
		gw, err := r.startGateway("wittra-gateway", sub, queue, sink, true)
		if err != nil {
			return err
		}
		args := []string{"-url", gw.url(), "-rate", "1000", "-c", "16", "-project", "fill", "-devices", "1000", "-device-base", "0",
			"-sub", "tcp://" + gw.broker, "-sub-topic", "wittra/fill/+/data"}
		live, err := r.startLoad(sub, "live", r.drainTimeout, append(args, subArgs...)...)
		if err != nil {
			gw.stop()
			return err
		}
		cw := startCPU(gw.p.pid())
		// Drained: fewer than 100 messages left for the sink (the live
		// load keeps a few in flight; in_order's depth never reaches 0
		// under it for long).
		drainedAt, last := time.Duration(0), -1.0
		for deadline := time.Now().Add(r.drainTimeout); time.Now().Before(deadline) && !gw.p.exited(); time.Sleep(100 * time.Millisecond) {
			if m, err := gw.metrics(); err == nil {
				if last = m[`wittra_gateway_queue_depth_messages{sink="local"}`]; last < 100 {
					drainedAt = time.Since(gw.p.start)
					break
				}
			}
		}
		ours, others := cw.end(0)
		liveRep, lerr := live.finish()
		if err := gw.stop(); err != nil {
			r.note("%s: gateway stop: %v", scen, err)
		}
		if lerr != nil {
			return lerr
		}
		if drainedAt == 0 {
			r.add(row{Scenario: scen, Measure: kind + ", " + mode + ": drain", Value: fmt.Sprintf("not drained: depth %.0f after %s", last, r.drainTimeout), Result: "MISSED"})
			continue
		}
		x := result{rate: float64(n) / drainedAt.Seconds()}
		x.note = fmt.Sprintf("%dk in %.1f s from exec; gateway %.2f cores, others %.2f", n/1000, drainedAt.Seconds(), ours[gw.p.pid()], others)
		if liveRep.Sub != nil {
			x.p99 = liveRep.Sub.E2E.P99
			x.note += fmt.Sprintf("; live %s; lost %d, dup %d of %d", liveRep.Sub.E2E.String(), liveRep.Sub.Lost, liveRep.Sub.Duplicated, liveRep.Accepted)
		}
		res[mode] = x
		r.info(scen, kind+", "+mode+": drain with live 1,000/s on the same devices", fmt.Sprintf("%.0f msg/s", x.rate), x.note)
	}
	io, lf := res["in_order"], res["live_first"]
	switch {
	case lf.rate == 0:
	case kind == "subscriber":
		r.check(scen, kind+", live_first: live 1,000/s e2e p99 while draining", lf.p99, "%.1f ms", 100, false,
			fmt.Sprintf("in_order: %.1f ms (live waits behind the backlog)", io.p99))
	default:
		// Not judged: a plain subscriber reads live messages behind the
		// broker's queue for it, which the gateway does not pace.
		r.info(scen, kind+", live_first: live 1,000/s e2e p99 while draining", fmt.Sprintf("%.1f ms", lf.p99),
			fmt.Sprintf("in_order: %.1f ms; behind the broker's per-client queue (see README)", io.p99))
	}
	if lf.rate > 0 && io.rate > 0 {
		r.check(scen, kind+", live_first drain rate ÷ in_order's", 100*lf.rate/io.rate, "%.0f %%", 80, true,
			fmt.Sprintf("%.0f vs %.0f msg/s", lf.rate, io.rate))
	}
	return nil
}
