package readdircache

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"
)

// fakeDir is a directory of name=value entries whose changes are bracketed
// like the union's.
type fakeDir struct {
	c   *Cache[string]
	key Key

	mu      sync.Mutex
	m       map[string]string
	lookups []string // names looked up, in order
}

func newFakeDir(c *Cache[string], names ...string) *fakeDir {
	f := &fakeDir{c: c, key: Key{7, 7}, m: map[string]string{}}
	for _, n := range names {
		f.m[n] = "0"
	}
	return f
}

func (f *fakeDir) source() Source[string] {
	return Source[string]{
		Names: func() ([]string, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			var names []string
			for n := range f.m {
				names = append(names, n)
			}
			sort.Strings(names)
			return names, nil
		},
		Lookup: func(_ uint64, n string) (string, bool, error) {
			f.mu.Lock()
			defer f.mu.Unlock()
			f.lookups = append(f.lookups, n)
			v, ok := f.m[n]
			return n + "=" + v, ok, nil
		},
	}
}

// set makes one change: name gets value, or goes ("").
func (f *fakeDir) set(name, value string) {
	f.c.BeginChange(f.key, name)
	f.mu.Lock()
	if value == "" {
		delete(f.m, name)
	} else {
		f.m[name] = value
	}
	f.mu.Unlock()
	f.c.EndChange(f.key)
}

func (f *fakeDir) want() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for n, v := range f.m {
		out = append(out, n+"="+v)
	}
	sort.Strings(out)
	return out
}

func (f *fakeDir) takeLookups() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	l := f.lookups
	f.lookups = nil
	return l
}

// Changes between reading the names and looking them up: the build is mended
// by looking up only the changed names, not built again.
func TestSpoiledBuildIsMended(t *testing.T) {
	c, _ := New[string](8)
	f := newFakeDir(c, "a", "b", "d", "f")
	once := true
	c.SetAfterNamesHook(func(Key) {
		if once {
			once = false
			f.set("a", "")  // gone before its lookup
			f.set("b", "1") // replaced
			f.set("c", "1") // new: not among the names read
			f.set("z", "1") // new, after every other name
			f.set("0", "1") // new, before every other name
		}
	})
	s, err := c.List(f.key, "s", f.source())
	if err != nil {
		t.Fatal(err)
	}
	if want := f.want(); !slices.Equal(s.Entries, want) {
		t.Fatalf("mended listing %v, want %v", s.Entries, want)
	}
	lookups := f.takeLookups()
	if mended := lookups[4:]; !slices.Equal(mended, []string{"0", "a", "b", "c", "z"}) {
		t.Fatalf("looked up %v: the build's 4 names, then only the changed ones", lookups)
	}
	st := c.Stats()
	if st.Misses != 1 || st.Mended != 1 || st.MendRounds != 1 || st.Stale != 0 {
		t.Fatalf("stats %+v: want one build, mended in one round", st)
	}
	if again, _ := c.List(f.key, "s", f.source()); again != s {
		t.Fatal("the mended listing was not cached")
	}
}

