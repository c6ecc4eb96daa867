package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a child process the runner started. Every one is registered so
// that an early exit (error, signal) still kills it.
type proc struct {
	name  string
	cmd   *exec.Cmd
	log   *os.File
	start time.Time
	done  chan struct{}
	err   error
}

var (
	procsMu sync.Mutex
	procs   = map[*proc]struct{}{}
)

// startProc starts bin with args; stdout goes to stdout (nil: the log),
// stderr to logPath.
func startProc(name, logPath string, stdout io.Writer, bin string, args ...string) (*proc, error) {
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stderr = lf
	cmd.Stdout = lf
	if stdout != nil {
		cmd.Stdout = stdout
	}
	// Own process group; killed with the runner if it dies first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	p := &proc{name: name, cmd: cmd, log: lf, done: make(chan struct{})}
	p.start = time.Now()
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	procsMu.Lock()
	procs[p] = struct{}{}
	procsMu.Unlock()
	go func() {
		p.err = cmd.Wait()
		lf.Close()
		close(p.done)
		procsMu.Lock()
		delete(procs, p)
		procsMu.Unlock()
	}()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig to the process (not its group: the gateway handles
// SIGTERM itself).
func (p *proc) signal(sig syscall.Signal) {
	if !p.exited() {
		_ = p.cmd.Process.Signal(sig)
	}
}

// stop asks politely (SIGTERM), then kills the group after grace.
func (p *proc) stop(grace time.Duration) error {
	p.signal(syscall.SIGTERM)
	return p.waitOrKill(grace, "did not stop within")
}

// wait waits for the process to exit on its own, at most d, then kills it.
func (p *proc) wait(d time.Duration) error { return p.waitOrKill(d, "still running after") }

// waitOrKill waits up to d for the exit, then kills the group and says
// why (late).
func (p *proc) waitOrKill(d time.Duration, late string) error {
	select {
	case <-p.done:
		return p.err
	case <-time.After(d):
		_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
		<-p.done
		return fmt.Errorf("%s %s %s: killed", p.name, late, d)
	}
}

// killAll kills every child still running (runner exit path).
func killAll() {
	procsMu.Lock()
	list := make([]*proc, 0, len(procs))
	for p := range procs {
		list = append(list, p)
	}
	procsMu.Unlock()
	for _, p := range list {
		_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
	}
	for _, p := range list {
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
	}
}

// tail returns the last n lines of the process log.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

var httpc = &http.Client{Timeout: 3 * time.Second}

// waitReady polls url until it answers 200, the process exits, or d
// passes. It returns the time from the process start.
func waitReady(p *proc, url string, d time.Duration) (time.Duration, error) {
	c := &http.Client{Timeout: 500 * time.Millisecond}
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if p.exited() {
			return 0, fmt.Errorf("%s exited: %v", p.name, p.err)
		}
		resp, err := c.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(p.start), nil
			}
		}
		time.Sleep(2 * time.Millisecond)
	}
	return 0, fmt.Errorf("%s not ready after %s", p.name, d)
}

// metrics scrapes a Prometheus text endpoint into name{labels} → value.
func metrics(url string) (map[string]float64, error) {
	resp, err := httpc.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// memInfo is a process's memory from /proc/<pid>/status, in bytes.
type memInfo struct {
	RSS, HWM, Anon, File int64
}

func readMem(pid int) (memInfo, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return memInfo{}, err
	}
	var m memInfo
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) < 1 {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		n *= 1024
		switch k {
		case "VmRSS":
			m.RSS = n
		case "VmHWM":
			m.HWM = n
		case "RssAnon":
			m.Anon = n
		case "RssFile":
			m.File = n
		}
	}
	return m, nil
}

// memSampler records the largest RSS (and its parts) of a process.
type memSampler struct {
	stop chan struct{}
	done chan struct{}
	max  memInfo
}

func sampleMem(pid int, every time.Duration) *memSampler {
	s := &memSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if m, err := readMem(pid); err == nil {
				s.max.RSS = max(s.max.RSS, m.RSS)
				s.max.HWM = max(s.max.HWM, m.HWM)
				s.max.Anon = max(s.max.Anon, m.Anon)
				s.max.File = max(s.max.File, m.File)
			}
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *memSampler) end() memInfo {
	close(s.stop)
	<-s.done
	return s.max
}

// cpuTicks is a process's user+system time in clock ticks (100 Hz).
func cpuTicks(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command (which may hold spaces) start after ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	s, _ := strconv.ParseInt(f[12], 10, 64)
	return u + s
}

// systemBusyTicks is the machine's busy CPU time from /proc/stat.
func systemBusyTicks() int64 {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	var busy int64
	for i, s := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		v, _ := strconv.ParseInt(s, 10, 64)
		busy += v
	}
	return busy
}

// cpuWindow measures CPU use of our processes and of everything else.
type cpuWindow struct {
	start   time.Time
	sys     int64
	ours    map[int]int64
	oursPID []int
}

func startCPU(pids ...int) *cpuWindow {
	w := &cpuWindow{start: time.Now(), sys: systemBusyTicks(), ours: map[int]int64{}, oursPID: pids}
	for _, p := range pids {
		w.ours[p] = cpuTicks(p)
	}
	return w
}

// end returns the cores used by each of our processes and by the rest of
// the machine (other tests, other users) over the window. A process that
// exited during the window is read as 0: pass the still-running ones.
func (w *cpuWindow) end(extraOurs float64) (ours map[int]float64, others float64) {
	secs := time.Since(w.start).Seconds() * 100
	ours = map[int]float64{}
	total := float64(systemBusyTicks()-w.sys) / secs
	sum := extraOurs
	for _, p := range w.oursPID {
		c := float64(cpuTicks(p)-w.ours[p]) / secs
		ours[p] = c
		sum += c
	}
	return ours, max(0, total-sum)
}

// seconds is how long the window has been open.
func (w *cpuWindow) seconds() float64 { return time.Since(w.start).Seconds() }

// writeBytes is what a process caused to be written to storage so far
// (/proc/<pid>/io write_bytes: data and fsync'd pages, not the page cache).
func writeBytes(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "write_bytes: "); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}
