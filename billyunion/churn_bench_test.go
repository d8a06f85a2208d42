package billyunion

import (
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkListingUnderChurn lists a 50,000-entry directory while another goroutine
// creates and removes a file in it every 2 ms, so every lock-free build is spoiled. It
// reports builds per listing: a busy directory (readdircache) is tried once lock-free and
// then built under the directory lock, 2 builds; without that, 5.
//
//	go test -run '^$' -bench ListingUnderChurn -benchtime 6x ./billyunion/
func BenchmarkListingUnderChurn(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root (trusted.overlay xattrs)")
	}
	root := b.TempDir()
	lower, upper, work := filepath.Join(root, "l"), filepath.Join(root, "u"), filepath.Join(root, "w")
	for _, d := range []string{filepath.Join(lower, "big"), filepath.Join(upper, "big"), work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	for i := range 50000 {
		if err := os.WriteFile(filepath.Join(lower, "big", fmt.Sprintf("f%06d", i)), nil, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	fs, err := New(Options{Lowers: []string{lower}, Upper: upper, Work: work, XattrPrefix: "trusted.overlay."})
	if err != nil {
		b.Fatal(err)
	}
	defer fs.Close()
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; !stop.Load(); i++ {
			p := fmt.Sprintf("big/churn%d", i%50)
			if f, err := fs.Create(p); err == nil {
				f.Close()
			}
			_ = fs.Remove(p)
			time.Sleep(2 * time.Millisecond)
		}
	}()
	defer func() { stop.Store(true); <-done }()
	if _, err := fs.ReadDir("big"); err != nil { // the first listing finds the directory busy
		b.Fatal(err)
	}
	before := fs.ListingStats().Misses
	b.ResetTimer()
	for range b.N {
		if _, err := fs.ReadDir("big"); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(fs.ListingStats().Misses-before)/float64(b.N), "builds/op")
}
