package locks

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"
)

var (
	a1 = Owner{Host: "a", SVID: 1, OH: "1@a"}
	a2 = Owner{Host: "a", SVID: 2, OH: "2@a"}
	b1 = Owner{Host: "b", SVID: 1, OH: "1@b"}
	c1 = Owner{Host: "c", SVID: 1, OH: "1@c"}
)

func lockReq(o Owner, exclusive bool, off, length uint64) Request {
	return Request{File: "f", Owner: o, Exclusive: exclusive, Range: Span(off, length)}
}

func mustLock(t *testing.T, m *Manager, req Request, want Status) Lock {
	t.Helper()
	got, l := m.Lock(req)
	if got != want {
		t.Fatalf("Lock(%+v) = %v (in the way: %+v), want %v", req, got, l, want)
	}
	return l
}

// sorted returns a file's locks in a fixed order, for comparisons.
func sorted(ls []Lock) []Lock {
	slices.SortFunc(ls, func(x, y Lock) int {
		if x.Owner.Host != y.Owner.Host {
			if x.Owner.Host < y.Owner.Host {
				return -1
			}
			return 1
		}
		if x.Owner.SVID != y.Owner.SVID {
			return int(x.Owner.SVID - y.Owner.SVID)
		}
		if x.Range.Start != y.Range.Start {
			if x.Range.Start < y.Range.Start {
				return -1
			}
			return 1
		}
		return 0
	})
	return ls
}

func TestSpanAndLength(t *testing.T) {
	for _, tc := range []struct {
		off, length uint64
		want        Range
		back        uint64
	}{
		{0, 0, Range{0, ToEOF}, 0},
		{10, 0, Range{10, ToEOF}, 0},
		{10, 5, Range{10, 14}, 5},
		{0, 1, Range{0, 0}, 1},
		{ToEOF, 1, Range{ToEOF, ToEOF}, 0}, // the last byte: runs to the end
		{1 << 63, 1 << 63, Range{1 << 63, ToEOF}, 0},
		{1<<63 + 1, 1 << 63, Range{1<<63 + 1, ToEOF}, 0}, // would pass the largest offset
		{5, ToEOF - 5, Range{5, ToEOF - 1}, ToEOF - 5},
	} {
		got := Span(tc.off, tc.length)
		if got != tc.want || got.Length() != tc.back {
			t.Errorf("Span(%d, %d) = %+v (length %d), want %+v (length %d)", tc.off, tc.length, got, got.Length(), tc.want, tc.back)
		}
	}
	if r := (Range{0, 9}); !r.Overlaps(Range{9, 20}) || r.Overlaps(Range{10, 20}) || !r.touches(Range{10, 20}) || r.touches(Range{11, 20}) {
		t.Error("overlap and adjacency of [0,9]")
	}
	if r := (Range{5, ToEOF}); r.touches(Range{0, 3}) || !r.touches(Range{0, 4}) {
		t.Error("adjacency of a range to EOF")
	}
}

