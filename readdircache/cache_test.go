package readdircache

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A change landing between a build's end and its publication makes the
// build unpublishable: the caller gets a fresh build, and the cache holds
// the fresh one.
func TestStaleBuildIsNeverPublished(t *testing.T) {
	c, _ := New[string](8)
	key := Key{1, 2}
	state := []string{"a"}
	var calls int
	c.SetBeforePublishHook(func(Key) {
		calls++
		if calls == 1 {
			state = []string{"a", "b"} // the change...
			c.Invalidate(key)          // ...and its invalidation, mid-build
		}
	})
	build := func(uint64) ([]string, error) { return append([]string(nil), state...), nil }
	s, err := c.Get(key, "sig", build)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Entries) != 2 {
		t.Fatalf("got the stale listing %v", s.Entries)
	}
	if calls != 2 {
		t.Fatalf("expected a rebuild, builds: %d", calls)
	}
	again, _ := c.Get(key, "sig", func(uint64) ([]string, error) { t.Fatal("should hit"); return nil, nil })
	if again != s {
		t.Fatal("the fresh build was not the one cached")
	}
	if st := c.Stats(); st.Stale != 1 || st.Hits != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestConcurrentRequestsShareOneBuild(t *testing.T) {
	c, _ := New[int](8)
	var builds atomic.Int64
	release := make(chan struct{})
	var wg sync.WaitGroup
	var first *Snapshot[int]
	var mu sync.Mutex
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := c.Get(Key{1, 1}, "s", func(uint64) ([]int, error) {
				builds.Add(1)
				<-release
				return []int{1, 2, 3}, nil
			})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			if first == nil {
				first = s
			} else if first != s {
				t.Error("callers got different snapshots")
			}
			mu.Unlock()
		}()
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	if builds.Load() != 1 {
		t.Fatalf("%d builds for one directory", builds.Load())
	}
}

func TestSignatureChangeRebuilds(t *testing.T) {
	c, _ := New[int](8)
	n := 0
	build := func(uint64) ([]int, error) { n++; return []int{n}, nil }
	a, _ := c.Get(Key{1, 1}, "v1", build)
	b, _ := c.Get(Key{1, 1}, "v1", build)
	d, _ := c.Get(Key{1, 1}, "v2", build)
	if a != b || d == a || d.Entries[0] != 2 {
		t.Fatalf("signature handling: %v %v %v", a.Entries, b.Entries, d.Entries)
	}
	if old, ok := c.ByID(a.ID); !ok || old != a {
		t.Fatal("an older snapshot should stay reachable by ID for paging clients")
	}
}

func TestBuildErrorIsNotCached(t *testing.T) {
	c, _ := New[int](8)
	boom := errors.New("boom")
	if _, err := c.Get(Key{1, 1}, "s", func(uint64) ([]int, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("got %v", err)
	}
	s, err := c.Get(Key{1, 1}, "s", func(uint64) ([]int, error) { return []int{7}, nil })
	if err != nil || s.Entries[0] != 7 {
		t.Fatalf("after an error the next call must build: %v %v", s, err)
	}
}

func TestBoundedSize(t *testing.T) {
	c, _ := New[int](4)
	for i := uint64(0); i < 100; i++ {
		c.Get(Key{1, i}, "s", func(uint64) ([]int, error) { return []int{int(i)}, nil })
	}
	if n := c.Stats().Cached; n != 4 {
		t.Fatalf("%d listings cached, limit 4", n)
	}
}

// Snapshot IDs serve as NFS cookie verifiers that clients keep across a
// server restart, so two caches (two server runs) must not number their
// snapshots alike.
func TestIDsDifferAcrossCaches(t *testing.T) {
	build := func(uint64) ([]string, error) { return []string{"a"}, nil }
	seen := map[uint64]bool{}
	for i := 0; i < 4; i++ {
		c, err := New[string](4)
		if err != nil {
			t.Fatal(err)
		}
		s, err := c.Get(Key{1, 1}, "sig", build)
		if err != nil {
			t.Fatal(err)
		}
		if s.ID == 0 || seen[s.ID] {
			t.Fatalf("snapshot ID %d repeats across caches or is 0 (seen %v)", s.ID, seen)
		}
		seen[s.ID] = true
	}
}

// A listing served from the cache stays pageable by its verifier however many snapshots
// of other directories were made since: a hit makes the snapshot recent again. Without
// that, a quiet directory next to a busy one answered BAD_COOKIE on every second page
// for as long as its listing stayed cached.
func TestCachedListingKeepsItsVerifier(t *testing.T) {
	c, _ := New[string](4)
	quiet := Key{1, 1}
	s, err := c.Get(quiet, "q", func(uint64) ([]string, error) { return []string{"a"}, nil })
	if err != nil {
		t.Fatal(err)
	}
	busy := Key{1, 2}
	for i := range 10 {
		sig := Signature("b" + string(rune('0'+i)))
		if _, err := c.Get(busy, sig, func(uint64) ([]string, error) { return []string{"x"}, nil }); err != nil {
			t.Fatal(err)
		}
	}
	again, err := c.Get(quiet, "q", func(uint64) ([]string, error) { t.Fatal("should hit"); return nil, nil })
	if err != nil || again != s {
		t.Fatalf("quiet directory: %v, %v; want the cached snapshot", again, err)
	}
	if got, ok := c.ByID(again.ID); !ok || got != s {
		t.Fatalf("ByID of the listing just served: %v, %v; a client paging it gets BAD_COOKIE", got, ok)
	}
}
