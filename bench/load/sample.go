package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ovlnfs/ovlnfs/bench/benchenv"
)

// Samples of the server process: from /proc (RSS, threads, open descriptors, CPU) and
// from its --pprof-listen endpoint (goroutines, heap).

const (
	phaseIdle = iota
	phaseLoad
	phaseAfter
)

type sample struct {
	at    time.Duration // since the load started (negative before)
	since time.Duration // phaseAfter: since the clients left
	phase int
	rss   int64 // bytes
	fds   int
	dirs  int            // descriptors of directories in the layers (the union's directory cache)
	kinds map[string]int // every descriptor by kind
	thr   int
	gor   int
	heap  int64 // HeapAlloc right after a GC (the live heap)
	inuse int64 // HeapInuse
	sys   int64 // memory obtained from the OS by the Go runtime
	cpu   float64
	err   string
}

type sampler struct {
	pid    int
	layers string // the directory holding the layers
	pprof  string // host:port
	hc     *http.Client
	t0     time.Time
}

func newSampler(pid int, pprof, layers string) *sampler {
	return &sampler{pid: pid, pprof: pprof, layers: layers, hc: &http.Client{Timeout: 10 * time.Second}}
}

func (s *sampler) get(path string) (string, error) {
	resp, err := s.hc.Get("http://" + s.pprof + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return string(b), nil
}

// goroutines is the "goroutine profile: total N" of /debug/pprof/goroutine?debug=1.
func (s *sampler) goroutines() (int, string, error) {
	text, err := s.get("/debug/pprof/goroutine?debug=1")
	if err != nil {
		return 0, "", err
	}
	line, _, _ := strings.Cut(text, "\n")
	n, err := strconv.Atoi(strings.TrimPrefix(line, "goroutine profile: total "))
	if err != nil {
		return 0, text, fmt.Errorf("goroutine profile header %q", line)
	}
	return n, text, nil
}

func (s *sampler) take(phase int) sample {
	x := sample{at: time.Since(s.t0), phase: phase}
	var errs []string
	note := func(err error) {
		if err != nil {
			errs = append(errs, err.Error())
		}
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.pid))
	note(err)
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmRSS":
			x.rss = n << 10
		case "Threads":
			x.thr = int(n)
		}
	}
	fdDir := fmt.Sprintf("/proc/%d/fd", s.pid)
	fds, err := os.ReadDir(fdDir)
	note(err)
	x.fds = len(fds)
	x.kinds = map[string]int{}
	for _, e := range fds {
		target, err := os.Readlink(filepath.Join(fdDir, e.Name()))
		switch {
		case err != nil:
			continue // closed meanwhile
		case !strings.HasPrefix(target, "/"):
			kind, _, _ := strings.Cut(target, ":") // socket:[…], pipe:[…], anon_inode:…
			if kind == "anon_inode" {
				kind = target
			}
			x.kinds[kind]++
		case strings.HasPrefix(target, s.layers+"/"):
			if fi, err := os.Stat(target); err == nil && fi.IsDir() {
				x.dirs++
				x.kinds["layer directory"]++
			} else {
				x.kinds["layer file"]++
			}
		default:
			x.kinds["other file"]++
		}
	}
	x.cpu = benchenv.CPUSeconds(s.pid)
	x.gor, _, err = s.goroutines()
	note(err)
	heap, err := s.get("/debug/pprof/heap?debug=1&gc=1")
	note(err)
	for _, line := range strings.Split(heap, "\n") {
		if !strings.HasPrefix(line, "# ") {
			continue
		}
		k, v, ok := strings.Cut(line[2:], " = ")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.Fields(v + " 0")[0], 10, 64)
		switch k {
		case "HeapAlloc":
			x.heap = n
		case "HeapInuse":
			x.inuse = n
		case "Sys":
			x.sys = n
		}
	}
	x.err = strings.Join(errs, "; ")
	return x
}

// metric is one figure followed over the samples, with what counts as bounded.
type metric struct {
	name string
	get  func(sample) float64
	unit string
	// a second half whose max exceeds the first half's by more than rel and abs grows
	rel, abs float64
	// after the clients left: at most this much above the idle baseline (<0: not checked)
	back float64
	// ceiling, where the server's structure gives one, is the most the figure can reach
	// with conns clients without anything leaking: within it, a second half above the
	// first is the noise of what happens to be in flight at the sampling instant
	ceiling func(idle float64, conns int) float64
}