// A change during a round of mending is mended in the next round, which
// looks up only its name.
func TestChangeDuringMendIsMendedNext(t *testing.T) {
	c, _ := New[string](8)
	f := newFakeDir(c, "a", "b", "c")
	rounds := 0
	c.SetAfterNamesHook(func(Key) {
		if rounds == 0 {
			f.set("b", "1")
		}
	})
	c.SetBeforeMendHook(func(Key) {
		rounds++
		switch rounds {
		case 1:
			f.set("c", "") // after the names to look up were taken
		case 2:
			f.set("d", "2")
		}
	})
	s, err := c.List(f.key, "s", f.source())
	if err != nil {
		t.Fatal(err)
	}
	if want := f.want(); !slices.Equal(s.Entries, want) {
		t.Fatalf("listing %v, want %v", s.Entries, want)
	}
	if l := f.takeLookups(); !slices.Equal(l, []string{"a", "b", "c", "b", "c", "d"}) {
		t.Fatalf("lookups %v", l)
	}
	if st := c.Stats(); st.Misses != 1 || st.MendRounds != 3 || st.Mended != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// A change still in progress when the build ends is waited for, holding no
// lock, before its names are looked up again: a lookup in the middle of it
// might see half of it.
func TestMendWaitsForChangeInProgress(t *testing.T) {
	c, _ := New[string](8)
	f := newFakeDir(c, "a", "b")
	begun := make(chan struct{})
	c.SetAfterNamesHook(func(Key) {
		c.BeginChange(f.key, "b", "c") // a rename of b to c, half made
		f.mu.Lock()
		delete(f.m, "b")
		f.mu.Unlock()
		close(begun)
	})
	checked := make(chan struct{})
	var checks int
	c.SetBeforePublishHook(func(Key) {
		if checks++; checks == 1 {
			close(checked)
		}
	})
	type result struct {
		s   *Snapshot[string]
		err error
	}
	res := make(chan result, 1)
	go func() {
		s, err := c.List(f.key, "s", f.source())
		res <- result{s, err}
	}()
	<-begun
	<-checked // the build is done and about to find the change in progress
	select {
	case r := <-res:
		t.Fatalf("published during a change: %v, %v", r.s, r.err)
	default:
	}
	f.mu.Lock()
	f.m["c"] = "0"
	f.mu.Unlock()
	c.EndChange(f.key)
	r := <-res
	if r.err != nil {
		t.Fatal(r.err)
	}
	if !slices.Equal(r.s.Entries, []string{"a=0", "c=0"}) {
		t.Fatalf("listing %v", r.s.Entries)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	// The build's own lookup of b (after the names were read) ran during
	// the change; no mending lookup may.
	if l := f.lookups; !slices.Equal(l[2:], []string{"b", "c"}) {
		t.Fatalf("lookups %v", l)
	}
}

// Builds sharing a mended build get the mended listing.
func TestSharersGetTheMendedListing(t *testing.T) {
	c, _ := New[string](8)
	f := newFakeDir(c, "a")
	started, release := make(chan struct{}), make(chan struct{})
	c.SetAfterNamesHook(func(Key) {
		close(started)
		<-release
		f.set("b", "1")
	})
	var wg sync.WaitGroup
	got := make([]*Snapshot[string], 4)
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i > 0 {
				<-started
			}
			s, err := c.List(f.key, "s", f.source())
			if err != nil {
				t.Error(err)
			}
			got[i] = s
		}()
	}
	<-started
	// The sharers may still be on their way to the build; they find it in
	// flight or, once it is published, in the cache: one build either way.
	close(release)
	wg.Wait()
	for _, s := range got {
		if s != got[0] || !slices.Equal(s.Entries, []string{"a=0", "b=1"}) {
			t.Fatalf("snapshots %v", got)
		}
	}
	if st := c.Stats(); st.Misses != 1 {
		t.Fatalf("stats %+v: one build for all", st)
	}
}

// More changed names than a build records: the build is made once more,
// lock-free, and that one is published.
func TestTooManyChangedNamesRebuilds(t *testing.T) {
	c, _ := New[string](8)
	c.maxChanged = 3
	f := newFakeDir(c, "a")
	builds := 0
	c.SetAfterNamesHook(func(Key) {
		if builds++; builds == 1 {
			for i := range 4 {
				f.set(fmt.Sprint("n", i), "1")
			}
		}
	})
	s, err := c.List(f.key, "s", f.source())
	if err != nil {
		t.Fatal(err)
	}
	if want := f.want(); !slices.Equal(s.Entries, want) {
		t.Fatalf("listing %v, want %v", s.Entries, want)
	}
	if st := c.Stats(); builds != 2 || st.Misses != 2 || st.Stale != 1 || st.Retries != 1 || st.MendRounds != 0 {
		t.Fatalf("%d builds, stats %+v", builds, st)
	}
}

// A change that names no entries (Invalidate, BeginChange without names)
// cannot be mended: the build is made again.
func TestUnnamedChangeRebuilds(t *testing.T) {
	for _, how := range []string{"Invalidate", "BeginChange"} {
		c, _ := New[string](8)
		f := newFakeDir(c, "a")
		builds := 0
		c.SetAfterNamesHook(func(k Key) {
			if builds++; builds == 1 {
				if how == "Invalidate" {
					c.Invalidate(k)
				} else {
					c.BeginChange(k)
					c.EndChange(k)
				}
			}
		})
		if _, err := c.List(f.key, "s", f.source()); err != nil || builds != 2 {
			t.Fatalf("%s: %v after %d builds, want success after 2", how, err, builds)
		}
	}
}

