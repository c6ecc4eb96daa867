package main

import (
	"bufio"
	"fmt"
	"image/color"
	"math"
	"os"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// soakSample is one reading of the gateway.
type soakSample struct {
	T                                 float64 // seconds since the run's start
	PID                               int
	RSSAnon, RSSFile, Heap            float64 // bytes
	Goroutines, FDs                   float64
	FileBytes, DedupKeys, QueueBytes  float64
	DepthPlant, Accepted, Refused503s float64
}

func sampleGateway(g *soakGateway, t0 time.Time, l *soakLoad) (soakSample, bool) {
	p := g.proc()
	if p == nil || p.exited() {
		return soakSample{}, false
	}
	pid := p.pid()
	mem, err := readMem(pid)
	if err != nil {
		return soakSample{}, false
	}
	m, err := metrics("http://" + g.admin + "/metrics")
	if err != nil {
		return soakSample{}, false
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return soakSample{}, false
	}
	return soakSample{
		T: time.Since(t0).Seconds(), PID: pid,
		RSSAnon: float64(mem.Anon), RSSFile: float64(mem.File),
		Heap:       m["go_memstats_heap_inuse_bytes"],
		Goroutines: m["go_goroutines"], FDs: float64(len(fds)),
		FileBytes: m["wittra_gateway_queue_file_bytes"], DedupKeys: m["wittra_gateway_queue_dedup_keys"],
		QueueBytes: m["wittra_gateway_queue_bytes"], DepthPlant: m[`wittra_gateway_queue_depth_messages{sink="plant"}`],
		Accepted: float64(l.accepted.Load()), Refused503s: float64(l.code503.Load()),
	}, true
}

// soakSeries is one judged resource and its bound: across the judged
// window, neither the fitted line nor the end-vs-start difference may rise
// more than max(Floor, Pct × start). A bound on the rise over the window,
// not on the slope alone, so a longer run resolves a smaller leak.
type soakSeries struct {
	Name, Unit string
	Get        func(soakSample) float64
	Floor      float64 // absolute allowance, in the series' unit
	Pct        float64 // relative allowance
	Scale      float64 // display divisor
}

var soakSeriesList = []soakSeries{
	{"RSS anon", "MiB", func(s soakSample) float64 { return s.RSSAnon }, 4 << 20, 0.10, 1 << 20},
	{"RSS file", "MiB", func(s soakSample) float64 { return s.RSSFile }, 4 << 20, 0.10, 1 << 20},
	{"Go heap in use", "MiB", func(s soakSample) float64 { return s.Heap }, 4 << 20, 0.10, 1 << 20},
	{"goroutines", "", func(s soakSample) float64 { return s.Goroutines }, 10, 0, 1},
	{"open fds", "", func(s soakSample) float64 { return s.FDs }, 5, 0, 1},
	// One bbolt growth step (16 MiB) is allowed: the file grows in steps.
	{"queue file", "MiB", func(s soakSample) float64 { return s.FileBytes }, 16 << 20, 0.10, 1 << 20},
	{"dedup keys", "k", func(s soakSample) float64 { return s.DedupKeys }, 1000, 0.25, 1000},
}

type seriesResult struct {
	s                       soakSeries
	start, end, slopePerMin float64
	fitRise, allowed        float64
	fitA, fitB, fromT, toT  float64
	judged, ok              bool
}

type soakResult struct {
	series        []seriesResult
	judgedFrom    float64
	judgedSpan    float64
	judged        bool
	acked, lost   uint64
	extUnique     uint64
	extDups       uint64
	extUnexpected uint64
	embReceived   uint64
	embDups       uint64
	embRetained   uint64
	embExpected   uint64
	embMissed     uint64
	windows       int
	events        []string
	outages       int
	killed        bool
	died          string // the gateway exited on its own
	failedSamples int    // readings the gateway did not answer (restart excluded)
	// incomplete: the run was long enough to judge trends but the samples
	// after warm-up cover too little of it (the gateway hung or died).
	incomplete bool
	load       *soakLoad
}

func analyseSoak(plan soakPlan, samples []soakSample, acks *ackLog, ext, emb *soakSub, windows []window, l *soakLoad) *soakResult {
	res := &soakResult{load: l, windows: len(windows)}
	// Judged: after warm-up, and only the last gateway process (a restart
	// resets every figure).
	var post []soakSample
	lastPID := 0
	if len(samples) > 0 {
		lastPID = samples[len(samples)-1].PID
	}
	for _, s := range samples {
		if s.T >= plan.warmup.Seconds() && s.T <= plan.dur.Seconds() && s.PID == lastPID {
			post = append(post, s)
		}
	}
	if len(post) >= 2 {
		res.judgedFrom = post[0].T
		res.judgedSpan = post[len(post)-1].T - post[0].T
	}
	res.judged = len(post) >= 10 && res.judgedSpan >= plan.minJudged.Seconds()
	if want := (plan.dur - plan.warmup).Seconds(); want >= plan.minJudged.Seconds() && res.judgedSpan < 0.75*want {
		res.incomplete = true
	}
	for _, ser := range soakSeriesList {
		sr := seriesResult{s: ser, judged: res.judged}
		if len(post) >= 2 {
			xs := make([]float64, len(post))
			ys := make([]float64, len(post))
			for i, s := range post {
				xs[i], ys[i] = s.T, ser.Get(s)
			}
			a, b := fitLine(xs, ys)
			sr.fitA, sr.fitB, sr.fromT, sr.toT = a, b, xs[0], xs[len(xs)-1]
			sr.slopePerMin = b * 60
			sr.fitRise = b * (sr.toT - sr.fromT)
			// Start and end: means of the first and last fifth, so one
			// sawtooth tooth (GC, sweep) does not decide.
			k := max(1, len(ys)/5)
			sr.start, sr.end = mean(ys[:k]), mean(ys[len(ys)-k:])
			sr.allowed = max(ser.Floor, ser.Pct*sr.start)
			sr.ok = sr.fitRise <= sr.allowed && sr.end-sr.start <= sr.allowed
		}
		res.series = append(res.series, sr)
	}

	// Messages: every acknowledged one must have reached a subscriber; the
	// mosquitto one holds a persistent session, so it should have them all.
	for i := range acks.acked {
		a := acks.acked[i].Load()
		got := ext.seen.n[i].Load()
		if a == 0 {
			if got > 0 {
				res.extUnexpected++
			}
			continue
		}
		res.acked++
		if got == 0 && emb.seen.n[i].Load() == 0 {
			res.lost++
		}
	}
	res.extUnique, res.extDups = ext.unique.Load(), ext.dups.Load()
	res.embReceived, res.embDups, res.embRetained = emb.received.Load(), emb.dups.Load(), emb.retained.Load()
	// The ordinary subscriber is only owed what was published while it was
	// subscribed: sent after its SUBACK, acknowledged 5 s before it left.
	const margin = 5000
	for _, w := range windows {
		from, to := acks.ms(w.from), acks.ms(w.to)
		if to < margin {
			continue
		}
		for i := range acks.acked {
			s, a := acks.sent[i].Load(), acks.acked[i].Load()
			if a != 0 && s >= from && a <= to-margin {
				res.embExpected++
				if emb.seen.n[i].Load() == 0 {
					res.embMissed++
				}
			}
		}
	}
	return res
}

// fitLine is the least-squares line y = a + b·x.
func fitLine(xs, ys []float64) (a, b float64) {
	n := float64(len(xs))
	mx, my := mean(xs), mean(ys)
	var sxy, sxx float64
	for i := range xs {
		sxy += (xs[i] - mx) * (ys[i] - my)
		sxx += (xs[i] - mx) * (xs[i] - mx)
	}
	if sxx == 0 || n < 2 {
		return my, 0
	}
	b = sxy / sxx
	return my - b*mx, b
}

func mean(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	var s float64
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}

func (r *runner) reportSoak(scen string, plan soakPlan, res *soakResult) {
	l := res.load
	judgedNote := fmt.Sprintf("judged %.0f s from %.0f s", res.judgedSpan, res.judgedFrom)
	switch {
	case res.incomplete:
		judgedNote = fmt.Sprintf("the samples after warm-up cover %.0f s of %.0f s", res.judgedSpan, (plan.dur - plan.warmup).Seconds())
	case !res.judged:
		judgedNote = fmt.Sprintf("NOT judged: the window after warm-up is %.0f s, < %.0f s (run longer)", res.judgedSpan, plan.minJudged.Seconds())
	}
	health := "answered every sample"
	if res.failedSamples > 0 {
		health = fmt.Sprintf("%d samples unanswered", res.failedSamples)
	}
	if res.died != "" {
		health = res.died
	}
	r.add(row{Scenario: scen, Measure: "gateway", Value: health, Target: "up and answering; judged window covered",
		Result: pass(res.died == "" && !res.incomplete && res.failedSamples <= 2), Note: judgedNote})
	for _, sr := range res.series {
		f := func(v float64) string {
			if sr.s.Unit == "" {
				return fmt.Sprintf("%.0f", v/sr.s.Scale)
			}
			return fmt.Sprintf("%.1f %s", v/sr.s.Scale, sr.s.Unit)
		}
		x := row{Scenario: scen, Measure: sr.s.Name,
			Value:  fmt.Sprintf("%s → %s, slope %s/min", f(sr.start), f(sr.end), f(sr.slopePerMin)),
			Num:    sr.end,
			Target: fmt.Sprintf("rise ≤ %s (fit %s)", f(sr.allowed), f(sr.fitRise)),
			Note:   judgedNote}
		if sr.judged {
			x.Result = pass(sr.ok)
		}
		r.add(x)
	}
	r.add(row{Scenario: scen, Measure: "messages lost", Value: fmt.Sprintf("%d of %d acknowledged", res.lost, res.acked),
		Num: float64(res.lost), Target: "0", Result: pass(res.lost == 0 && res.acked > 0),
		Note: fmt.Sprintf("mosquitto subscriber (persistent session): %d unique, %d duplicates, %d received but never acknowledged",
			res.extUnique, res.extDups, res.extUnexpected)})
	r.add(row{Scenario: scen, Measure: "embedded subscriber", Value: fmt.Sprintf("%d received, %d duplicates, %d retained copies", res.embReceived, res.embDups, res.embRetained),
		Note: fmt.Sprintf("%d stays; %d owed while subscribed (sent after SUBACK, acked ≥ 5 s before leaving), %d of them missed (the broker drops for a slow subscriber: broker_messages_dropped_total)",
			res.windows, res.embExpected, res.embMissed)})
	r.add(row{Scenario: scen, Measure: "intake", Value: fmt.Sprintf("%d accepted, %.0f msg/s", l.accepted.Load(), float64(l.accepted.Load())/plan.dur.Seconds()),
		Note: fmt.Sprintf("requests %d: 200 %d, 503 %d, other %d, transport errors %d; retries %d; pacer behind %d",
			l.requests.Load(), l.code200.Load(), l.code503.Load(), l.codeOther.Load(), l.transportErr.Load(), l.retries.Load(), l.behind.Load())})
	r.add(row{Scenario: scen, Measure: "dedup hits", Value: fmt.Sprintf("%d resent batches: %d duplicates, %d accepted again", l.resends.Load(), l.resendDups.Load(), l.reNew.Load()),
		Target: "0 accepted again", Result: pass(l.resends.Load() > 0 && l.reNew.Load() == 0)})
	r.add(row{Scenario: scen, Measure: "events", Value: fmt.Sprintf("%d mosquitto outages, SIGKILL+restart %v, %d queue-full replies (503)", res.outages, res.killed, l.code503.Load()),
		Target: "≥ 1 of each", Result: pass(res.outages >= 1 && res.killed && l.code503.Load() > 0)})
	for _, e := range res.events {
		fmt.Fprintln(os.Stderr, "soak event:", e)
	}
}

func writeSoakCSV(path string, samples []soakSample) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	fmt.Fprintln(w, "t_s,pid,rss_anon_bytes,rss_file_bytes,heap_inuse_bytes,goroutines,fds,queue_file_bytes,dedup_keys,queue_bytes,depth_plant,accepted_total,replies_503_total")
	for _, s := range samples {
		fmt.Fprintf(w, "%.1f,%d,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f\n", s.T, s.PID, s.RSSAnon, s.RSSFile, s.Heap,
			s.Goroutines, s.FDs, s.FileBytes, s.DedupKeys, s.QueueBytes, s.DepthPlant, s.Accepted, s.Refused503s)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// plotSoak draws one panel per series: the samples, the warm-up line and
// the fitted line over the judged window.
func plotSoak(path string, plan soakPlan, res *soakResult, samples []soakSample) error {
	const cols = 2
	rows := (len(res.series) + cols - 1) / cols
	plots := make([][]*plot.Plot, rows)
	for i := range plots {
		plots[i] = make([]*plot.Plot, cols)
	}
	for i, sr := range res.series {
		p := plot.New()
		title := sr.s.Name
		if sr.s.Unit != "" {
			title += " (" + sr.s.Unit + ")"
		}
		if sr.judged {
			title += " — " + map[bool]string{true: "ok", false: "RISES"}[sr.ok]
		}
		p.Title.Text = title
		p.X.Label.Text = "s"
		pts := make(plotter.XYs, len(samples))
		lo, hi := math.Inf(1), math.Inf(-1)
		for j, s := range samples {
			y := sr.s.Get(s) / sr.s.Scale
			pts[j] = plotter.XY{X: s.T, Y: y}
			lo, hi = min(lo, y), max(hi, y)
		}
		if len(samples) == 0 {
			lo, hi = 0, 1
		}
		line, err := plotter.NewLine(pts)
		if err != nil {
			return err
		}
		line.Color = color.RGBA{B: 200, A: 255}
		p.Add(line)
		warm, _ := plotter.NewLine(plotter.XYs{{X: plan.warmup.Seconds(), Y: lo}, {X: plan.warmup.Seconds(), Y: hi}})
		warm.Color = color.Gray{Y: 150}
		warm.Dashes = []vg.Length{vg.Points(3), vg.Points(3)}
		p.Add(warm)
		if sr.toT > sr.fromT {
			fit, _ := plotter.NewLine(plotter.XYs{
				{X: sr.fromT, Y: (sr.fitA + sr.fitB*sr.fromT) / sr.s.Scale},
				{X: sr.toT, Y: (sr.fitA + sr.fitB*sr.toT) / sr.s.Scale}})
			fit.Color = color.RGBA{R: 220, A: 255}
			fit.Width = vg.Points(1.5)
			p.Add(fit)
		}
		plots[i/cols][i%cols] = p
	}
	img := vgimg.New(vg.Points(900), vg.Points(float64(230*rows)))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: rows, Cols: cols, PadX: vg.Points(10), PadY: vg.Points(10),
		PadTop: vg.Points(5), PadBottom: vg.Points(5), PadLeft: vg.Points(5), PadRight: vg.Points(5)}
	canvases := plot.Align(plots, tiles, dc)
	for i := range plots {
		for j := range plots[i] {
			if plots[i][j] != nil {
				plots[i][j].Draw(canvases[i][j])
			}
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