var metrics = []metric{
	{name: "RSS", get: func(s sample) float64 { return float64(s.rss) }, unit: "MiB", rel: 0.10, abs: 16 << 20, back: -1},
	{name: "live heap (HeapAlloc after GC)", get: func(s sample) float64 { return float64(s.heap) }, unit: "MiB", rel: 0.10, abs: 8 << 20, back: -1},
	{name: "heap in use (HeapInuse)", get: func(s sample) float64 { return float64(s.inuse) }, unit: "MiB", rel: 0.10, abs: 16 << 20, back: -1},
	{name: "open descriptors", get: func(s sample) float64 { return float64(s.fds) }, rel: 0.10, abs: 16, back: -1},
	// the union keeps resolved directories (a descriptor per layer part) in a cache of
	// 1,024 directories, emptied by any change on the layers' filesystems
	{name: "… of directories in the layers", get: func(s sample) float64 { return float64(s.dirs) }, rel: 0.10, abs: 16, back: -1,
		ceiling: func(idle float64, conns int) float64 { return idle + 1024*3 }},
	{name: "… others (files, sockets, pipes)", get: func(s sample) float64 { return float64(s.fds - s.dirs) }, rel: 0.10, abs: 16, back: 4},
	// one reading each connection, one per call in flight (a client has one at a time)
	{name: "goroutines", get: func(s sample) float64 { return float64(s.gor) }, rel: 0.10, abs: 16, back: 4,
		ceiling: func(idle float64, conns int) float64 { return idle + 2*float64(conns) }},
	{name: "OS threads", get: func(s sample) float64 { return float64(s.thr) }, rel: 0.25, abs: 4, back: -1},
}

// figures of one metric over the run.
type figures struct {
	idle, start, max, end, max1, max2, after float64
	slope                                    float64 // per minute, least squares over the second half
	grows, notBack                           bool
	backAt                                   time.Duration // the first "after" sample back at the idle baseline
}

func analyse(m metric, ss []sample, conns int) figures {
	var idle, load, after []sample
	for _, s := range ss {
		if s.err != "" {
			continue
		}
		switch s.phase {
		case phaseIdle:
			idle = append(idle, s)
		case phaseLoad:
			load = append(load, s)
		case phaseAfter:
			after = append(after, s)
		}
	}
	var f figures
	if len(idle) > 0 {
		f.idle = m.get(idle[len(idle)-1])
	}
	if len(after) > 0 {
		f.after = m.get(after[len(after)-1])
	}
	f.backAt = -1
	for _, s := range after {
		if m.back >= 0 && m.get(s) <= f.idle+m.back {
			f.backAt = s.since
			break
		}
	}
	if len(load) == 0 {
		return f
	}
	vals := make([]float64, len(load))
	for i, s := range load {
		vals[i] = m.get(s)
	}
	f.start, f.end, f.max = vals[0], vals[len(vals)-1], slices.Max(vals)
	half := len(vals) / 2
	f.max1, f.max2 = slices.Max(vals[:max(half, 1)]), slices.Max(vals[half:])
	f.slope = slope(load[half:], vals[half:]) * 60
	f.grows = f.max2 > f.max1*(1+m.rel)+m.abs
	if m.ceiling != nil && f.max2 <= m.ceiling(f.idle, conns) {
		f.grows = false
	}
	f.notBack = m.back >= 0 && len(after) > 0 && f.after > f.idle+m.back
	return f
}

func slope(ss []sample, vals []float64) float64 {
	if len(ss) < 2 {
		return 0
	}
	var sx, sy, sxx, sxy float64
	n := float64(len(ss))
	for i, s := range ss {
		x := s.at.Seconds()
		sx += x
		sy += vals[i]
		sxx += x * x
		sxy += x * vals[i]
	}
	d := n*sxx - sx*sx
	if math.Abs(d) < 1e-9 {
		return 0
	}
	return (n*sxy - sx*sy) / d
}

// goroutineGroups summarises a debug=1 goroutine profile: the biggest groups of
// identical stacks, each with its count and its non-runtime frames (innermost first).
func goroutineGroups(text string, n int) []string {
	type group struct {
		count  int
		frames []string
	}
	var gs []group
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if c, _, ok := strings.Cut(line, " @ "); ok {
			if k, err := strconv.Atoi(c); err == nil {
				gs = append(gs, group{count: k})
			}
			continue
		}
		if strings.HasPrefix(line, "#\t") && len(gs) > 0 {
			f := strings.Fields(line)
			if len(f) >= 3 {
				fn := f[2]
				if i := strings.LastIndex(fn, "+0x"); i > 0 {
					fn = fn[:i]
				}
				g := &gs[len(gs)-1]
				if !strings.HasPrefix(fn, "runtime.") && !strings.HasPrefix(fn, "internal/") {
					g.frames = append(g.frames, fn)
				}
			}
		}
	}
	slices.SortStableFunc(gs, func(a, b group) int { return b.count - a.count })
	var out []string
	for i := 0; i < len(gs) && i < n; i++ {
		fr := gs[i].frames
		if len(fr) > 5 { // the innermost frames and the outermost ones
			fr = append(append(slices.Clip(fr[:3]), "…"), fr[len(fr)-2:]...)
		}
		out = append(out, fmt.Sprintf("%d × %s", gs[i].count, strings.Join(fr, " < ")))
	}
	return out
}