// A directory that changes in every build and every round of mending: the
// whole builds and the rounds are bounded, and the call reports it.
func TestEndlessChangesAreBounded(t *testing.T) {
	c, _ := New[string](8)
	f := newFakeDir(c, "a")
	i := 0
	change := func(Key) { i++; f.set(fmt.Sprint("n", i%10), fmt.Sprint(i)) }
	c.SetAfterNamesHook(change)
	c.SetBeforeMendHook(change)
	if _, err := c.List(f.key, "s", f.source()); !errors.Is(err, ErrTooManyChanges) {
		t.Fatalf("got %v, want ErrTooManyChanges", err)
	}
	st := c.Stats()
	if st.Misses != maxBuildAttempts || st.Stale != maxBuildAttempts || st.MendRounds != maxBuildAttempts*maxMendRounds {
		t.Fatalf("stats %+v", st)
	}
	// Once the changes stop the directory lists again.
	c.SetAfterNamesHook(nil)
	c.SetBeforeMendHook(nil)
	s, err := c.List(f.key, "s", f.source())
	if err != nil || !slices.Equal(s.Entries, f.want()) {
		t.Fatalf("after the changes: %v, %v", s, err)
	}
}

// A build that cannot be mended (Get, a BuildFunc) is made again, at most
// maxBuildAttempts times in all.
func TestUnmendableBuildIsRetriedOnce(t *testing.T) {
	c, _ := New[int](8)
	key := Key{1, 3}
	builds := 0
	c.SetBeforePublishHook(func(k Key) { c.BeginChange(k, "x"); c.EndChange(k) })
	build := func(uint64) ([]int, error) { builds++; return []int{builds}, nil }
	if _, err := c.Get(key, "s", build); !errors.Is(err, ErrTooManyChanges) || builds != maxBuildAttempts {
		t.Fatalf("Get: %v after %d builds, want ErrTooManyChanges after %d", err, builds, maxBuildAttempts)
	}
	c.SetBeforePublishHook(nil)
	if s, err := c.Get(key, "s", build); err != nil || s.Entries[0] != maxBuildAttempts+1 {
		t.Fatalf("Get once quiet: %v, %v", s, err)
	}
}

// An attribute change (Forget) during a mended build: returned, not kept.
func TestForgetDuringMendIsNotStored(t *testing.T) {
	c, _ := New[string](8)
	f := newFakeDir(c, "a")
	c.SetAfterNamesHook(func(Key) { f.set("b", "1") })
	c.SetBeforeMendHook(func(k Key) { c.Forget(k) })
	s, err := c.List(f.key, "s", f.source())
	if err != nil || len(s.Entries) != 2 {
		t.Fatalf("%v, %v", s, err)
	}
	c.SetAfterNamesHook(nil)
	c.SetBeforeMendHook(nil)
	if again, _ := c.List(f.key, "s", f.source()); again == s {
		t.Fatal("a listing whose attributes changed while it was mended was cached")
	}
}

// Published is called once, by the caller that built, with the published
// entries; not for a dropped build.
func TestPublishedCallback(t *testing.T) {
	c, _ := New[string](8)
	f := newFakeDir(c, "a")
	builds := 0
	c.SetAfterNamesHook(func(k Key) {
		if builds++; builds == 1 {
			c.Invalidate(k)
		}
	})
	src := f.source()
	var calls [][]string
	src.Published = func(e []string) { calls = append(calls, slices.Clone(e)) }
	if _, err := c.List(f.key, "s", src); err != nil {
		t.Fatal(err)
	}
	if _, err := c.List(f.key, "s", src); err != nil { // a hit
		t.Fatal(err)
	}
	if len(calls) != 1 || !slices.Equal(calls[0], []string{"a=0"}) {
		t.Fatalf("Published calls %v", calls)
	}
}

