// Command handles measures FromHandle: how long turning an NFS file handle back into a
// path takes with 1,000, 100,000 and 1,000,000 distinct objects known, for ovlnfs's
// package handles and for go-nfs's stock CachingHandler, warm (just handed out) and, for
// ovlnfs, cold (a fresh process's empty cache, page cache dropped). Each contender and
// size runs in a child process of its own so that its resident memory can be reported.
// Figures go to docs/benchmarks.md.
//
//	go run ./bench/handles -sizes 1000,100000,1000000
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/willscott/go-nfs/helpers"
	"github.com/willscott/go-nfs/helpers/memfs"

	"github.com/ovlnfs/ovlnfs/bench/report"
	"github.com/ovlnfs/ovlnfs/billyunion"
	"github.com/ovlnfs/ovlnfs/handles"
)

const filesPerDir = 1000

type result struct {
	Contender   string  `json:"contender"`
	Objects     int     `json:"objects"`
	WarmMedian  float64 `json:"warm_median_us"`
	WarmP99     float64 `json:"warm_p99_us"`
	ColdMedian  float64 `json:"cold_median_us,omitempty"`
	ColdP99     float64 `json:"cold_p99_us,omitempty"`
	Samples     int     `json:"samples"`
	ToHandleAvg float64 `json:"to_handle_avg_us"`
	RSSMiB      float64 `json:"rss_mib"`
	HeapMiB     float64 `json:"heap_mib"`
}

func main() {
	sizes := flag.String("sizes", "1000,100000,1000000", "numbers of distinct objects")
	dir := flag.String("dir", "/var/tmp/ovlnfs-bench-handles", "scratch directory; the file tree is kept for reuse")
	out := flag.String("out", "docs/benchmarks.md", "benchmarks file to update")
	child := flag.String("child", "", "internal: run one contender (ovlnfs|cachinghandler) in this process")
	n := flag.Int("n", 0, "internal: objects for -child")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if *child != "" {
		r, err := runChild(*child, *n, *dir)
		if err != nil {
			log.Error("child failed", "err", err)
			os.Exit(1)
		}
		json.NewEncoder(os.Stdout).Encode(r)
		return
	}
	if err := run(*sizes, *dir, *out, log); err != nil {
		log.Error("handles benchmark failed", "err", err)
		os.Exit(1)
	}
}

func run(sizeList, dir, out string, log *slog.Logger) error {
	var sizes []int
	for _, s := range strings.Split(sizeList, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || v <= 0 {
			return fmt.Errorf("bad size %q", s)
		}
		sizes = append(sizes, v)
	}
	if err := makeTree(dir, slices.Max(sizes), log); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	var results []result
	for _, n := range sizes {
		for _, c := range []string{"ovlnfs", "cachinghandler"} {
			log.Info("measuring", "contender", c, "objects", n)
			cmd := exec.Command(self, "-child", c, "-n", strconv.Itoa(n), "-dir", dir)
			cmd.Stderr = os.Stderr
			b, err := cmd.Output()
			if err != nil {
				return fmt.Errorf("%s at %d: %w", c, n, err)
			}
			var r result
			if err := json.Unmarshal(b, &r); err != nil {
				return err
			}
			results = append(results, r)
		}
	}
	body := format(results)
	fmt.Println(body)
	return report.UpdateSection(out, "handles", body)
}

func treeRoot(dir string) string { return filepath.Join(dir, "lower") }

// makeTree creates n empty files, filesPerDir per directory, once.
func makeTree(dir string, n int, log *slog.Logger) error {
	marker := filepath.Join(dir, fmt.Sprintf("tree-%d.done", n))
	if _, err := os.Stat(marker); err == nil {
		return nil
	}
	log.Info("creating the file tree", "files", n)
	for i := 0; i < n; i++ {
		d := filepath.Join(treeRoot(dir), fmt.Sprintf("d%04d", i/filesPerDir))
		if i%filesPerDir == 0 {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return err
			}
		}
		f, err := os.Create(filepath.Join(d, fmt.Sprintf("f%04d", i%filesPerDir)))
		if err != nil {
			return err
		}
		f.Close()
	}
	return os.WriteFile(marker, nil, 0o644)
}

func objPath(i int) []string {
	return []string{fmt.Sprintf("d%04d", i/filesPerDir), fmt.Sprintf("f%04d", i%filesPerDir)}
}

func runChild(contender string, n int, dir string) (result, error) {
	r := result{Contender: contender, Objects: n}
	toHandle, fromHandle, fresh, err := setup(contender, n, dir)
	if err != nil {
		return r, err
	}
	fhs := make([][]byte, n)
	start := time.Now()
	for i := 0; i < n; i++ {
		if fhs[i], err = toHandle(objPath(i)); err != nil {
			return r, err
		}
	}
	r.ToHandleAvg = us(time.Since(start)) / float64(n)
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r.HeapMiB = float64(ms.HeapInuse) / (1 << 20)
	r.RSSMiB = rssMiB()

	// Warm: handles just handed out, in random order. The stock CachingHandler's
	// FromHandle is linear in its size, so it gets fewer samples when large.
	samples := 20000
	if contender == "cachinghandler" {
		samples = max(20, min(20000, 2_000_000_000/(n*100)))
	}
	r.Samples = samples
	r.WarmMedian, r.WarmP99, err = timeFrom(fromHandle, fhs, samples)
	if err != nil {
		return r, err
	}
	if fresh != nil {
		// Cold: an empty cache (a restarted server) and no page cache.
		fromCold := fresh()
		if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
			return r, fmt.Errorf("dropping caches (needs root): %w", err)
		}
		r.ColdMedian, r.ColdP99, err = timeFrom(fromCold, fhs, min(2000, n))
		if err != nil {
			return r, err
		}
	}
	return r, nil
}

