package billyunion

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ovlnfs/ovlnfs/readdircache"
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

// listingState is a listing as names with their full stat, to compare two.
func listingState(t *testing.T, fis []os.FileInfo) []string {
	t.Helper()
	var out []string
	for _, fi := range fis {
		out = append(out, fmt.Sprintf("%s %+v", fi.Name(), *fi.Sys().(*syscall.Stat_t)))
	}
	return out
}

// Changes between reading a directory's names and looking them up, and
// during the rounds of mending: the listing is mended (one build, the
// changed names looked up again) and equals a quiet listing made afterwards,
// each entry exactly as Lstat reports it.
func TestMendedListingEqualsQuietListing(t *testing.T) {
	requireRoot(t)
	ls := newLayerSet(t, 2)
	for _, n := range []string{"a", "b", "c", "e", "keep"} {
		ls.file("l1", "d/"+n, n)
	}
	ls.file("l2", "d/lower2", "l2")
	ls.file("l2", "d/hidden", "x")
	ls.whiteout("l1", "d/hidden")
	ls.dir("l2", "d/sub")
	ls.file("l2", "d/sub/f", "f")
	ls.file("u", "d/up", "u")
	ls.file("u", "d/updir/f", "f")
	ls.dir("u", "d/gone")
	fs := ls.open()
	key := fs.dirKeyOf(t, "d")

	var hookErr []error
	do := func(what string, err error) {
		if err != nil {
			hookErr = append(hookErr, fmt.Errorf("%s: %w", what, err))
		}
	}
	builds, rounds := 0, 0
	fs.listings.SetAfterNamesHook(func(k readdircache.Key) {
		if k != key {
			return
		}
		if builds++; builds > 1 {
			return
		}
		f, err := fs.Create("d/new")
		do("create", err)
		if err == nil {
			f.Close()
		}
		do("remove a lower file", fs.Remove("d/a"))
		do("rename", fs.Rename("d/b", "d/b2"))
		do("rename over", fs.Rename("d/c", "d/e"))
		do("mkdir", fs.Mkdir("d/newdir", 0o750))
		do("symlink", fs.Symlink("target", "d/ln"))
		do("remove an upper file", fs.Remove("d/up"))
		do("rename a directory", fs.Rename("d/updir", "d/updir2"))
		do("rmdir", fs.Remove("d/gone"))
	})
	fs.listings.SetBeforeMendHook(func(k readdircache.Key) {
		if k != key {
			return
		}
		switch rounds++; rounds {
		case 1:
			do("chmod", fs.Chmod("d/keep", 0o600)) // attributes only
			f, err := fs.Create("d/during-mend")
			do("create during mend", err)
			if err == nil {
				f.Close()
			}
		case 2:
			do("remove during mend", fs.Remove("d/lower2"))
		}
	})
	before := fs.ListingStats()
	mended, err := fs.ReadDir("d")
	noErr(t, "ReadDir", err)
	for _, err := range hookErr {
		t.Error(err)
	}
	st := fs.ListingStats()
	if st.Misses-before.Misses != 1 || st.Mended-before.Mended != 1 || rounds != 3 {
		t.Fatalf("%d builds, %d mended, %d rounds: want one build mended in 3 rounds (%+v)",
			st.Misses-before.Misses, st.Mended-before.Mended, rounds, st)
	}
	fs.listings.SetAfterNamesHook(nil)
	fs.listings.SetBeforeMendHook(nil)

	var got []string
	for _, fi := range mended {
		got = append(got, fi.Name())
	}
	want := "b2 during-mend e keep ln new newdir sub updir2"
	if strings.Join(got, " ") != want {
		t.Fatalf("mended listing %q, want %q", strings.Join(got, " "), want)
	}
	fs.listings.ForgetAll()
	quiet, err := fs.ReadDir("d")
	noErr(t, "ReadDir", err)
	if ListingID(quiet) == ListingID(mended) {
		t.Fatal("a fresh listing has the mended one's ID")
	}
	// The chmod during the mend is an attribute change: the mended listing
	// may show either mode of keep (it was returned, not cached).
	m, q := listingState(t, mended), listingState(t, quiet)
	if len(m) != len(q) {
		t.Fatalf("mended %v\nquiet  %v", m, q)
	}
	for i := range m {
		if m[i] != q[i] && mended[i].Name() != "keep" {
			t.Errorf("entry %d:\nmended %s\nquiet  %s", i, m[i], q[i])
		}
	}
	for _, fi := range quiet {
		l, err := fs.Lstat("d/" + fi.Name())
		noErr(t, "Lstat", err)
		if a, b := *fi.Sys().(*syscall.Stat_t), *l.Sys().(*syscall.Stat_t); a != b {
			t.Errorf("%s: listing %+v, Lstat %+v", fi.Name(), a, b)
		}
	}
	if _, ok := fs.ListingByID("d", ListingID(mended)); !ok {
		t.Error("the mended snapshot is not pageable by its ID")
	}
}

