// Command profile is the gateway's packages wired as cmd/gateway wires them
// (product MaxBatch), plus net/http/pprof on the admin listener, for
// profiling intake and drain:
//
//	# intake: serve, load it with wittra-load, fetch a CPU profile meanwhile
//	profile -queue /tmp/p/queue.db &
//	curl -o cpu.prof '127.0.0.1:19311/debug/pprof/profile?seconds=10'
//
//	# drain: queue N messages with the forwarder held, then profile the drain
//	profile -queue /tmp/p/queue.db -prefill 1000000 -cpuprofile drain.prof -memprofile drain.allocs -exit-after-drain
//
// With -prefill it prints one JSON line with the fill and drain figures.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"time"

	"wittra-gateway/bench/internal/harness"
	"wittra-gateway/internal/wmsg"
)

func main() {
	c := harness.NewCommand("profile", 0)
	fs := c.Flags()
	prefill := fs.Uint64("prefill", 0, "queue this many messages (forwarder held), then drain them")
	batch := fs.Int("prefill-batch", 1000, "messages per in-process request while prefilling")
	cpuProfile := fs.String("cpuprofile", "", "with -prefill: CPU profile of the drain to this file")
	memProfile := fs.String("memprofile", "", "with -prefill: allocations during the drain to this file (FILE.base holds the profile before; use pprof -base)")
	drainTimeout := fs.Duration("drain-timeout", 5*time.Minute, "give up waiting for the drain after this long")
	exitAfter := fs.Bool("exit-after-drain", false, "with -prefill: exit once drained instead of serving")
	c.Parse(os.Args[1:])
	c.Pprof = true
	c.HoldForwarder = *prefill > 0
	s, err := harness.Start(c.Options)
	c.Check("", err)
	if *prefill > 0 {
		if err := drain(s, *prefill, *batch, *cpuProfile, *memProfile, *drainTimeout); err != nil {
			fmt.Fprintln(os.Stderr, "profile:", err)
			s.Close()
			os.Exit(1)
		}
	}
	if !*exitAfter {
		harness.WaitSignal(c.MaxRun)
	}
	c.Check("close: ", s.Close())
}

func drain(s *harness.Server, n uint64, batch int, cpuFile, memFile string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	spec := wmsg.Spec{Run: wmsg.NewRunID(time.Now()), Project: "fill", Devices: 1000, Shape: wmsg.ShapeSmall}
	fill, err := harness.Fill(ctx, s.Receiver, spec, n, batch, 2)
	if err != nil {
		return err
	}
	before, _ := s.Stats()
	if memFile != "" {
		if err := writeAllocs(memFile + ".base"); err != nil {
			return err
		}
	}
	if cpuFile != "" {
		f, err := os.Create(cpuFile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
	}
	var ru0, ru1 runtime.MemStats
	runtime.ReadMemStats(&ru0)
	start := time.Now()
	s.StartForwarder()
	var st harness.Stats
	for {
		st, err = s.Stats()
		if err != nil || st.Depth == 0 || ctx.Err() != nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	took := time.Since(start)
	if cpuFile != "" {
		pprof.StopCPUProfile()
	}
	runtime.ReadMemStats(&ru1)
	if memFile != "" {
		if err := writeAllocs(memFile); err != nil {
			return err
		}
	}
	if err != nil {
		return err
	}
	if st.Depth != 0 {
		return fmt.Errorf("drain: %d still queued after %s", st.Depth, timeout)
	}
	json.NewEncoder(os.Stdout).Encode(map[string]any{
		"prefilled": fill.Messages, "prefill_s": fill.Seconds, "payload_bytes": fill.PayloadBytes,
		"file_bytes_full": before.FileBytes, "drain_s": took.Seconds(),
		"drain_per_s":         float64(fill.Messages) / took.Seconds(),
		"commits":             st.Commits - before.Commits,
		"alloc_bytes_per_msg": float64(ru1.TotalAlloc-ru0.TotalAlloc) / float64(fill.Messages),
		"mallocs_per_msg":     float64(ru1.Mallocs-ru0.Mallocs) / float64(fill.Messages),
	})
	return nil
}

func writeAllocs(path string) error {
	runtime.GC()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return pprof.Lookup("allocs").WriteTo(f, 0)
}
