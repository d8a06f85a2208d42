package billyunion

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// writerLog records one writer's state over time: state[k] holds from the
// start of op k (it may already have taken effect) until the end of op k+1.
type writerLog struct {
	states [][]string
	start  []time.Duration // start[k], end[k] of the op that produced states[k]
	end    []time.Duration
}

// allows reports whether the writer's names could have been exactly want at
// instant t.
func (w *writerLog) allows(want []string, t time.Duration) bool {
	for k, s := range w.states {
		from := w.start[k]
		to := time.Duration(1 << 62)
		if k+1 < len(w.states) {
			to = w.end[k+1]
		}
		if t >= from && t <= to && slices.Equal(s, want) {
			return true
		}
	}
	return false
}

type observation struct {
	start, end time.Duration
	names      []string
}

// TestListingsAreLinearizable: writers create, unlink and rename their own
// names in one merged directory while readers list it; every listing must
// equal the directory at one instant within its call, and once the writers
// stop, a listing shows exactly the final state.
func TestListingsAreLinearizable(t *testing.T) {
	requireRoot(t)
	ls := newLayerSet(t, 2)
	ls.file("l1", "d/lower-a", "a")
	ls.file("l2", "d/lower-b", "b")
	ls.whiteout("l1", "d/lower-c")
	ls.file("l2", "d/lower-c", "hidden")
	fs := ls.open()
	base := time.Now()
	now := func() time.Duration { return time.Since(base) }

	const writers, opsPerWriter, readers = 4, 150, 3
	logs := make([]*writerLog, writers)
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		logs[w] = &writerLog{states: [][]string{nil}, start: []time.Duration{0}, end: []time.Duration{0}}
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(w), 1))
			present := map[string]bool{}
			for i := 0; i < opsPerWriter; i++ {
				name := fmt.Sprintf("w%d-%d", w, r.IntN(4))
				other := fmt.Sprintf("w%d-%d", w, r.IntN(4))
				st := now()
				var err error
				switch {
				case !present[name]:
					var f interface{ Close() error }
					if f, err = fs.OpenFile("d/"+name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644); err == nil {
						f.Close()
						present[name] = true
					}
				case r.IntN(2) == 0 || name == other:
					if err = fs.Unlink("d/" + name); err == nil {
						delete(present, name)
					}
				default:
					if err = fs.Rename("d/"+name, "d/"+other); err == nil {
						delete(present, name)
						present[other] = true
					}
				}
				en := now()
				if err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
				var state []string
				for n := range present {
					state = append(state, n)
				}
				slices.Sort(state)
				lg := logs[w]
				lg.states = append(lg.states, state)
				lg.start = append(lg.start, st)
				lg.end = append(lg.end, en)
			}
		}(w)
	}
	var obsMu sync.Mutex
	var obs []observation
	stop := make(chan struct{})
	var rwg sync.WaitGroup
	for r := 0; r < readers; r++ {
		rwg.Add(1)
		go func() {
			defer rwg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				st := now()
				fis, err := fs.ReadDir("d")
				en := now()
				if err != nil {
					t.Errorf("readdir: %v", err)
					return
				}
				var names []string
				for _, fi := range fis {
					names = append(names, fi.Name())
				}
				obsMu.Lock()
				obs = append(obs, observation{st, en, names})
				obsMu.Unlock()
			}
		}()
	}
	wg.Wait()
	close(stop)
	rwg.Wait()

	for _, o := range obs {
		if !slices.Contains(o.names, "lower-a") || !slices.Contains(o.names, "lower-b") || slices.Contains(o.names, "lower-c") {
			t.Fatalf("lower entries wrong in listing %v", o.names)
		}
		perWriter := make([][]string, writers)
		for _, n := range o.names {
			var w int
			if _, err := fmt.Sscanf(n, "w%d-", &w); err == nil {
				perWriter[w] = append(perWriter[w], n)
			}
		}
		// Candidate instants: the call's start and every log boundary
		// inside the call; the set of instants each writer allows is a
		// union of closed intervals, so if all writers agree on some
		// instant they agree on one of these.
		candidates := []time.Duration{o.start}
		for _, lg := range logs {
			for k := range lg.states {
				for _, b := range []time.Duration{lg.start[k], lg.end[k]} {
					if b > o.start && b <= o.end {
						candidates = append(candidates, b)
					}
				}
			}
		}
		ok := false
		for _, c := range candidates {
			all := true
			for w, lg := range logs {
				if !lg.allows(perWriter[w], c) {
					all = false
					break
				}
			}
			if all {
				ok = true
				break
			}
		}
		if !ok {
			t.Fatalf("listing %v (call %v..%v) matches no instant of the directory", o.names, o.start, o.end)
		}
	}
	var final []string
	for _, lg := range logs {
		final = append(final, lg.states[len(lg.states)-1]...)
	}
	final = append(final, "lower-a", "lower-b")
	slices.Sort(final)
	if got := names(t, fs, "d"); got != strings.Join(final, " ") {
		t.Fatalf("after the writers stopped: %q, want %q", got, strings.Join(final, " "))
	}
	st := fs.ListingStats()
	t.Logf("%d listings checked; cache: %+v", len(obs), st)
	if len(obs) < 20 {
		t.Fatalf("only %d listings observed", len(obs))
	}
}

// A listing's ID names its snapshot for NFS paging: the snapshot stays
// available to the directory it lists after that directory changes (so a
// client keeps paging through one consistent listing), and is never
// handed out for another directory.
func TestListingByIDBelongsToItsDirectory(t *testing.T) {
	requireRoot(t)
	ls := newLayerSet(t, 1)
	ls.file("l1", "d/a", "a")
	ls.file("l1", "e/b", "b")
	ls.dir("u", "e")
	fs := ls.open()

	first, err := fs.ReadDir("d")
	noErr(t, "ReadDir d", err)
	id := ListingID(first)
	if id == 0 {
		t.Fatal("a listing of a non-empty directory has no ID")
	}
	// Creating in d copies d up: the directory gains an upper part and its
	// listing a new snapshot, but the old one still belongs to d.
	f, err := fs.Create("d/new")
	noErr(t, "Create d/new", err)
	noErr(t, "Close", f.Close())
	now, err := fs.ReadDir("d")
	noErr(t, "ReadDir d", err)
	if ListingID(now) == id || len(now) != 2 {
		t.Fatalf("listing after a create: id %d (old %d), %d entries", ListingID(now), id, len(now))
	}
	old, ok := fs.ListingByID("d", id)
	if !ok || len(old) != 1 || old[0].Name() != "a" {
		t.Fatalf("old snapshot of d: %v, %v", old, ok)
	}
	if again, ok := fs.ListingByID("./d", id); !ok || len(again) != 1 || cap(again) != 1 {
		t.Fatalf("snapshot of d spelled ./d: %v, %v (an append must not write into the snapshot)", again, ok)
	}
	for _, other := range []string{"e", ".", "/", "d/a", "missing"} {
		if got, ok := fs.ListingByID(other, id); ok {
			t.Errorf("snapshot of d served for %q: %v", other, got)
		}
	}
	if _, ok := fs.ListingByID("d", id+12345); ok {
		t.Error("an unknown ID was served")
	}
}
