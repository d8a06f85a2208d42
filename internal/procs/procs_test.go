package procs

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"
)

const (
	calm = 10 * time.Microsecond  // an interval where nothing waits
	busy = 800 * time.Microsecond // one where calls queue
)

// feed gives the sizer k intervals of one kind and returns the counts it chose.
func feed(s *sizer, k int, p90 time.Duration, n uint64) []int {
	var out []int
	for range k {
		out = append(out, s.next(p90, n))
	}
	return out
}

func TestSizerStaysAtOneWhenNothingWaits(t *testing.T) {
	s := newSizer(8)
	for _, p := range feed(s, 1000, calm, 500) {
		if p != 1 {
			t.Fatalf("calm intervals raised the count to %d", p)
		}
	}
	// Intervals with a few long waits but too few samples say nothing.
	if p := feed(s, 50, busy, minSamples-1); p[len(p)-1] != 1 {
		t.Fatalf("a nearly idle server was raised to %d", p[len(p)-1])
	}
}

func TestSizerDoublesWhileCallsQueue(t *testing.T) {
	s := newSizer(6)
	got := feed(s, 4, busy, 200)
	if want := []int{2, 4, 6, 6}; !equal(got, want) {
		t.Fatalf("raising under queueing: %v, want %v", got, want)
	}
}

func TestSizerProbesHalfAndKeepsItWhenNothingWaits(t *testing.T) {
	s := newSizer(8)
	feed(s, 3, busy, 200) // 8
	got := feed(s, firstProbe, calm, 200)
	if got[len(got)-1] != 4 || got[len(got)-2] != 8 {
		t.Fatalf("after %d calm intervals at 8: %v, want a probe to 4 at the last", firstProbe, got)
	}
	got = feed(s, 200, calm, 200)
	if got[len(got)-1] != 1 {
		t.Fatalf("a long calm ends at %d Ps, want 1", got[len(got)-1])
	}
}

func TestSizerBacksOffWhenProbesFail(t *testing.T) {
	s := newSizer(2)
	feed(s, 1, busy, 200) // 2
	var probes []int      // intervals between the failed probes' starts
	last := 0
	for i := 1; i <= 2000 && len(probes) < 5; i++ {
		p := s.next(busy, 200)
		if p == 1 {
			probes = append(probes, i-last)
			last = i
		}
	}
	if len(probes) < 4 {
		t.Fatalf("probes under steady queueing: %v", probes)
	}
	for i := 1; i < len(probes); i++ {
		if probes[i] <= probes[i-1] {
			t.Fatalf("intervals between failed probes %v: each should be longer than the last", probes)
		}
	}
	// A probe that holds for a moment but is followed by queueing counts
	// as failed too.
	s = newSizer(2)
	feed(s, 1, busy, 200)
	before := s.probeAfter
	feed(s, firstProbe+probeIntervals, calm, 200) // probe to 1, held
	if s.procs != 1 {
		t.Fatalf("the probe did not hold: %d Ps", s.procs)
	}
	feed(s, 1, busy, 200)
	if s.procs != 2 || s.probeAfter <= before {
		t.Fatalf("queueing soon after a held probe: %d Ps, probe after %d (was %d)", s.procs, s.probeAfter, before)
	}
}

func equal(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestControllerFollowsTheLoad runs the Controller itself: goroutines that
// each want a P most of the time make it raise the count to Max; when they
// stop, it goes back to 1; at the end it restores GOMAXPROCS.
func TestControllerFollowsTheLoad(t *testing.T) {
	before := runtime.GOMAXPROCS(0)
	if before == 1 {
		// Run restores the value it found; 1 could not tell a restore
		// from a count left at 1.
		runtime.GOMAXPROCS(3)
		defer runtime.GOMAXPROCS(1)
		before = 3
	}
	c := New(Config{Max: 2, Interval: 20 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	waitFor(t, "the count set to 1 at the start", func() bool { return runtime.GOMAXPROCS(0) == 1 })

	stop := make(chan struct{})
	var wg sync.WaitGroup
	// A dispatcher hands work to 8 workers and keeps busy itself, as a
	// server's goroutines hand each other calls: with one P, a worker made
	// runnable waits for the dispatcher and the other workers.
	work := make([]chan struct{}, 8)
	for i := range work {
		work[i] = make(chan struct{}, 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work[i] {
				spin(100 * time.Microsecond)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer func() {
			for _, w := range work {
				close(w)
			}
		}()
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, w := range work {
				select {
				case w <- struct{}{}:
				default:
				}
			}
			spin(300 * time.Microsecond)
			runtime.Gosched()
		}
	}()
	waitFor(t, "the count raised to 2 under load", func() bool { return runtime.GOMAXPROCS(0) == 2 })
	close(stop)
	wg.Wait()
	waitFor(t, "the count back at 1 once idle", func() bool { return runtime.GOMAXPROCS(0) == 1 })
	cancel()
	<-done
	if got := runtime.GOMAXPROCS(0); got != before {
		t.Fatalf("GOMAXPROCS after Run: %d, want %d restored", got, before)
	}
}

func spin(d time.Duration) {
	for end := time.Now().Add(d); time.Now().Before(end); {
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("%s: not within 10 s (GOMAXPROCS %d)", what, runtime.GOMAXPROCS(0))
}
