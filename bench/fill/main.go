// Command fill queues messages in a gateway queue file offline, as if they
// had been posted while every sink was down: it opens the file with the
// gateway's buffer settings and posts load-generator messages through a
// bridge.Receiver in-process (no forwarder runs), so the records are
// byte-for-byte what the webhook would have stored.
//
//	fill -queue /tmp/d/queue.db -n 1000000 -consumers local
//
// The consumer names must be the sink names of the gateway that will open
// the file (a cursor of an unknown name is removed at open, and a new sink
// starts with everything stored). It prints one JSON object.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"wittra-gateway/bench/internal/harness"
	"wittra-gateway/bridge"
	"wittra-gateway/buffer"
	"wittra-gateway/internal/wmsg"
)

func main() {
	path := flag.String("queue", "", "queue file (required; created if missing)")
	n := flag.Uint64("n", 1_000_000, "messages to queue")
	consumers := flag.String("consumers", harness.SinkName, "comma-separated sink names")
	batch := flag.Int("batch", 1000, "messages per in-process request (one commit each)")
	workers := flag.Int("workers", 2, "concurrent in-process requests")
	project := flag.String("project", "fill", "projectId of the messages")
	devices := flag.Int("devices", 1000, "distinct devices")
	shape := flag.String("shape", wmsg.ShapeSmall, "message shape: small | full")
	run := flag.String("run", "", "run id (default random)")
	timeout := flag.Duration("timeout", 10*time.Minute, "give up after this long")
	level := flag.String("log", "warn", "log level")
	flag.Parse()
	if *path == "" {
		fmt.Fprintln(os.Stderr, "fill: -queue is required")
		os.Exit(2)
	}
	if *run == "" {
		*run = wmsg.NewRunID(time.Now())
	}
	log := harness.Logger(*level)
	q, err := buffer.Open(harness.QueueConfig(*path, strings.Split(*consumers, ","), 0), log)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fill:", err)
		os.Exit(1)
	}
	recv := bridge.NewReceiver(bridge.ReceiverConfig{Routes: []bridge.Route{{Path: harness.RoutePath}}, MaxBody: 64 << 20}, q, log)
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	spec := wmsg.Spec{Run: *run, Project: *project, Devices: *devices, Shape: *shape}
	res, ferr := harness.Fill(ctx, recv, spec, *n, *batch, *workers)
	st, _ := q.Stats()
	if err := q.Close(); err != nil && ferr == nil {
		ferr = err
	}
	fi, _ := os.Stat(*path)
	out := map[string]any{
		"run": *run, "messages": res.Messages, "payload_bytes": res.PayloadBytes, "seconds": res.Seconds,
		"per_s": float64(res.Messages) / max(res.Seconds, 1e-9), "queue_bytes": st.Bytes, "queued": st.Messages,
	}
	if fi != nil {
		out["file_bytes"] = fi.Size()
	}
	json.NewEncoder(os.Stdout).Encode(out)
	if ferr != nil {
		fmt.Fprintln(os.Stderr, "fill:", ferr)
		os.Exit(1)
	}
}
