// Command runner runs the gateway's benchmark scenarios against the built
// binaries and prints one table of figures against their targets. It is
// what bench/bench.sh calls after building; see bench/README.md.
//
//	runner -bin DIR -work DIR [-quick] [scenario ...]
//
// Scenarios: intake (with the per-message-fsync baseline), latency, drain
// (includes start-up, memory with the backlog and disk), drain-mqtt (the
// external-broker drain to mosquitto), profile (CPU and allocation
// profiles of intake and drain), devices (memory per device: RSS and heap
// after 1,000, 10,000 and 100,000 distinct devices), soak (make soak: a
// bounded long run, soak*.go). "all" (the default) is every scenario
// except profile and soak. Every child process is killed when the runner
// exits.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

type runner struct {
	bin    string // directory with wittra-gateway, wittra-load, baseline, profile, fill, qstat
	work   string
	quick  bool
	values bool
	retain bool
	out    io.Writer
	rows   []row
	notes  []string
	// appendices are printed after the table (profiles).
	appendices []string
	emptyGW    *memInfo // RSS of a gateway started on an empty queue, once known

	// Sizes, set from -quick.
	intakeDur, baselineDur, latencyDur time.Duration
	drainN                             uint64
	drainTimeout                       time.Duration

	// The soak scenario (soak.go): duration, offered rate, output dir.
	soakDur  time.Duration
	soakRate float64
	soakOut  string
}

// row is one line of the result table.
type row struct {
	Scenario string  `json:"scenario"`
	Measure  string  `json:"measure"`
	Value    string  `json:"value"`
	Num      float64 `json:"num"`
	Target   string  `json:"target,omitempty"`
	Result   string  `json:"result,omitempty"` // MET | MISSED | "" (information)
	Note     string  `json:"note,omitempty"`
}

func main() {
	os.Exit(mainErr())
}

func mainErr() int {
	r := &runner{out: os.Stdout}
	flag.StringVar(&r.bin, "bin", "", "directory of the built binaries (required)")
	flag.StringVar(&r.work, "work", "", "scratch directory (required; queue files and logs go here)")
	flag.BoolVar(&r.quick, "quick", false, "smaller counts and shorter runs, for iteration")
	flag.BoolVar(&r.values, "values", true, "sink values: (product default true)")
	flag.BoolVar(&r.retain, "retain", true, "sink retain: (product default true)")
	jsonOut := flag.String("json", "", "also write the rows as JSON to this file")
	maxTotal := flag.Duration("max-total", 20*time.Minute, "abort everything after this long (a soak adds its own -soak)")
	flag.DurationVar(&r.soakDur, "soak", 10*time.Minute, "soak scenario: how long the intake runs")
	flag.Float64Var(&r.soakRate, "soak-rate", float64(1000*runtime.NumCPU()), "soak scenario: messages/s offered")
	flag.StringVar(&r.soakOut, "soak-out", "dist/soak", "soak scenario: directory for samples.csv and soak.png")
	flag.Parse()
	if r.bin == "" || r.work == "" {
		fmt.Fprintln(os.Stderr, "runner: -bin and -work are required")
		return 2
	}
	r.sizes()
	scen := flag.Args()
	if len(scen) == 0 {
		scen = []string{"all"}
	}
	plan, err := expand(scen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "runner:", err)
		return 2
	}

	if slices.Contains(plan, "soak") {
		*maxTotal += r.soakDur + 10*time.Minute
	}
	// Whatever happens, no child outlives the runner.
	defer killAll()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		select {
		case s := <-sigs:
			fmt.Fprintf(os.Stderr, "runner: %v: killing children\n", s)
		case <-time.After(*maxTotal):
			fmt.Fprintf(os.Stderr, "runner: -max-total %s elapsed: killing children\n", *maxTotal)
		}
		killAll()
		os.Exit(130)
	}()

	started := time.Now()
	header := machine()
	fmt.Fprintln(os.Stderr, header)
	failed := false
	scenarios := map[string]func() error{
		"intake": r.intake, "latency": r.latency, "drain": r.drain, "drain-mqtt": r.drainMQTT,
		"drain-live": r.drainLive, "drain-jetstream": r.drainJetStream, "subscriber": r.durable,
		"profile": r.profile, "devices": r.devices, "soak": r.soak,
	}
	for _, s := range plan {
		fmt.Fprintf(os.Stderr, "\n=== %s\n", s)
		t0 := time.Now()
		var err error
		if run := scenarios[s]; run != nil {
			err = run()
		}
		if err != nil {
			failed = true
			r.add(row{Scenario: s, Measure: "scenario error", Value: err.Error(), Result: "ERROR"})
			fmt.Fprintf(os.Stderr, "%s: %v\n", s, err)
		}
		fmt.Fprintf(os.Stderr, "=== %s done in %.0f s\n", s, time.Since(t0).Seconds())
	}
	r.table(header, time.Since(started))
	if *jsonOut != "" {
		b, _ := json.MarshalIndent(map[string]any{"machine": header, "quick": r.quick, "rows": r.rows, "notes": r.notes}, "", "  ")
		os.WriteFile(*jsonOut, b, 0o644)
	}
	if failed {
		return 1
	}
	return 0
}