type fromFunc func([]byte) ([]string, error)

func timeFrom(from fromFunc, fhs [][]byte, samples int) (median, p99 float64, err error) {
	ds := make([]float64, 0, samples)
	for s := 0; s < samples; s++ {
		i := rand.IntN(len(fhs))
		t0 := time.Now()
		p, err := from(fhs[i])
		d := time.Since(t0)
		if err != nil {
			return 0, 0, fmt.Errorf("FromHandle of object %d: %w", i, err)
		}
		if want := objPath(i); !slices.Equal(p, want) {
			return 0, 0, fmt.Errorf("object %d resolved to %q, want %q", i, p, want)
		}
		ds = append(ds, us(d))
	}
	slices.Sort(ds)
	return ds[len(ds)/2], ds[len(ds)*99/100], nil
}

func setup(contender string, n int, dir string) (to func([]string) ([]byte, error), from fromFunc, fresh func() fromFunc, err error) {
	switch contender {
	case "ovlnfs":
		upper, work := filepath.Join(dir, "upper"), filepath.Join(dir, "work")
		os.RemoveAll(upper)
		os.RemoveAll(work)
		os.MkdirAll(upper, 0o755)
		os.MkdirAll(work, 0o755)
		u, err := billyunion.New(billyunion.Options{Lowers: []string{treeRoot(dir)}, Upper: upper, Work: work})
		if err != nil {
			return nil, nil, nil, err
		}
		h, err := handles.New(u, handles.Options{CacheEntries: n + 1000})
		if err != nil {
			return nil, nil, nil, err
		}
		fresh = func() fromFunc {
			h2, _ := handles.New(u, handles.Options{CacheEntries: n + 1000})
			return h2.FromHandle
		}
		return h.ToHandle, h.FromHandle, fresh, nil
	case "cachinghandler":
		// The CachingHandler never touches the filesystem in ToHandle/FromHandle.
		fs := memfs.New()
		ch := helpers.NewCachingHandler(helpers.NewNullAuthHandler(fs), n+1000)
		to = func(p []string) ([]byte, error) { return ch.ToHandle(fs, p), nil }
		from = func(fh []byte) ([]string, error) {
			_, p, err := ch.FromHandle(fh)
			return p, err
		}
		return to, from, nil, nil
	}
	return nil, nil, nil, fmt.Errorf("unknown contender %q", contender)
}

func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1000 }

func rssMiB() float64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				kb, _ := strconv.ParseFloat(f[1], 64)
				return kb / 1024
			}
		}
	}
	return 0
}

func format(rs []result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## File handles: FromHandle latency (%s)\n\n", time.Now().UTC().Format("2006-01-02"))
	b.WriteString("`go run ./bench/handles -sizes 1000,100000,1000000` (root: it drops the page cache). Objects are\n")
	b.WriteString("files in a lower layer, 1,000 per directory. Every contender first makes a handle for every\n")
	b.WriteString("object (ToHandle), then resolves random ones. ovlnfs's warm FromHandle includes confirming the\n")
	b.WriteString("object through the union (one union lookup of the path); cold is a fresh Handles (a restarted\n")
	b.WriteString("server) with the page cache dropped. RSS and heap are of a process holding that many handles.\n\n")
	b.WriteString("| objects | contender | warm median | warm p99 | cold median | cold p99 | ToHandle avg | RSS | heap |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rs {
		cold, coldp := "n/a (handles die with the process)", ""
		if r.ColdMedian > 0 {
			cold, coldp = fmt.Sprintf("%.1f us", r.ColdMedian), fmt.Sprintf("%.1f us", r.ColdP99)
		}
		fmt.Fprintf(&b, "| %d | %s | %s | %s | %s | %s | %.1f us | %.0f MiB | %.0f MiB |\n", r.Objects, r.Contender,
			fmtUS(r.WarmMedian), fmtUS(r.WarmP99), cold, coldp, r.ToHandleAvg, r.RSSMiB, r.HeapMiB)
	}
	b.WriteString("\nRatios (CachingHandler warm median / ovlnfs warm median):")
	for i := 0; i+1 < len(rs); i += 2 {
		if rs[i].WarmMedian > 0 {
			fmt.Fprintf(&b, " %d objects: %.1fx;", rs[i].Objects, rs[i+1].WarmMedian/rs[i].WarmMedian)
		}
	}
	b.WriteString("\n\n")
	b.WriteString(targetNote)
	return b.String()
}

const targetNote = `Target was under 5 us warm at 1,000,000: not met. ovlnfs's warm cost is flat in the number of
objects but is one confirming union lookup (openat/fstatat per component and layer, plus
name_to_handle_at); the path-cache hit alone is well under 1 us, but returning it unconfirmed could
name another object after a layer changed underneath. Cold = open_by_handle_at of the parent
directory plus confirming lookups of the parent and the file, from disk.
`

func fmtUS(v float64) string {
	if v >= 1000 {
		return fmt.Sprintf("%.2f ms", v/1000)
	}
	return fmt.Sprintf("%.1f us", v)
}