func TestSplitAndMerge(t *testing.T) {
	m := New(Config{})
	mustLock(t, m, lockReq(a1, true, 0, 100), Granted)
	// An unlock in the middle splits.
	if st, _ := m.Unlock("f", a1, Span(10, 10)); st != Granted {
		t.Fatal(st)
	}
	want := []Lock{{a1, true, Range{0, 9}}, {a1, true, Range{20, 99}}}
	if got := sorted(m.Locks("f")); !slices.Equal(got, want) {
		t.Fatalf("after splitting: %+v, want %+v", got, want)
	}
	// Filling the hole merges the three back into one.
	mustLock(t, m, lockReq(a1, true, 10, 10), Granted)
	want = []Lock{{a1, true, Range{0, 99}}}
	if got := m.Locks("f"); !slices.Equal(got, want) {
		t.Fatalf("after filling: %+v, want %+v", got, want)
	}
	// Adjacent ranges of the same mode merge; of the other mode they do not.
	mustLock(t, m, lockReq(a1, true, 100, 0), Granted)
	if got := m.Locks("f"); !slices.Equal(got, []Lock{{a1, true, Range{0, ToEOF}}}) {
		t.Fatalf("adjacent exclusive: %+v", got)
	}
	// A shared lock in the middle of an exclusive one downgrades that part only.
	mustLock(t, m, lockReq(a1, false, 50, 10), Granted)
	want = []Lock{{a1, true, Range{0, 49}}, {a1, false, Range{50, 59}}, {a1, true, Range{60, ToEOF}}}
	if got := sorted(m.Locks("f")); !slices.Equal(got, want) {
		t.Fatalf("downgrade in the middle: %+v, want %+v", got, want)
	}
	// Another owner may now share [50,59] but not touch the rest.
	mustLock(t, m, lockReq(b1, false, 52, 3), Granted)
	if l := mustLock(t, m, lockReq(b1, false, 49, 2), Denied); l.Range != (Range{0, 49}) || l.Owner != a1 {
		t.Fatalf("in the way: %+v", l)
	}
	// Upgrading the whole range back: b1's shared lock is in the way now.
	if l := mustLock(t, m, lockReq(a1, true, 0, 0), Denied); l.Owner != b1 {
		t.Fatalf("in the way of the upgrade: %+v", l)
	}
	if st, _ := m.Unlock("f", b1, Span(0, 0)); st != Granted {
		t.Fatal(st)
	}
	mustLock(t, m, lockReq(a1, true, 0, 0), Granted)
	if got := m.Locks("f"); !slices.Equal(got, []Lock{{a1, true, Range{0, ToEOF}}}) {
		t.Fatalf("after the upgrade: %+v", got)
	}
	// Unlocking everything leaves nothing, and the file and host entries go.
	if st, _ := m.Unlock("f", a1, Span(0, 0)); st != Granted {
		t.Fatal(st)
	}
	if len(m.Locks("f")) != 0 || len(m.files) != 0 || len(m.hosts) != 0 || m.locks != 0 {
		t.Fatalf("left behind: %+v files %d hosts %d locks %d", m.Locks("f"), len(m.files), len(m.hosts), m.locks)
	}
}

func TestConflictsAndOwners(t *testing.T) {
	m := New(Config{})
	mustLock(t, m, lockReq(a1, false, 0, 10), Granted)
	mustLock(t, m, lockReq(b1, false, 5, 10), Granted)       // shared with shared
	mustLock(t, m, lockReq(a1, false, 0, 10), Granted)       // the same again
	mustLock(t, m, lockReq(a2, true, 20, 10), Granted)       // another process of host a, elsewhere
	mustLock(t, m, lockReq(a2, true, 9, 1), Denied)          // another process of host a is another owner
	mustLock(t, m, lockReq(c1, true, 10, 10), Denied)        // b1 holds 10..14 shared
	mustLock(t, m, lockReq(c1, false, 15, 5), Granted)       // nobody at 15..19
	mustLock(t, m, lockReq(c1, false, 15, 10), Denied)       // a2 holds 20..29 exclusive
	other := Owner{Host: "a", SVID: 1, OH: "another handle"} // same host and svid, other oh
	mustLock(t, m, lockReq(other, true, 0, 1), Denied)
	if st, l := m.Test("f", c1, true, Span(0, 0)); st != Denied || l.Owner == c1 {
		t.Errorf("Test of the whole file: %v %+v", st, l)
	}
	if st, _ := m.Test("f", c1, false, Span(30, 0)); st != Granted {
		t.Errorf("Test past the locks: %v", st)
	}
	if st, l := m.Test("f", a2, false, Span(25, 1)); st != Granted {
		t.Errorf("Test of its own lock: %v %+v", st, l)
	}
	if st, _ := m.Test("other file", c1, true, Span(0, 0)); st != Granted {
		t.Errorf("Test of another file: %v", st)
	}
}

