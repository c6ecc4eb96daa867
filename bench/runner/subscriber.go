package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// durableBacklog is the backlog the subscriber scenario replays.
const durableBacklog = 200_000

const durableSinkYAML = "  - {name: historian, type: subscriber, client_id: historian, topic_prefix: wittra, qos: 1}\n"

// subscriber: a durable subscriber (type subscriber) of the embedded
// broker. 1) bench/fill queues 200k messages for it offline; the gateway
// starts on a copy of that file; a consumer with its client id subscribes
// at QoS 1 and receives the backlog (replay rate, from the consumer's start
// to the last message). Three consumers: mosquitto_sub (C, libmosquitto), a
// paho Go client, and a lean Go client (leanmqtt.go: buffered reads, one
// write per read's PUBACKs), since the consumer's own speed bounds the
// figure.
// 2) On a fresh queue, wittra-load posts 1,000 msg/s and subscribes with
// that client id: end-to-end latency through the durable path.
func (r *runner) durable() error {
	const scen = "subscriber"
	dir := r.path("subscriber")
	os.RemoveAll(dir)
	if err := mkdir(dir); err != nil {
		return err
	}
	pristine := filepath.Join(dir, "pristine.db")
	fr, err := r.fill(dir, pristine, durableBacklog, "historian")
	if err != nil {
		return err
	}
	for _, consumer := range []string{"mosquitto_sub", "paho", "lean"} {
		if err := r.durableReplay(scen, filepath.Join(dir, consumer), pristine, consumer, fr.Messages); err != nil {
			return err
		}
	}

	ldir := filepath.Join(dir, "live")
	gw, err := r.startGateway("wittra-gateway", ldir, filepath.Join(ldir, "queue.db"), durableSinkYAML, true)
	if err != nil {
		return err
	}
	defer gw.stop()
	sub := []string{"-url", gw.url(), "-rate", "1000", "-c", "16", "-sub", "tcp://" + gw.broker, "-sub-client-id", "historian", "-sub-qos", "1"}
	if _, _, err := r.load(ldir, "warmup", 2*time.Second, sub...); err != nil {
		return err
	}
	cw := startCPU(gw.p.pid())
	t1 := time.Now()
	rep, loadCPU, err := r.load(ldir, "rate1000", r.latencyDur, sub...)
	win := time.Since(t1).Seconds()
	ours, others := cw.end(loadCPU / win)
	if err != nil {
		return err
	}
	if rep.Sub == nil {
		return fmt.Errorf("no subscriber report")
	}
	note := fmt.Sprintf("%.0f msg/s achieved; gateway %.2f cores, other processes %.2f", rep.AcceptedPS, ours[gw.p.pid()], others)
	r.check(scen, "durable e2e p50 at 1,000 msg/s", rep.Sub.E2E.P50, "%.2f ms", 2, false, "POST → PUBLISH at the durable client (QoS 1); "+note)
	r.check(scen, "durable e2e p99 at 1,000 msg/s", rep.Sub.E2E.P99, "%.2f ms", 10, false, rep.Sub.E2E.String())
	r.check(scen, "durable lost / duplicated", float64(rep.Sub.Lost+rep.Sub.Duplicated), "%.0f", 0, false,
		fmt.Sprintf("lost %d, duplicated %d of %d accepted", rep.Sub.Lost, rep.Sub.Duplicated, rep.Accepted))
	return gw.stop()
}

// lineCounter counts the lines mosquitto_sub prints (one per message).
type lineCounter struct{ n atomic.Uint64 }

func (l *lineCounter) Write(p []byte) (int, error) {
	l.n.Add(uint64(bytes.Count(p, []byte{'\n'})))
	return len(p), nil
}

// durableReplay starts the gateway on a copy of pristine (n messages
// queued for the durable sink) and measures how fast consumer receives
// them all.
func (r *runner) durableReplay(scen, dir, pristine, consumer string, n uint64) error {
	if err := mkdir(dir); err != nil {
		return err
	}
	queue := filepath.Join(dir, "queue.db")
	if err := copyFile(queue, pristine); err != nil {
		return err
	}
	gw, err := r.startGateway("wittra-gateway", dir, queue, durableSinkYAML, true)
	if err != nil {
		return err
	}
	defer gw.stop()
	cw := startCPU(gw.p.pid())
	ms := sampleMem(gw.p.pid(), 100*time.Millisecond)
	t0 := time.Now()
	var count func() uint64
	switch consumer {
	case "mosquitto_sub":
		host, port, _ := net.SplitHostPort(gw.broker)
		var lines lineCounter
		bin := "/usr/bin/mosquitto_sub"
		if p, err := exec.LookPath("mosquitto_sub"); err == nil {
			bin = p
		}
		p, err := startProc("mosquitto_sub", filepath.Join(dir, "mosquitto_sub.log"), &lines, bin,
			"-h", host, "-p", port, "-i", "historian", "-q", "1", "-t", "wittra/#", "-C", strconv.FormatUint(n, 10))
		if err != nil {
			r.add(row{Scenario: scen, Measure: "replay 200k, mosquitto_sub", Value: "not run: " + err.Error(), Result: "N/A"})
			return nil
		}
		defer p.stop(2 * time.Second)
		count = lines.n.Load
	case "lean":
		c, err := startLean(gw.broker, "historian", "wittra/#")
		if err != nil {
			return fmt.Errorf("lean consumer: %w", err)
		}
		defer c.stop()
		count = c.got.Load
	default:
		var got atomic.Uint64
		opts := paho.NewClientOptions().AddBroker("tcp://" + gw.broker).SetClientID("historian").
			SetCleanSession(true).SetAutoReconnect(false).SetOrderMatters(true).
			SetConnectTimeout(5 * time.Second).SetWriteTimeout(5 * time.Second)
		c := paho.NewClient(opts)
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			return fmt.Errorf("durable client connect: %v", tok.Error())
		}
		defer c.Disconnect(100)
		if tok := c.Subscribe("wittra/#", 1, func(paho.Client, paho.Message) { got.Add(1) }); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			return fmt.Errorf("durable client subscribe: %v", tok.Error())
		}
		count = got.Load
	}
	var took time.Duration
	deadline := time.Now().Add(r.drainTimeout)
	for time.Now().Before(deadline) && !gw.p.exited() {
		if count() >= n {
			took = time.Since(t0)
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	ours, others := cw.end(0)
	mem := ms.end()
	measure := fmt.Sprintf("replay %dk, QoS 1, %s", n/1000, consumer)
	if took == 0 {
		r.add(row{Scenario: scen, Measure: measure, Value: fmt.Sprintf("not done: %d of %d after %s", count(), n, r.drainTimeout), Target: "≥ 30000 msg/s", Result: "MISSED"})
		return nil
	}
	r.check(scen, measure, float64(n)/took.Seconds(), "%.0f msg/s", 30000, true,
		fmt.Sprintf("%dk in %.1f s from the consumer's start (window 1000); gateway %.2f cores, other processes %.2f; RSS max %s",
			n/1000, took.Seconds(), ours[gw.p.pid()], others, mib(mem.RSS)))
	return gw.stop()
}
