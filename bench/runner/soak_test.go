package main

import (
	"math"
	"testing"
	"time"
)

func TestFitLine(t *testing.T) {
	xs := []float64{0, 1, 2, 3, 4}
	ys := []float64{3, 5, 7, 9, 11}
	a, b := fitLine(xs, ys)
	if math.Abs(a-3) > 1e-9 || math.Abs(b-2) > 1e-9 {
		t.Fatalf("fit = %v + %v·x, want 3 + 2·x", a, b)
	}
}

// The judging rule: a sawtooth that stays level passes, the same sawtooth
// on a slow rise fails, and a restart's samples (another pid) or samples
// before warm-up do not count.
func TestAnalyseSoakJudgesTrends(t *testing.T) {
	plan := soakPlan{dur: 10 * time.Minute, warmup: 2 * time.Minute, minJudged: time.Minute}
	mk := func(rise float64) []soakSample {
		var out []soakSample
		for i := 0; i <= 600; i += 5 {
			tooth := float64(i%30) / 30 * (8 << 20) // 8 MiB GC-like sawtooth
			s := soakSample{T: float64(i), PID: 2, RSSAnon: 60<<20 + tooth + rise*float64(i)}
			if i < 60 {
				s.PID, s.RSSAnon = 1, 1<<30 // before the restart: ignored
			}
			out = append(out, s)
		}
		return out
	}
	ack := newAckLog(0, time.Now())
	sub := newSoakSub("x", "run00000", 0, time.Now())
	rssOf := func(samples []soakSample) seriesResult {
		res := analyseSoak(plan, samples, ack, sub, sub, nil, &soakLoad{})
		if !res.judged {
			t.Fatalf("not judged: span %.0f s", res.judgedSpan)
		}
		return res.series[0]
	}
	if r := rssOf(mk(0)); !r.ok {
		t.Errorf("level sawtooth judged rising: fit rise %.0f, end-start %.0f, allowed %.0f", r.fitRise, r.end-r.start, r.allowed)
	}
	// 32 KiB/s ≈ 1.9 MiB/min: 15 MiB over the 8-minute window.
	if r := rssOf(mk(32 << 10)); r.ok {
		t.Errorf("rise of 1.9 MiB/min passed: fit rise %.0f, allowed %.0f", r.fitRise, r.allowed)
	}
	// Samples that stop early (the gateway died or hung) are not a pass.
	short := mk(0)[:30] // up to 145 s: 25 s after warm-up
	if res := analyseSoak(plan, short, ack, sub, sub, nil, &soakLoad{}); res.judged || !res.incomplete {
		t.Errorf("samples ending at 145 s of 600: judged %v, incomplete %v; want not judged, incomplete", res.judged, res.incomplete)
	}
	// A run too short to judge is not incomplete.
	quick := soakPlan{dur: 45 * time.Second, warmup: 30 * time.Second, minJudged: time.Minute}
	if res := analyseSoak(quick, mk(0)[:10], ack, sub, sub, nil, &soakLoad{}); res.judged || res.incomplete {
		t.Errorf("45 s run: judged %v, incomplete %v; want neither", res.judged, res.incomplete)
	}
}
