// Command workspaces measures the memory of many unions ("workspaces") stacked over one
// lower tree: each has its own upper and work directory and its own handles.Handles, and
// in each the whole tree is walked as an NFS client's `ls -lR` through READDIRPLUS makes
// the server walk it: a listing of every directory, an Lstat and a file handle of every
// entry. It reports the Go heap in use after a collection, the resident set and the open
// descriptors with every workspace still open, for one workspace, for N workspaces each
// opening the lowers on its own, and for N workspaces sharing one billyunion.Shared. Each
// case runs in a child process of its own. Figures go to docs/benchmarks.md.
//
//	go run ./bench/workspaces -entries 100000 -n 50
//
// -heapprofile DIR writes each case's heap profile (go tool pprof -top -sample_index=inuse_space).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/bench/report"
	"github.com/ovlnfs/ovlnfs/billyunion"
	"github.com/ovlnfs/ovlnfs/handles"
)

type result struct {
	Case       string  `json:"case"`
	Workspaces int     `json:"workspaces"`
	Entries    int     `json:"entries"`
	HeapMiB    float64 `json:"heap_mib"`
	RSSMiB     float64 `json:"rss_mib"`
	FDs        int     `json:"fds"`
	FirstWalk  float64 `json:"first_walk_s"`
	OtherWalks float64 `json:"other_walks_s"` // mean of the other workspaces' walks
}

func main() {
	entries := flag.Int("entries", 100000, "entries in the lower tree (directories included)")
	n := flag.Int("n", 50, "workspaces")
	out := flag.String("out", "docs/benchmarks.md", "benchmarks file to update (empty: print only)")
	profiles := flag.String("heapprofile", "", "directory to write each case's heap profile to")
	child := flag.String("child", "", "internal: run one case (one|separate|shared) over -dir")
	dir := flag.String("dir", "", "internal: the scratch directory of -child")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if *child != "" {
		r, err := runChild(*child, *n, *dir, *profiles)
		if err != nil {
			log.Error("child failed", "err", err)
			os.Exit(1)
		}
		json.NewEncoder(os.Stdout).Encode(r)
		return
	}
	if err := run(*entries, *n, *out, *profiles, log); err != nil {
		log.Error("workspaces benchmark failed", "err", err)
		os.Exit(1)
	}
}

func run(entries, n int, out, profiles string, log *slog.Logger) error {
	scratch, err := os.MkdirTemp("/var/tmp", "ovlnfs-bench-workspaces-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	start := time.Now()
	made, err := buildTree(filepath.Join(scratch, "lower"), entries)
	if err != nil {
		return err
	}
	log.Info("lower tree built", "entries", made, "took", time.Since(start).Round(time.Millisecond))
	self, err := os.Executable()
	if err != nil {
		return err
	}
	var rows []result
	cases := []struct {
		name string
		n    int
	}{{"one", 1}, {"separate", n}, {"shared", n}}
	for ci := range cases {
		c := &cases[ci]
		if c.name == "separate" && len(rows) == 1 {
			// Each separate union's directory cache holds a descriptor per cached
			// directory: as many workspaces as the descriptor limit allows.
			var lim unix.Rlimit
			if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err == nil && rows[0].FDs > 0 {
				if fit := int(lim.Max-256) / rows[0].FDs; fit < c.n {
					log.Warn("separate unions limited by the descriptor limit", "limit", lim.Max, "fds_per_union", rows[0].FDs, "workspaces", fit)
					c.n = fit
				}
			}
		}
		args := []string{"-child", c.name, "-n", strconv.Itoa(c.n), "-dir", scratch}
		if profiles != "" {
			args = append(args, "-heapprofile", profiles)
		}
		cmd := exec.Command(self, args...)
		cmd.Stderr = os.Stderr
		o, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("case %s: %v", c.name, err)
		}
		var r result
		if err := json.Unmarshal(o, &r); err != nil {
			return fmt.Errorf("case %s: %v", c.name, err)
		}
		r.Entries = made
		log.Info("measured", "case", r.Case, "workspaces", r.Workspaces, "heap_mib", r.HeapMiB, "rss_mib", r.RSSMiB, "fds", r.FDs,
			"first_walk_s", r.FirstWalk, "other_walks_s", r.OtherWalks)
		rows = append(rows, r)
		if err := os.RemoveAll(filepath.Join(scratch, "uppers")); err != nil {
			return err
		}
	}
	body := section(rows, n, entries)
	fmt.Println(body)
	if out == "" {
		return nil
	}
	return report.UpdateSection(out, "workspaces", body)
}

// buildTree makes a lower tree of about entries entries: 10 top directories of 100
// subdirectories each, the files spread evenly over the subdirectories.
func buildTree(root string, entries int) (int, error) {
	const tops, subs = 10, 100
	files := entries - tops - tops*subs
	if files < 0 {
		files = 0
	}
	per := (files + tops*subs - 1) / (tops * subs)
	made := 0
	for t := 0; t < tops; t++ {
		for s := 0; s < subs; s++ {
			d := filepath.Join(root, fmt.Sprintf("top%02d", t), fmt.Sprintf("sub%03d", s))
			if err := os.MkdirAll(d, 0o755); err != nil {
				return 0, err
			}
			made++
			for f := 0; f < per; f++ {
				if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("file%04d.c", f)), nil, 0o644); err != nil {
					return 0, err
				}
				made++
			}
		}
		made++
	}
	return made, nil
}

