// Package procs sizes the Go scheduler (GOMAXPROCS) to the server's load.
//
// An NFS server mostly answers one short call after another: tens of
// microseconds of work, then a wait for the client. With several Ps the Go
// scheduler wakes an idle P for every goroutine made runnable, and that P
// spins, polls the network and sleeps again; sysmon, seeing Ps come and go,
// wakes every 20 microseconds. On the 2-CPU virtual machine the benchmarks
// run on, that took about 40% of the server's CPU in the toolchain walk
// (perf: findRunnable 22%, sysmon 12%, wakep 4.5%), and with GOMAXPROCS=1
// the same walk cost 12.7 s of CPU instead of 31.9 s and ran faster. One P is
// too few once the work of many clients needs more than a core, so the
// Controller starts with one and adds Ps while they are busy, up to the
// runtime's own choice (the CPUs or the cgroup's quota), and gives them
// back when the load falls.
//
// The signal is how long runnable goroutines wait for a P (the runtime's
// /sched/latencies histogram): with enough Ps a goroutine woken by the
// network runs at once; with too few, calls queue behind each other. The
// CPU time the runtime reports per class cannot serve: it is brought up to
// date only at garbage collections, and it counts a spinning P as busy, so
// it would keep the Ps that cost the most. Latency tells when Ps are
// missing, not when one is spare, so the Controller probes: a while after
// each change it tries half the Ps, and goes back (probing less often)
// when goroutines start to wait.
//
// Files:
//
//	procs.go  Controller: sampling, the sizing rule (sizer), applying it
package procs

import (
	"context"
	"log/slog"
	"runtime"
	"runtime/metrics"
	"time"
)

// Config configures a Controller.
type Config struct {
	// Max is the most Ps used; 0 means runtime.GOMAXPROCS(0) at New, the
	// runtime's choice from the CPUs and the cgroup's quota.
	Max int
	// Interval is how often the latencies are sampled; 0 means
	// DefaultInterval.
	Interval time.Duration
	// Logger receives a debug line per change; nil discards them.
	Logger *slog.Logger
}

// DefaultInterval is the sampling period: short enough that a burst of
// clients gets its Ps within a few tenths of a second, long enough to hold
// a hundred or more latency samples under load.
const DefaultInterval = 100 * time.Millisecond

// The sizing rule's constants.
const (
	// waitLimit: when a tenth of the goroutines made runnable in an
	// interval waited longer than this for a P, the Ps double. It is
	// several calls' worth of work (a call takes tens of microseconds):
	// calls are queueing, not just meeting.
	waitLimit = 250 * time.Microsecond
	// minSamples: an interval with fewer latency samples says nothing
	// (the server is idle or nearly so).
	minSamples = 20
	// firstProbe and lastProbe bound how long a count is kept before half
	// of it is tried: a probe that fails doubles the time, one that holds
	// resets it.
	firstProbe = 10  // intervals
	lastProbe  = 640 // intervals
	// probeIntervals: how long a probe is watched before it holds.
	probeIntervals = 3
)

// Controller adjusts GOMAXPROCS until its context ends, then restores the
// value it found. Only one should run in a process: GOMAXPROCS is the
// process's.
type Controller struct {
	max      int
	interval time.Duration
	log      *slog.Logger
	initial  int
	sample   []metrics.Sample
	counts   []uint64 // the histogram's counts at the last sample
}

// New returns a Controller; Run starts it.
func New(cfg Config) *Controller {
	c := &Controller{max: cfg.Max, interval: cfg.Interval, log: cfg.Logger, initial: runtime.GOMAXPROCS(0)}
	if c.max <= 0 {
		c.max = c.initial
	}
	if c.interval <= 0 {
		c.interval = DefaultInterval
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.sample = []metrics.Sample{{Name: "/sched/latencies:seconds"}}
	return c
}

// Run sets GOMAXPROCS to 1 and then to what the load needs, every
// interval, until ctx ends; then it restores the value found at New.
func (c *Controller) Run(ctx context.Context) {
	defer runtime.GOMAXPROCS(c.initial)
	s := newSizer(c.max)
	runtime.GOMAXPROCS(s.procs)
	c.waits() // the baseline
	ticker := time.NewTicker(c.interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		p90, n := c.waits()
		if procs := s.next(p90, n); procs != runtime.GOMAXPROCS(0) {
			c.log.Debug("gomaxprocs", "to", procs, "wait_p90", p90, "samples", n)
			runtime.GOMAXPROCS(procs)
		}
	}
}

// waits returns the 90th percentile of the scheduling latencies sampled
// since the last call, and how many there were.
func (c *Controller) waits() (time.Duration, uint64) {
	metrics.Read(c.sample)
	if c.sample[0].Value.Kind() != metrics.KindFloat64Histogram {
		return 0, 0 // a runtime without the metric: nothing is ever raised
	}
	h := c.sample[0].Value.Float64Histogram()
	delta := make([]uint64, len(h.Counts))
	var n uint64
	for i, v := range h.Counts {
		if i < len(c.counts) {
			v -= c.counts[i]
		}
		delta[i] = v
		n += v
	}
	c.counts = append(c.counts[:0], h.Counts...)
	return percentile(delta, h.Buckets, n, 0.9), n
}

// percentile is the upper bound of the bucket holding the q-th sample of
// n (buckets[i], buckets[i+1] bound counts[i]).
func percentile(counts []uint64, buckets []float64, n uint64, q float64) time.Duration {
	if n == 0 {
		return 0
	}
	var acc uint64
	for i, v := range counts {
		acc += v
		if float64(acc) >= q*float64(n) {
			upper := buckets[i+1]
			if upper > 3600 { // the last bucket is open: +Inf
				upper = buckets[i]
			}
			return time.Duration(upper * float64(time.Second))
		}
	}
	return 0
}

// sizer is the sizing rule, apart from the runtime so it can be tested: it
// is told each interval's latency and answers the count of Ps to use.
type sizer struct {
	procs, max int
	// since counts the intervals since the last change; probeAfter is how
	// many make a probe due.
	since, probeAfter int
	// probing: the count was halved from previous, and is being watched.
	probing  bool
	previous int
	// lowered: the last change was a probe that held; a raise within
	// probeAfter intervals of it counts as the probe failing after all.
	lowered bool
}

func newSizer(max int) *sizer {
	return &sizer{procs: 1, max: max, probeAfter: firstProbe}
}

// next takes one interval's 90th-percentile wait and sample count and
// returns the count to use.
func (s *sizer) next(p90 time.Duration, n uint64) int {
	s.since++
	waiting := n >= minSamples && p90 > waitLimit
	switch {
	case s.probing && waiting:
		// Too few: back to what worked, and try again later.
		s.procs, s.probing, s.since = s.previous, false, 0
		s.probeAfter = min(s.probeAfter*2, lastProbe)
	case s.probing && s.since >= probeIntervals:
		s.probing, s.lowered = false, true // the probe holds, so far
	case waiting && s.procs < s.max:
		if s.lowered && s.since < s.probeAfter {
			s.probeAfter = min(s.probeAfter*2, lastProbe)
		}
		s.procs, s.since, s.lowered = min(s.procs*2, s.max), 0, false
	case s.lowered && s.since >= s.probeAfter:
		// The lower count lasted: probe sooner next time.
		s.lowered, s.probeAfter = false, max(s.probeAfter/2, firstProbe)
	case !s.probing && s.procs > 1 && s.since >= s.probeAfter:
		s.previous, s.procs = s.procs, max(s.procs/2, 1)
		s.probing, s.since, s.lowered = true, 0, false
	}
	return s.procs
}
