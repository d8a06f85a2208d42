package billyunion

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The hot set of BenchmarkHotLookup: hotDirs merged directories four deep, hotFiles
// files in each.
const hotDirs, hotFiles = 128, 4

// BenchmarkHotLookup: Lstat and Identify of warm files four merged directories deep
// (hotDirs times hotFiles of them, one after the other, as a build reads a tree),
// with the directory cache per event, in the whole-cache fallback and off, on a quiet
// filesystem and with unrelated churn on it (startUnrelatedChurn: creates, chmods,
// renames and removes in a directory of its own, thousands of events a second). The
// layers are on tmpfs (/dev/shm), which nothing else on the machine writes to, so
// "quiet" is quiet. hits/op is the directory cache's hits per operation, purges/s and
// events/s what it read.
func BenchmarkHotLookup(b *testing.B) {
	for _, mode := range []cacheMode{cachePerEvent, cacheWhole, cacheOff} {
		for _, churn := range []bool{false, true} {
			for _, op := range []string{"Lstat", "Identify"} {
				name := mode.String() + "/quiet/" + op
				if churn {
					name = mode.String() + "/churn/" + op
				}
				b.Run(name, func(b *testing.B) { benchHotLookup(b, mode, churn, op, false) })
			}
		}
	}
	// A workspace over shared lowers (Options.Shared): the lower-pure directories come
	// from the Shared's lower directory cache (lowercache.go).
	for _, op := range []string{"Lstat", "Identify"} {
		b.Run("shared/quiet/"+op, func(b *testing.B) { benchHotLookup(b, cachePerEvent, false, op, true) })
	}
}

func benchHotLookup(b *testing.B, mode cacheMode, churn bool, op string, shared bool) {
	root, err := os.MkdirTemp("/dev/shm", "ovlnfs-bench-")
	if err != nil {
		b.Skip("no /dev/shm:", err)
	}
	defer os.RemoveAll(root)
	for _, d := range []string{"u/a", "w", "other"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			b.Fatal(err)
		}
	}
	var paths []string
	for i := range hotDirs {
		dir := filepath.Join("a", "b"+itoa(i/8), "c"+itoa(i%8), "d")
		for _, l := range []string{"l1", "l2"} {
			if err := os.MkdirAll(filepath.Join(root, l, dir), 0o755); err != nil {
				b.Fatal(err)
			}
		}
		for j := range hotFiles {
			p := filepath.Join(dir, "f"+itoa(j))
			if err := os.WriteFile(filepath.Join(root, "l1", p), []byte("f"), 0o644); err != nil {
				b.Fatal(err)
			}
			paths = append(paths, p)
		}
	}
	opts := Options{Lowers: []string{filepath.Join(root, "l1"), filepath.Join(root, "l2")}, Upper: filepath.Join(root, "u"),
		Work: filepath.Join(root, "w"), XattrPrefix: "trusted.overlay."}
	if shared {
		s, err := NewShared(SharedOptions{Lowers: opts.Lowers, XattrPrefix: opts.XattrPrefix})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		opts.Shared = s
	}
	fs, err := New(opts)
	if err != nil {
		b.Fatal(err)
	}
	defer fs.Close()
	if shared {
		if fs.lower == nil {
			b.Skip("no shared lower directory cache here")
		}
	} else if fs.dirs.close(); mode == cacheOff {
		fs.dirs = &dirCache{notify: -1}
	} else if fs.dirs = newDirCache(fs.rootPaths, fs.layers, mode); fs.dirs.mode != mode {
		b.Skip("directory cache mode " + fs.dirs.mode.String() + ", not " + mode.String())
	}
	next := 0
	run := func() error {
		p := paths[next%len(paths)]
		next++
		if op == "Lstat" {
			_, err := fs.Lstat(p)
			return err
		}
		_, err := fs.Identify(p)
		return err
	}
	for range 2 * len(paths) {
		if err := run(); err != nil {
			b.Fatal(err)
		}
	}
	if churn {
		startUnrelatedChurn(b, filepath.Join(root, "other"))
		time.Sleep(20 * time.Millisecond)
	}
	cacheStats := fs.DirCacheStats
	if shared {
		cacheStats = opts.Shared.LowerDirCacheStats // where the lower-pure directories are
	}
	before := cacheStats()
	start := time.Now()
	b.ResetTimer()
	for b.Loop() {
		if err := run(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	after, secs := cacheStats(), time.Since(start).Seconds()
	b.ReportMetric(float64(after.Hits-before.Hits)/float64(b.N), "hits/op")
	b.ReportMetric(float64(after.IdentityHits-before.IdentityHits)/float64(b.N), "idhits/op")
	b.ReportMetric(float64(after.Purges-before.Purges)/secs, "purges/s")
	b.ReportMetric(float64(after.Events-before.Events)/secs, "events/s")
}