// mend patches any set of names into a sorted listing exactly as a fresh
// listing of the result would be.
func TestMendPatchesInOrder(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for iter := range 2000 {
		universe := 1 + r.IntN(30)
		before := map[string]int{}
		for i := range universe {
			if r.IntN(2) == 0 {
				before[fmt.Sprintf("n%02d", i)] = 0
			}
		}
		after := map[string]int{}
		for n, v := range before {
			after[n] = v
		}
		changed := map[string]struct{}{}
		for range r.IntN(universe + 1) {
			n := fmt.Sprintf("n%02d", r.IntN(universe))
			changed[n] = struct{}{}
			switch r.IntN(3) {
			case 0:
				delete(after, n)
			default:
				after[n] = 1 + r.IntN(5)
			}
		}
		listing := func(m map[string]int) (names, entries []string) {
			for n := range m {
				names = append(names, n)
			}
			sort.Strings(names)
			for _, n := range names {
				entries = append(entries, fmt.Sprint(n, "=", m[n]))
			}
			return names, entries
		}
		names, entries := listing(before)
		src := Source[string]{Lookup: func(_ uint64, n string) (string, bool, error) {
			v, ok := after[n]
			return fmt.Sprint(n, "=", v), ok, nil
		}}
		gotNames, gotEntries, err := mend(src, 1, names, entries, changed)
		if err != nil {
			t.Fatal(err)
		}
		wantNames, wantEntries := listing(after)
		if !slices.Equal(gotNames, wantNames) || !slices.Equal(gotEntries, wantEntries) {
			t.Fatalf("iteration %d: before %v, changed %v: got %v %v, want %v %v",
				iter, before, changed, gotNames, gotEntries, wantNames, wantEntries)
		}
	}
}

// Changes from many goroutines while others list: every listing equals the
// directory at one instant of the call (here: each writer's own name holds
// one of the values it had during the call), and the final one equals the
// final state.
func TestMendUnderConcurrentChanges(t *testing.T) {
	c, _ := New[string](8)
	f := newFakeDir(c)
	for i := range 200 {
		f.m[fmt.Sprintf("base%03d", i)] = "0"
	}
	const writers = 3
	var wg sync.WaitGroup
	stop := make(chan struct{})
	// Changes to one directory are serialised by its lock in the union.
	var dirLock sync.Mutex
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				dirLock.Lock()
				name := fmt.Sprintf("w%d-%d", w, i%5)
				if i%2 == 0 {
					f.set(name, fmt.Sprint(i))
				} else {
					f.set(name, "")
				}
				dirLock.Unlock()
			}
		}()
	}
	deadline := time.Now().Add(300 * time.Millisecond)
	listings := 0
	for time.Now().Before(deadline) {
		s, err := c.List(f.key, "s", f.source())
		if errors.Is(err, ErrTooManyChanges) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		listings++
		base := 0
		for i, e := range s.Entries {
			if i > 0 && s.Entries[i-1] >= e {
				t.Fatalf("listing out of order at %d: %v", i, s.Entries)
			}
			if len(e) > 4 && e[:4] == "base" {
				base++
			}
		}
		if base != 200 {
			t.Fatalf("listing lost unchanged entries: %d of 200", base)
		}
	}
	close(stop)
	wg.Wait()
	c.SetAfterNamesHook(nil)
	s, err := c.List(f.key, "s", f.source())
	if err != nil || !slices.Equal(s.Entries, f.want()) {
		t.Fatalf("final listing %v, %v; want %v", s, err, f.want())
	}
	t.Logf("%d listings, stats %+v", listings, c.Stats())
}

// A whole build looks its names up through ListedLookup, with each name's index in what
// Names returned; mending looks changed names up through Lookup only.
func TestListedLookupInBuildsLookupInMends(t *testing.T) {
	c, _ := New[string](8)
	f := newFakeDir(c, "a", "b", "c")
	src := f.source()
	var listed []string
	var names []string
	plainNames := src.Names
	src.Names = func() ([]string, error) {
		n, err := plainNames()
		names = n
		return n, err
	}
	src.ListedLookup = func(id uint64, i int, n string) (string, bool, error) {
		if names[i] != n {
			t.Errorf("ListedLookup(%d, %q): Names gave %q there", i, n, names[i])
		}
		listed = append(listed, n)
		return src.Lookup(id, n)
	}
	once := true
	c.SetAfterNamesHook(func(Key) {
		if once {
			once = false
			f.set("b", "1")
		}
	})
	s, err := c.List(f.key, "s", src)
	if err != nil {
		t.Fatal(err)
	}
	if want := f.want(); !slices.Equal(s.Entries, want) {
		t.Fatalf("listing %v, want %v", s.Entries, want)
	}
	if !slices.Equal(listed, []string{"a", "b", "c"}) {
		t.Errorf("the build's lookups through ListedLookup: %v", listed)
	}
	if lookups := f.takeLookups(); !slices.Equal(lookups, []string{"a", "b", "c", "b"}) {
		t.Errorf("lookups %v: the build's three, then b alone, mended through Lookup", lookups)
	}
}
