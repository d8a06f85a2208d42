package billyunion

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// churnEntries is the size of the directory BenchmarkListingUnderChurn lists.
const churnEntries = 100_000

// churnFS is the benchmark's union, made once: a merged directory big of
// churnEntries lower files (its upper part exists, so a change needs no
// copy-up).
type churnFS struct {
	once sync.Once
	root string
	fs   *FS
	err  error
}

// close removes what get made; the benchmark defers it (a sub-benchmark's
// Cleanup would run before the next sub-benchmark).
func (c *churnFS) close() {
	if c.fs != nil {
		c.fs.Close()
	}
	if c.root != "" {
		os.RemoveAll(c.root)
	}
}

func (c *churnFS) get(b *testing.B) *FS {
	c.once.Do(func() {
		root, err := os.MkdirTemp("", "ovlnfs-churn-")
		if err != nil {
			c.err = err
			return
		}
		c.root = root
		lower, upper, work := filepath.Join(root, "l"), filepath.Join(root, "u"), filepath.Join(root, "w")
		for _, d := range []string{filepath.Join(lower, "big"), filepath.Join(upper, "big"), filepath.Join(upper, "other"), work} {
			if c.err = os.MkdirAll(d, 0o755); c.err != nil {
				return
			}
		}
		for i := range churnEntries {
			if c.err = os.WriteFile(filepath.Join(lower, "big", fmt.Sprintf("f%06d", i)), nil, 0o644); c.err != nil {
				return
			}
		}
		c.fs, c.err = New(Options{Lowers: []string{lower}, Upper: upper, Work: work, XattrPrefix: "trusted.overlay."})
	})
	if c.err != nil {
		b.Fatal(c.err)
	}
	return c.fs
}

// churner changes a directory every 2 ms, alternately creating and removing
// one of 50 names, and times the creates.
type churner struct {
	fs   *FS
	dir  string
	stop chan struct{}
	done chan struct{}

	mu    sync.Mutex
	times []time.Duration // of the creates
	errs  int
}

func startChurn(fs *FS, dir string) *churner {
	c := &churner{fs: fs, dir: dir, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-c.stop:
				return
			case <-tick.C:
			}
			p := fmt.Sprintf("%s/churn%02d", c.dir, i/2%50)
			if i%2 == 1 {
				if c.fs.Remove(p) != nil {
					c.count(0, true)
				}
				continue
			}
			start := time.Now()
			f, err := c.fs.Create(p)
			if err == nil {
				err = f.Close()
			}
			c.count(time.Since(start), err != nil)
		}
	}()
	return c
}

func (c *churner) count(d time.Duration, failed bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if failed {
		c.errs++
		return
	}
	if d > 0 {
		c.times = append(c.times, d)
	}
}

// reset starts counting afresh.
func (c *churner) reset() {
	c.mu.Lock()
	c.times, c.errs = nil, 0
	c.mu.Unlock()
}

func (c *churner) end() {
	close(c.stop)
	<-c.done
}

func (c *churner) report(b *testing.B) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.errs > 0 {
		b.Fatalf("%d creates or removes failed", c.errs)
	}
	if len(c.times) == 0 {
		b.Fatal("no create was timed")
	}
	slices.Sort(c.times)
	var total time.Duration
	for _, d := range c.times {
		total += d
	}
	b.ReportMetric(float64(c.times[len(c.times)-1].Nanoseconds()), "create-max-ns")
	b.ReportMetric(float64(c.times[len(c.times)*99/100].Nanoseconds()), "create-p99-ns")
	b.ReportMetric(float64(total.Nanoseconds())/float64(len(c.times)), "create-avg-ns")
}

// BenchmarkListingUnderChurn lists a 100,000-entry merged directory, big,
// built afresh each time (the cached listing is dropped first):
//
//   - quiet: nothing else goes on; then, with no listing, the changes of
//     churn are made for as long, which times creates on an idle union;
//   - churn: a create or a remove in big every 2 ms, during the listings;
//   - elsewhere: the same changes in another directory during the listings,
//     which times creates on a machine as busy as in churn but with nothing
//     to wait for in the listed directory.
//
// ns/op is one listing. create-max-ns, create-p99-ns and create-avg-ns time
// the creates (a create that waited for a listing would take as long as
// one). builds/op counts whole builds per listing, mend-rounds/op and
// mend-lookups/op the mending of spoiled ones.
//
//	go test -run '^$' -bench ListingUnderChurn -benchtime 8x ./billyunion/
func BenchmarkListingUnderChurn(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root (trusted.overlay xattrs)")
	}
	var shared churnFS
	defer shared.close()
	list := func(b *testing.B, fs *FS) {
		b.Helper()
		fs.listings.ForgetAll()
		fis, err := fs.ReadDir("big")
		if err != nil {
			b.Fatal(err)
		}
		if len(fis) < churnEntries {
			b.Fatalf("%d entries", len(fis))
		}
	}
	run := func(b *testing.B, churnDir string) {
		fs := shared.get(b)
		list(b, fs) // warm the page cache
		var c *churner
		if churnDir != "" {
			c = startChurn(fs, churnDir)
			defer c.end()
			time.Sleep(20 * time.Millisecond) // under way
			c.reset()
		}
		before := fs.ListingStats()
		b.ResetTimer()
		start := time.Now()
		for range b.N {
			list(b, fs)
		}
		b.StopTimer()
		elapsed := time.Since(start)
		st := fs.ListingStats()
		n := float64(b.N)
		b.ReportMetric(float64(st.Misses-before.Misses)/n, "builds/op")
		b.ReportMetric(float64(st.MendRounds-before.MendRounds)/n, "mend-rounds/op")
		b.ReportMetric(float64(st.MendLookups-before.MendLookups)/n, "mend-lookups/op")
		if c == nil {
			// The baseline for creates: the same changes as long, no listing.
			c = startChurn(fs, "big")
			time.Sleep(elapsed)
			c.end()
		}
		c.report(b)
	}
	b.Run("quiet", func(b *testing.B) { run(b, "") })
	b.Run("churn", func(b *testing.B) { run(b, "big") })
	b.Run("elsewhere", func(b *testing.B) { run(b, "other") })
}