func runChild(name string, n int, scratch, profiles string) (result, error) {
	lower := filepath.Join(scratch, "lower")
	var shared *billyunion.Shared
	if name == "shared" {
		var err error
		if shared, err = billyunion.NewShared(billyunion.SharedOptions{Lowers: []string{lower}}); err != nil {
			return result{}, err
		}
		defer shared.Close()
	}
	r := result{Case: name, Workspaces: n}
	type ws struct {
		fs *billyunion.FS
		h  *handles.Handles
	}
	var all []ws
	defer func() {
		for _, w := range all {
			w.fs.Close()
		}
	}()
	var others time.Duration
	for i := 0; i < n; i++ {
		upper := filepath.Join(scratch, "uppers", strconv.Itoa(i), "upper")
		work := filepath.Join(scratch, "uppers", strconv.Itoa(i), "work")
		for _, d := range []string{upper, work} {
			if err := os.MkdirAll(d, 0o755); err != nil {
				return r, err
			}
		}
		opts := billyunion.Options{Upper: upper, Work: work, Shared: shared}
		if shared == nil {
			opts.Lowers = []string{lower}
		}
		fs, err := billyunion.New(opts)
		if err != nil {
			return r, err
		}
		h, err := handles.New(fs, handles.Options{})
		if err != nil {
			fs.Close()
			return r, err
		}
		all = append(all, ws{fs, h})
		start := time.Now()
		if err := walk(fs, h, nil); err != nil {
			return r, fmt.Errorf("workspace %d: %w", i, err)
		}
		if took := time.Since(start); i == 0 {
			r.FirstWalk = took.Seconds()
		} else {
			others += took
		}
	}
	if n > 1 {
		r.OtherWalks = others.Seconds() / float64(n-1)
	}
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r.HeapMiB = float64(ms.HeapInuse) / (1 << 20)
	r.RSSMiB = rssMiB()
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		r.FDs = len(fds)
	}
	if profiles != "" {
		if err := os.MkdirAll(profiles, 0o755); err != nil {
			return r, err
		}
		f, err := os.Create(filepath.Join(profiles, fmt.Sprintf("heap-%s-%d.pprof", name, n)))
		if err != nil {
			return r, err
		}
		defer f.Close()
		if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
			return r, err
		}
	}
	runtime.KeepAlive(all)
	return r, nil
}

// walk lists dir (components) and, for every entry, stats it and makes its handle as
// READDIRPLUS does (handles.ForListing, Listing.Handle), then walks the subdirectories.
func walk(fs *billyunion.FS, h *handles.Handles, dir []string) error {
	p := "/" + strings.Join(dir, "/")
	entries, err := fs.ReadDir(p)
	if err != nil {
		return err
	}
	l, err := h.ForListing(dir)
	if err != nil {
		return err
	}
	defer l.Close()
	for _, fi := range entries {
		c := append(dir[:len(dir):len(dir)], fi.Name())
		if _, err := fs.Lstat("/" + strings.Join(c, "/")); err != nil {
			return err
		}
		if _, err := l.Handle(fi); err != nil {
			return err
		}
		if fi.IsDir() {
			if err := walk(fs, h, c); err != nil {
				return err
			}
		}
	}
	return nil
}

func rssMiB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

func section(rows []result, n, entries int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## Workspaces: %d unions over one lower tree (%s)\n\n", n, time.Now().UTC().Format("2006-01-02"))
	fmt.Fprintf(&b, "`go run ./bench/workspaces -entries %d -n %d` (root, ext4 on /var/tmp, GOMAXPROCS %d). ", entries, n, runtime.GOMAXPROCS(0))
	b.WriteString("Each workspace is a billyunion.FS with its own upper and work directory (index=on, the defaults) and its own handles.Handles; ")
	b.WriteString("in each, the whole tree is walked as `ls -lR` through READDIRPLUS makes the server walk it: ReadDir of every directory, ")
	b.WriteString("Lstat and a handle of every entry, as READDIRPLUS makes them (handles.ForListing, Listing.Handle). Memory is read with every workspace still open: Go heap in use after two ")
	b.WriteString("collections (HeapInuse), the resident set (VmRSS) and the open descriptors. *separate*: each union opens the lowers itself ")
	b.WriteString("(Options.Lowers); *shared*: all use one billyunion.Shared (Options.Shared). Each case runs in a process of its own.\n\n")
	b.WriteString("| case | workspaces | entries | heap in use | RSS | descriptors | first walk | each later walk |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rows {
		later := "–"
		if r.Workspaces > 1 {
			later = fmt.Sprintf("%.2f s", r.OtherWalks)
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %.1f MiB | %.1f MiB | %d | %.2f s | %s |\n", r.Case, r.Workspaces, r.Entries, r.HeapMiB, r.RSSMiB, r.FDs, r.FirstWalk, later)
	}
	return b.String()
}