func TestBlockingQueue(t *testing.T) {
	m := New(Config{})
	mustLock(t, m, lockReq(a1, true, 0, 0), Granted)
	wait := func(o Owner, exclusive bool, off, length uint64, payload string) {
		t.Helper()
		req := lockReq(o, exclusive, off, length)
		req.Block, req.Payload = true, payload
		mustLock(t, m, req, Blocked)
	}
	wait(b1, true, 0, 10, "b1")
	wait(c1, false, 5, 10, "c1 first")
	wait(c1, false, 5, 10, "c1 again") // the same request: one waiter, the newer payload
	wait(a2, false, 100, 1, "a2")
	if n := m.hosts["c"].waiters; n != 1 {
		t.Fatalf("c waits %d times", n)
	}
	// Unlocking part of the range lets nobody through.
	st, grants := m.Unlock("f", a1, Span(0, 4))
	if st != Granted || len(grants) != 0 {
		t.Fatalf("partial unlock: %v %+v", st, grants)
	}
	// Releasing the rest grants b1 (first in the queue); c1 overlaps b1's new lock and
	// waits on; a2 at 100 is free and is granted.
	_, grants = m.Unlock("f", a1, Span(0, 0))
	var got []string
	for _, g := range grants {
		got = append(got, g.Payload.(string))
	}
	if !slices.Equal(got, []string{"b1", "a2"}) {
		t.Fatalf("granted %v, want b1 then a2", got)
	}
	if !m.Waiting("f", c1, false, Span(5, 10)) || m.Waiting("f", b1, true, Span(0, 10)) {
		t.Fatal("queue after the grants")
	}
	// c1 gives up.
	if !m.Cancel("f", c1, false, Span(5, 10)) || m.Cancel("f", c1, false, Span(5, 10)) {
		t.Fatal("Cancel: want found once")
	}
	_, grants = m.Unlock("f", b1, Span(0, 0))
	if len(grants) != 0 {
		t.Fatalf("a cancelled waiter was granted: %+v", grants)
	}
	// A request that can be had at once takes its waiter out of the queue.
	mustLock(t, m, lockReq(b1, true, 0, 100), Granted)
	wait(c1, true, 0, 1, "c1")
	if st, _ := m.Unlock("f", b1, Span(0, 0)); st != Granted {
		t.Fatal(st)
	}
	// c1 was granted by that unlock; asking again (a client retrying) is granted and
	// leaves no waiter behind.
	mustLock(t, m, lockReq(c1, true, 0, 1), Granted)
	if m.Waiting("f", c1, true, Span(0, 1)) || m.hosts["c"].waiters != 0 {
		t.Fatal("waiter left behind")
	}
}

func TestDeadlock(t *testing.T) {
	m := New(Config{})
	r := func(o Owner, file string, off uint64) Request {
		return Request{File: file, Owner: o, Exclusive: true, Range: Span(off, 1), Block: true}
	}
	mustLock(t, m, r(a1, "x", 0), Granted)
	mustLock(t, m, r(b1, "y", 0), Granted)
	mustLock(t, m, r(c1, "z", 0), Granted)
	mustLock(t, m, r(a1, "y", 0), Blocked)  // a1 waits for b1
	mustLock(t, m, r(b1, "z", 0), Blocked)  // b1 waits for c1
	mustLock(t, m, r(c1, "x", 0), Deadlock) // c1 would wait for a1: a cycle
	if m.Waiting("x", c1, true, Span(0, 1)) {
		t.Fatal("a deadlocking request was queued")
	}
	mustLock(t, m, r(c1, "x", 5), Granted) // elsewhere in x it is fine
	// Without blocking it is a plain denial.
	req := r(c1, "x", 0)
	req.Block = false
	mustLock(t, m, req, Denied)
}