func (r *runner) sizes() {
	if r.quick {
		r.intakeDur, r.baselineDur, r.latencyDur = 5*time.Second, 4*time.Second, 10*time.Second
		r.drainN, r.drainTimeout = 200_000, 90*time.Second
		return
	}
	r.intakeDur, r.baselineDur, r.latencyDur = 15*time.Second, 10*time.Second, 30*time.Second
	r.drainN, r.drainTimeout = 1_000_000, 180*time.Second
}

var allScenarios = []string{"intake", "latency", "drain", "drain-live", "drain-mqtt", "drain-jetstream", "subscriber", "devices"}

func expand(names []string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	add := func(s string) {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	for _, n := range names {
		switch n {
		case "all":
			for _, s := range allScenarios {
				add(s)
			}
		case "intake", "baseline":
			add("intake")
		case "latency":
			add("latency")
		case "memory":
			add("intake")
			add("drain")
		case "drain", "startup", "disk":
			add("drain")
		case "drain-mqtt", "mqtt":
			add("drain-mqtt")
		case "drain-live", "live-first":
			add("drain-live")
		case "drain-jetstream", "jetstream":
			add("drain-jetstream")
		case "subscriber", "durable":
			add("subscriber")
		case "profile":
			add("profile")
		case "devices", "memory-per-device":
			add("devices")
		case "soak":
			add("soak")
		default:
			return nil, fmt.Errorf("unknown scenario %q (intake latency drain drain-live drain-mqtt drain-jetstream subscriber devices profile soak; aliases baseline memory memory-per-device startup disk mqtt jetstream durable all)", n)
		}
	}
	// Keep a stable order.
	order := map[string]int{"intake": 0, "latency": 1, "drain": 2, "drain-live": 2, "drain-mqtt": 3, "drain-jetstream": 4, "subscriber": 5, "profile": 6, "devices": 7, "soak": 8}
	sort.SliceStable(out, func(i, j int) bool { return order[out[i]] < order[out[j]] })
	return out, nil
}

func (r *runner) add(x row) {
	r.rows = append(r.rows, x)
	res := x.Result
	if res != "" {
		res = " [" + res + "]"
	}
	fmt.Fprintf(os.Stderr, "  %-28s %s%s %s\n", x.Measure, x.Value, res, x.Note)
}

// check adds a row with a numeric target: atLeast says which side passes.
func (r *runner) check(scen, measure string, v float64, format string, target float64, atLeast bool, note string) {
	x := row{Scenario: scen, Measure: measure, Num: v, Value: fmt.Sprintf(format, v), Note: note}
	if atLeast {
		x.Target = "≥ " + fmt.Sprintf(format, target)
		x.Result = pass(v >= target)
	} else {
		x.Target = "≤ " + fmt.Sprintf(format, target)
		x.Result = pass(v <= target)
	}
	r.add(x)
}

func (r *runner) info(scen, measure, value, note string) {
	r.add(row{Scenario: scen, Measure: measure, Value: value, Note: note})
}

func pass(ok bool) string {
	if ok {
		return "MET"
	}
	return "MISSED"
}

func (r *runner) table(header string, took time.Duration) {
	w := r.out
	fmt.Fprintf(w, "\nwittra-gateway benchmark — %s\n", header)
	mode := "full"
	if r.quick {
		mode = "quick (-quick: smaller counts; targets are stated for the full run)"
	}
	fmt.Fprintf(w, "mode: %s; sink local: type broker, values %v, retain %v; total %.0f s\n\n", mode, r.values, r.retain, took.Seconds())
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tmeasure\tvalue\ttarget\tresult\tnote")
	fmt.Fprintln(tw, "--------\t-------\t-----\t------\t------\t----")
	for _, x := range r.rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", x.Scenario, x.Measure, x.Value, x.Target, x.Result, x.Note)
	}
	tw.Flush()
	met, missed := 0, 0
	for _, x := range r.rows {
		switch x.Result {
		case "MET":
			met++
		case "MISSED", "ERROR":
			missed++
		}
	}
	fmt.Fprintf(w, "\ntargets met: %d, missed or errors: %d\n", met, missed)
	for _, n := range r.notes {
		fmt.Fprintln(w, "note:", n)
	}
	for _, a := range r.appendices {
		fmt.Fprintf(w, "\n%s\n", a)
	}
}