// dirKeyOf is the listing cache key of the directory at p.
func (fs *FS) dirKeyOf(t *testing.T, p string) readdircache.Key {
	t.Helper()
	comps, err := splitPath(p)
	noErr(t, "splitPath", err)
	d, err := fs.resolveDir(comps, false)
	noErr(t, "resolveDir", err)
	defer d.close()
	return dirKey(d)
}

// A create in a directory completes while a listing of it is being built,
// and again while the spoiled build is being mended (where a listing used to
// be built under the directory's lock): the listing is held in test hooks
// until the creates returned. The timeout only bounds a failure.
func TestCreateDoesNotWaitForListing(t *testing.T) {
	requireRoot(t)
	ls := newLayerSet(t, 1)
	for i := range 100 {
		ls.file("l1", fmt.Sprintf("d/f%03d", i), "")
	}
	ls.dir("u", "d")
	fs := ls.open()
	key := fs.dirKeyOf(t, "d")

	inBuild, releaseBuild := make(chan struct{}), make(chan struct{})
	inMend, releaseMend := make(chan struct{}), make(chan struct{})
	var builds, rounds int
	fs.listings.SetAfterNamesHook(func(k readdircache.Key) {
		if k == key {
			if builds++; builds == 1 {
				close(inBuild)
				<-releaseBuild
			}
		}
	})
	fs.listings.SetBeforeMendHook(func(k readdircache.Key) {
		if k == key {
			if rounds++; rounds == 1 {
				close(inMend)
				<-releaseMend
			}
		}
	})
	type result struct {
		fis []os.FileInfo
		err error
	}
	listed := make(chan result, 1)
	go func() {
		fis, err := fs.ReadDir("d")
		listed <- result{fis, err}
	}()
	create := func(name string) {
		t.Helper()
		done := make(chan error, 1)
		go func() {
			f, err := fs.Create("d/" + name)
			if err == nil {
				err = f.Close()
			}
			done <- err
		}()
		select {
		case err := <-done:
			noErr(t, "Create "+name, err)
		case <-time.After(time.Minute):
			t.Fatalf("Create %s waits for the listing", name)
		}
	}
	<-inBuild
	create("during-build")
	close(releaseBuild)
	<-inMend // the build was spoiled by the create: it is being mended
	create("during-mend")
	select {
	case r := <-listed:
		t.Fatalf("the listing returned while held: %v", r.err)
	default:
	}
	close(releaseMend)
	r := <-listed
	noErr(t, "ReadDir", r.err)
	got := map[string]bool{}
	for _, fi := range r.fis {
		got[fi.Name()] = true
	}
	if len(r.fis) != 102 || !got["during-build"] || !got["during-mend"] {
		t.Fatalf("%d entries (during-build %v, during-mend %v): the listing must show both creates, which completed before it returned",
			len(r.fis), got["during-build"], got["during-mend"])
	}
	if builds != 1 || rounds != 2 {
		t.Fatalf("%d builds, %d rounds of mending; want 1 and 2", builds, rounds)
	}
}

// A directory that changes during every build and every round of mending
// gets EAGAIN (an errno), after a bounded number of builds, and lists again
// once the changes stop.
func TestEndlessChangesAnswerEAGAIN(t *testing.T) {
	requireRoot(t)
	ls := newLayerSet(t, 1)
	ls.file("l1", "d/a", "")
	ls.dir("u", "d")
	fs := ls.open()
	key := fs.dirKeyOf(t, "d")
	i := 0
	change := func(k readdircache.Key) {
		if k != key {
			return
		}
		i++
		f, err := fs.Create(fmt.Sprintf("d/n%d", i))
		if err != nil {
			t.Error(err)
			return
		}
		f.Close()
	}
	fs.listings.SetAfterNamesHook(change)
	fs.listings.SetBeforeMendHook(change)
	_, err := fs.ReadDir("d")
	wantErrno(t, "ReadDir of a directory changing all the time", err, syscall.EAGAIN)
	fs.listings.SetAfterNamesHook(nil)
	fs.listings.SetBeforeMendHook(nil)
	if n := strings.Count(names(t, fs, "d"), " ") + 1; n != i+1 {
		t.Fatalf("%d entries after %d creates", n, i)
	}
}