func TestGrace(t *testing.T) {
	now := time.Unix(1000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	m := New(Config{Grace: 10 * time.Second, Now: clock})
	if !m.InGrace() || m.GraceLeft() != 10*time.Second {
		t.Fatalf("grace at start: %v %v", m.InGrace(), m.GraceLeft())
	}
	mustLock(t, m, lockReq(a1, true, 0, 0), Grace)
	block := lockReq(b1, true, 0, 0)
	block.Block = true
	mustLock(t, m, block, Grace)
	reclaim := lockReq(a1, true, 0, 10)
	reclaim.Reclaim = true
	mustLock(t, m, reclaim, Granted)
	// A reclaim that conflicts with another reclaim is denied as usual.
	other := lockReq(b1, true, 5, 1)
	other.Reclaim = true
	mustLock(t, m, other, Denied)
	if st, _ := m.Test("f", b1, false, Span(0, 0)); st != Grace {
		t.Errorf("Test in grace: %v", st)
	}
	if st := m.Share("f", b1, ShareRead, 0, false); st != Grace {
		t.Errorf("Share in grace: %v", st)
	}
	if st := m.Share("f", b1, ShareRead, 0, true); st != Granted {
		t.Errorf("Share reclaim in grace: %v", st)
	}
	// Unlock and Cancel are taken in grace.
	if st, _ := m.Unlock("f", a1, Span(0, 5)); st != Granted {
		t.Errorf("Unlock in grace: %v", st)
	}
	mu.Lock()
	now = now.Add(10 * time.Second)
	mu.Unlock()
	if m.InGrace() {
		t.Fatal("grace did not end")
	}
	mustLock(t, m, reclaim, Grace) // a reclaim after grace
	mustLock(t, m, lockReq(b1, true, 20, 1), Granted)
	if st, l := m.Test("f", b1, false, Span(0, 0)); st != Denied || l.Owner != a1 || l.Range != (Range{5, 9}) {
		t.Errorf("Test after grace: %v %+v", st, l)
	}
}

func TestBounds(t *testing.T) {
	m := New(Config{MaxHosts: 2, MaxLocksPerHost: 3, MaxLocks: 6, MaxWaitersPerHost: 1, MaxSharesPerHost: 1})
	mustLock(t, m, lockReq(a1, true, 0, 1), Granted)
	mustLock(t, m, lockReq(a1, true, 10, 1), Granted)
	mustLock(t, m, lockReq(a1, true, 20, 1), Granted)
	mustLock(t, m, lockReq(a1, true, 30, 1), NoLocks)
	mustLock(t, m, lockReq(a1, true, 1, 1), Granted) // merges: still three ranges
	mustLock(t, m, lockReq(b1, true, 100, 10), Granted)
	mustLock(t, m, lockReq(c1, true, 200, 1), NoLocks) // a third host
	// An unlock that would split past the bound changes nothing.
	mustLock(t, m, lockReq(b1, true, 200, 1), Granted)
	mustLock(t, m, lockReq(b1, true, 300, 1), Granted)
	if st, _ := m.Unlock("f", b1, Span(105, 1)); st != NoLocks {
		t.Fatalf("splitting unlock past the bound: %v", st)
	}
	if got := countHost(m.Locks("f"), "b"); got != 3 {
		t.Fatalf("b holds %d ranges", got)
	}
	mustLock(t, m, lockReq(b1, true, 400, 1), NoLocks) // a fourth for b
	if m.locks != 6 {
		t.Fatalf("%d locks, want 6", m.locks)
	}
	wait := lockReq(a1, true, 100, 1)
	wait.Block = true
	mustLock(t, m, wait, Blocked)
	wait.Range = Span(101, 1)
	mustLock(t, m, wait, NoLocks)
	if st := m.Share("s", a1, ShareRead, 0, false); st != Granted {
		t.Fatal(st)
	}
	if st := m.Share("s2", a1, ShareRead, 0, false); st != NoLocks {
		t.Fatalf("a second share: %v", st)
	}
}

func TestMaxLocksInAll(t *testing.T) {
	m := New(Config{MaxLocks: 2})
	mustLock(t, m, lockReq(a1, true, 0, 1), Granted)
	mustLock(t, m, lockReq(b1, true, 10, 1), Granted)
	mustLock(t, m, lockReq(c1, true, 20, 1), NoLocks)
	if _, ok := m.hosts["c"]; ok {
		t.Fatal("a refused host stays in the table")
	}
}

func TestDropHosts(t *testing.T) {
	m := New(Config{})
	mustLock(t, m, lockReq(a1, true, 0, 10), Granted)
	mustLock(t, m, lockReq(a2, true, 10, 10), Granted)
	mustLock(t, m, Request{File: "g", Owner: a1, Exclusive: false, Range: Span(0, 0)}, Granted)
	if m.Share("g", a1, ShareRead, ShareWrite, false) != Granted {
		t.Fatal("share")
	}
	w := lockReq(b1, true, 0, 0)
	w.Block, w.Payload = true, "b1"
	mustLock(t, m, w, Blocked)
	wa := Request{File: "h", Owner: a1, Exclusive: true, Range: Span(0, 0), Block: true}
	mustLock(t, m, Request{File: "h", Owner: c1, Exclusive: true, Range: Span(0, 0)}, Granted)
	mustLock(t, m, wa, Blocked)
	dropped, grants := m.DropHosts(func(h string) bool { return h == "a" })
	if !slices.Equal(dropped, []string{"a"}) || len(grants) != 1 || grants[0].Payload != "b1" || grants[0].File != "f" {
		t.Fatalf("DropHosts: %v %+v", dropped, grants)
	}
	if m.Active("a") || len(m.Locks("g")) != 0 || m.Waiting("h", a1, true, Span(0, 0)) {
		t.Fatal("host a left something behind")
	}
	if m.Share("g", b1, ShareWrite, 0, false) != Granted {
		t.Fatal("a's share survived")
	}
	if got := m.Hosts(); !slices.Equal(got, []string{"b", "c"}) {
		t.Fatalf("hosts %v", got)
	}
	if d, g := m.DropHosts(func(string) bool { return false }); d != nil || g != nil {
		t.Fatal("dropping nobody")
	}
}

func TestShares(t *testing.T) {
	m := New(Config{})
	s := func(o Owner, access, deny uint8, want Status) {
		t.Helper()
		if got := m.Share("f", o, access, deny, false); got != want {
			t.Fatalf("Share(%v, access %d, deny %d) = %v, want %v", o, access, deny, got, want)
		}
	}
	s(a1, ShareRead, ShareWrite, Granted)                          // read, deny writers
	s(b1, ShareRead, 0, Granted)                                   // another reader
	s(c1, ShareWrite, 0, Denied)                                   // a writer is denied
	s(c1, ShareRead, ShareRead, Denied)                            // denying readers while some read
	s(a2, ShareRead|ShareWrite, 0, Denied)                         // another owner of host a
	s(Owner{Host: "a", SVID: 7, OH: "1@a"}, ShareRead, 0, Granted) // a1's own (SVID ignored): replaced
	s(c1, ShareWrite, 0, Granted)                                  // a1 no longer denies writers
	m.Unshare("f", c1)
	m.Unshare("f", b1)
	m.Unshare("f", a1)
	if len(m.files) != 0 || len(m.hosts) != 0 {
		t.Fatalf("left behind: %d files %d hosts", len(m.files), len(m.hosts))
	}
}

// TestAgainstModel runs random operations of four owners on a small file and compares
// the table with a byte-by-byte model after each, and checks that an owner's ranges
// never overlap and its same-mode ranges never touch.
func TestAgainstModel(t *testing.T) {
	const size = 40 // bytes modelled; ranges stay below 32, the last bytes stand for "beyond"
	owners := []Owner{a1, a2, b1, c1}
	type cell map[Owner]bool // owner -> exclusive
	rng := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 200; round++ {
		m := New(Config{})
		model := make([]cell, size)
		for i := range model {
			model[i] = cell{}
		}
		span := func() (Range, int, int) {
			off := rng.IntN(24)
			n := rng.IntN(9)
			if n == 0 {
				return Span(uint64(off), 0), off, size
			}
			return Span(uint64(off), uint64(n)), off, off + n
		}
		for step := 0; step < 60; step++ {
			o := owners[rng.IntN(len(owners))]
			r, from, to := span()
			desc := fmt.Sprintf("round %d step %d: %v %+v", round, step, o.OH, r)
			switch rng.IntN(3) {
			case 0, 1:
				ex := rng.IntN(2) == 0
				want := Granted
				for i := from; i < to; i++ {
					for other, oex := range model[i] {
						if other != o && (oex || ex) {
							want = Denied
						}
					}
				}
				got, _ := m.Lock(Request{File: "f", Owner: o, Exclusive: ex, Range: r})
				if got != want {
					t.Fatalf("%s lock ex=%v: %v, model says %v", desc, ex, got, want)
				}
				if got == Granted {
					for i := from; i < to; i++ {
						model[i][o] = ex
					}
				}
			default:
				if st, _ := m.Unlock("f", o, r); st != Granted {
					t.Fatalf("%s unlock: %v", desc, st)
				}
				for i := from; i < to; i++ {
					delete(model[i], o)
				}
			}
			// Compare.
			got := make([]cell, size)
			for i := range got {
				got[i] = cell{}
			}
			held := m.Locks("f")
			for i, l := range held {
				end := uint64(size - 1)
				if l.Range.End < end {
					end = l.Range.End
				}
				for b := l.Range.Start; b <= end; b++ {
					if _, dup := got[b][l.Owner]; dup {
						t.Fatalf("%s: %v holds byte %d twice", desc, l.Owner.OH, b)
					}
					got[b][l.Owner] = l.Exclusive
				}
				for j, k := range held {
					if j != i && k.Owner == l.Owner && k.Exclusive == l.Exclusive && k.Range.touches(l.Range) {
						t.Fatalf("%s: %+v and %+v were not merged", desc, l, k)
					}
				}
			}
			for b := range size {
				if len(got[b]) != len(model[b]) {
					t.Fatalf("%s: byte %d held by %v, model %v", desc, b, got[b], model[b])
				}
				for o, ex := range model[b] {
					if gex, ok := got[b][o]; !ok || gex != ex {
						t.Fatalf("%s: byte %d held by %v, model %v", desc, b, got[b], model[b])
					}
				}
			}
			if n := len(held); n != m.locks {
				t.Fatalf("%s: %d ranges, counted %d", desc, n, m.locks)
			}
		}
	}
}

// TestConcurrent hammers one table from many goroutines (run with -race): blocking
// locks, unlocks, cancels, tests and host drops; at the end every owner unlocks and the
// table must be empty and no two owners' conflicting locks ever overlapped.
func TestConcurrent(t *testing.T) {
	m := New(Config{})
	var wg sync.WaitGroup
	check := func() {
		held := m.Locks("f")
		for i, x := range held {
			for _, y := range held[i+1:] {
				if x.Owner != y.Owner && x.Range.Overlaps(y.Range) && (x.Exclusive || y.Exclusive) {
					t.Errorf("conflicting locks held together: %+v %+v", x, y)
				}
			}
		}
	}
	for g := 0; g < 8; g++ {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			o := Owner{Host: fmt.Sprintf("h%d", g%3), SVID: int32(g), OH: fmt.Sprint(g)}
			for i := 0; i < 2000; i++ {
				r := Span(uint64(rng.IntN(100)), uint64(rng.IntN(20)))
				switch rng.IntN(6) {
				case 0, 1:
					m.Lock(Request{File: "f", Owner: o, Exclusive: rng.IntN(2) == 0, Range: r, Block: rng.IntN(2) == 0})
				case 2:
					m.Unlock("f", o, r)
				case 3:
					m.Cancel("f", o, true, r)
				case 4:
					m.Test("f", o, true, r)
				default:
					check()
				}
			}
		})
	}
	wg.Go(func() {
		for i := 0; i < 50; i++ {
			m.DropHosts(func(h string) bool { return h == "h0" })
			time.Sleep(time.Millisecond)
		}
	})
	wg.Wait()
	check()
	m.DropHosts(func(string) bool { return true })
	if len(m.files) != 0 || len(m.hosts) != 0 || m.locks != 0 {
		t.Fatalf("left behind: %d files %d hosts %d locks", len(m.files), len(m.hosts), m.locks)
	}
}