func machine() string {
	host, _ := os.Hostname()
	model := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "model name") {
				_, model, _ = strings.Cut(l, ":")
				model = strings.TrimSpace(model)
				break
			}
		}
	}
	var memTotal string
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		l, _, _ := strings.Cut(string(b), "\n")
		memTotal = strings.Join(strings.Fields(l)[1:], " ")
	}
	kernel := ""
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	commit := ""
	if out, err := exec.Command("git", "describe", "--always", "--dirty").Output(); err == nil {
		commit = strings.TrimSpace(string(out))
	}
	load := ""
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		load = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	return fmt.Sprintf("%s UTC; host %s, %d CPU (%s), %s RAM, Linux %s, %s; commit %s; load avg at start %s",
		time.Now().UTC().Format("2006-01-02 15:04"), host, runtime.NumCPU(), model, memTotal, kernel,
		runtime.Version(), commit, load)
}

func (r *runner) path(parts ...string) string {
	return filepath.Join(append([]string{r.work}, parts...)...)
}

// freshDir empties and makes the scenario directory name; queue is the
// path of the scenario's queue file in it.
func (r *runner) freshDir(name string) (dir, queue string, err error) {
	dir = r.path(name)
	os.RemoveAll(dir)
	return dir, filepath.Join(dir, "queue.db"), mkdir(dir)
}

func (r *runner) binary(name string) string { return filepath.Join(r.bin, name) }

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func (r *runner) note(format string, args ...any) {
	r.notes = append(r.notes, fmt.Sprintf(format, args...))
}

// runJSON runs a binary to completion (bounded) and decodes its stdout.
func (r *runner) runJSON(name, logPath string, v any, timeout time.Duration, bin string, args ...string) (*os.ProcessState, error) {
	var out bytes.Buffer
	p, err := startProc(name, logPath, &out, bin, args...)
	if err != nil {
		return nil, err
	}
	if err := p.wait(timeout); err != nil {
		return p.cmd.ProcessState, fmt.Errorf("%s: %v\n%s", name, err, tail(logPath, 5))
	}
	if err := json.Unmarshal(out.Bytes(), v); err != nil {
		return p.cmd.ProcessState, fmt.Errorf("%s: decode output: %v: %q", name, err, out.String())
	}
	return p.cmd.ProcessState, nil
}

func cpuSeconds(ps *os.ProcessState) float64 {
	if ps == nil {
		return 0
	}
	return (ps.UserTime() + ps.SystemTime()).Seconds()
}

func mkdir(p string) error { return os.MkdirAll(p, 0o755) }
