// Command readdir measures full READDIRPLUS listings of a big merged directory through a
// real `ovlnfs serve`, cold (server just started, no listing cached) and warm (listing
// cached), beside a plain go-nfs export (bench/readdir/plaingonfs) of an equal plain
// directory. The client is libnfs's nfs-ls. It also measures the union's own listing cold
// and warm and the memory a cached listing takes, in-process. Figures go to
// docs/benchmarks.md (section "readdir").
//
//	go run ./bench/readdir -sizes 10000,100000 -rounds 2
//
// Needs root (whiteouts are character devices) and nfs-ls (package libnfs-utils).
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/bench/report"
	"github.com/ovlnfs/ovlnfs/billyunion"
	"github.com/ovlnfs/ovlnfs/internal/bigdir"
)

func main() {
	sizes := flag.String("sizes", "10000,100000", "entries in the merged directory, comma-separated")
	rounds := flag.Int("rounds", 2, "cold rounds (a server restart each); each is followed by as many warm listings")
	plainLimit := flag.Duration("plain-timeout", 5*time.Minute, "give up on one plain go-nfs listing after this long")
	out := flag.String("out", "docs/benchmarks.md", "benchmarks file to update")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(*sizes, *rounds, *plainLimit, *out, log); err != nil {
		log.Error("readdir benchmark failed", "err", err)
		os.Exit(1)
	}
}

type row struct {
	n                            int
	ovlCold, ovlWarm             time.Duration
	plainFirst, plainSecond      time.Duration
	plainFirstErr, plainSecondTO bool
	unionCold, unionWarm         time.Duration
	bytesPerEntry                float64
	bytesWithIDs                 float64 // after READDIRPLUS cached every entry's identity
}

func run(sizesFlag string, rounds int, plainLimit time.Duration, out string, log *slog.Logger) error {
	if _, err := exec.LookPath("nfs-ls"); err != nil {
		return fmt.Errorf("nfs-ls not found (apt-get install libnfs-utils)")
	}
	scratch, err := os.MkdirTemp("/var/tmp", "ovlnfs-bench-readdir-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(scratch)
	bins := filepath.Join(scratch, "bin")
	for _, b := range [][2]string{{"ovlnfs", "./cmd/ovlnfs"}, {"plaingonfs", "./bench/readdir/plaingonfs"}} {
		if o, err := exec.Command("go", "build", "-o", filepath.Join(bins, b[0]), b[1]).CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", b[1], err, o)
		}
	}
	var rows []row
	for _, s := range strings.Split(sizesFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("bad size %q", s)
		}
		r, err := measure(n, rounds, plainLimit, scratch, bins, log)
		if err != nil {
			return err
		}
		rows = append(rows, r)
	}
	return report.UpdateSection(out, "readdir", format(rows, rounds))
}

func measure(n, rounds int, plainLimit time.Duration, scratch, bins string, log *slog.Logger) (row, error) {
	r := row{n: n}
	root := filepath.Join(scratch, fmt.Sprintf("n%d", n))
	log.Info("writing fixture", "entries", n)
	fx, err := bigdir.Write(root, n)
	if err != nil {
		return r, err
	}
	plain := filepath.Join(root, "plain")
	if err := os.MkdirAll(filepath.Join(plain, bigdir.Dir), 0o755); err != nil {
		return r, err
	}
	for _, name := range fx.Visible {
		if err := unix.Mknod(filepath.Join(plain, bigdir.Dir, name), unix.S_IFREG|0o644, 0); err != nil {
			return r, err
		}
	}

	// In-process: the union's own listing, cold and warm, and the heap a cached one holds.
	r.unionCold, r.unionWarm, r.bytesPerEntry, r.bytesWithIDs, err = unionFigures(fx, n)
	if err != nil {
		return r, err
	}
	log.Info("union in-process", "entries", n, "cold", r.unionCold, "warm", r.unionWarm, "bytes_per_entry", r.bytesPerEntry, "with_identities", r.bytesWithIDs)

	var colds, warms []time.Duration
	for round := 0; round < rounds; round++ {
		srv, port, err := start(filepath.Join(bins, "ovlnfs"), "serve", "--lowerdir="+fx.Lower1+":"+fx.Lower2,
			"--upperdir="+fx.Upper, "--workdir="+fx.Work, "--listen=127.0.0.1:0")
		if err != nil {
			return r, err
		}
		cold, err := nfsLs(port, n, 0)
		if err == nil {
			colds = append(colds, cold)
			var warm time.Duration
			if warm, err = nfsLs(port, n, 0); err == nil {
				warms = append(warms, warm)
			}
		}
		stop(srv)
		if err != nil {
			return r, err
		}
		log.Info("ovlnfs round", "entries", n, "round", round, "cold", cold, "warm", warms[len(warms)-1])
	}
	r.ovlCold, r.ovlWarm = median(colds), median(warms)

	srv, port, err := start(filepath.Join(bins, "plaingonfs"), "-dir", filepath.Join(plain, bigdir.Dir), "-listen", "127.0.0.1:0")
	if err != nil {
		return r, err
	}
	defer stop(srv)
	if r.plainFirst, err = nfsLs(port, n, plainLimit); err != nil {
		r.plainFirstErr = true
		log.Warn("plain go-nfs listing did not finish", "entries", n, "err", err)
		return r, nil
	}
	if r.plainSecond, err = nfsLs(port, n, plainLimit); err != nil {
		r.plainSecondTO = true
	}
	log.Info("plain go-nfs", "entries", n, "first", r.plainFirst, "second", r.plainSecond)
	return r, nil
}

// unionFigures lists the merged directory with billyunion directly: a cold listing (built
// from the layers), a warm one (from the cache), and the heap growth the cached listing
// causes, measured after GC with nothing but the cache holding the listing; then again
// once every entry's identity is cached in it, as READDIRPLUS leaves it.
func unionFigures(fx *bigdir.Layers, n int) (cold, warm time.Duration, perEntry, withIDs float64, err error) {
	fs, err := billyunion.New(billyunion.Options{Lowers: []string{fx.Lower1, fx.Lower2}, Upper: fx.Upper, Work: fx.Work})
	if err != nil {
		return 0, 0, 0, 0, err
	}
	defer fs.Close()
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	t0 := time.Now()
	entries, err := fs.ReadDir(bigdir.Dir)
	cold = time.Since(t0)
	if err != nil || len(entries) != n {
		return 0, 0, 0, 0, fmt.Errorf("union listing: %d entries, %v", len(entries), err)
	}
	entries = nil
	after := heap()
	perEntry = float64(int64(after)-int64(before)) / float64(n)
	var warms []time.Duration
	for i := 0; i < 5; i++ {
		t0 = time.Now()
		if _, err := fs.ReadDir(bigdir.Dir); err != nil {
			return 0, 0, 0, 0, err
		}
		warms = append(warms, time.Since(t0))
	}
	entries, err = fs.ReadDir(bigdir.Dir)
	if err != nil {
		return 0, 0, 0, 0, err
	}
	for _, fi := range entries {
		if _, err := fs.EntryIdentity(bigdir.Dir, fi); err != nil {
			return 0, 0, 0, 0, err
		}
	}
	entries = nil
	withIDs = float64(int64(heap())-int64(before)) / float64(n)
	runtime.KeepAlive(fs)
	return cold, median(warms), perEntry, withIDs, nil
}

type proc struct{ cmd *exec.Cmd }

// start runs a server with its listen address 127.0.0.1:0 and reads the port it got from
// its output.
func start(bin string, args ...string) (*proc, int, error) {
	cmd := exec.Command(bin, args...)
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, 0, err
	}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return nil, 0, err
	}
	pw.Close()
	found := make(chan int, 1)
	go func() {
		buf := make([]byte, 64<<10)
		var text strings.Builder
		sent := false
		for {
			k, err := pr.Read(buf)
			text.Write(buf[:k])
			if !sent {
				for _, f := range strings.Fields(text.String()) {
					f = strings.TrimPrefix(f, "listen=")
					if i := strings.LastIndex(f, "127.0.0.1:"); i >= 0 {
						if p, err := strconv.Atoi(strings.Trim(f[i+len("127.0.0.1:"):], "\"")); err == nil && p > 0 {
							found <- p
							sent = true
							break
						}
					}
				}
			}
			if err != nil {
				if !sent {
					close(found)
				}
				return
			}
		}
	}()
	select {
	case p, ok := <-found:
		if ok {
			return &proc{cmd}, p, nil
		}
	case <-time.After(30 * time.Second):
	}
	stop(&proc{cmd})
	return nil, 0, fmt.Errorf("%s did not report its port", bin)
}

func stop(p *proc) {
	_ = p.cmd.Process.Signal(unix.SIGTERM)
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
}

// nfsLs lists the big directory with nfs-ls and checks it got every entry.
func nfsLs(port, n int, limit time.Duration) (time.Duration, error) {
	if limit == 0 {
		limit = 10 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	// libnfs mounts the URL's path and lists the mount's root: ovlnfs mounts the directory,
	// the plain export (which ignores mount paths) exports the directory itself.
	url := fmt.Sprintf("nfs://127.0.0.1/%s?version=3&nfsport=%d&mountport=%d&auto-traverse-mounts=0", bigdir.Dir, port, port)
	t0 := time.Now()
	outb, err := exec.CommandContext(ctx, "nfs-ls", url).Output()
	d := time.Since(t0)
	if err != nil {
		return d, fmt.Errorf("nfs-ls: %v", err)
	}
	if got := strings.Count(string(outb), "\n"); got != n {
		return d, fmt.Errorf("nfs-ls listed %d entries, want %d", got, n)
	}
	return d, nil
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

func perEntry(d time.Duration, n int) string {
	return fmt.Sprintf("%.1f µs", float64(d.Microseconds())/float64(n))
}

func format(rows []row, rounds int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## Listing a big merged directory (READDIRPLUS)\n\n")
	fmt.Fprintf(&b, "Measured %s on this machine. Reproduce: `go run ./bench/readdir -sizes %s -rounds %d` (root; libnfs-utils).\n\n",
		time.Now().UTC().Format("2006-01-02"), sizesOf(rows), rounds)
	b.WriteString("The merged directory spreads its entries over two lowers and the upper, with every tenth name overridden by a higher layer and n/10 more lower names whited out (internal/bigdir). ")
	b.WriteString("The client is libnfs `nfs-ls` (READDIRPLUS; ovlnfs fills each reply to the client's maxcount, cmd/ovlnfs/readdir.go). ")
	fmt.Fprintf(&b, "ovlnfs cold = first listing after the server started (the listing is built from the layers); warm = the next listing (served from the cached snapshot); medians of %d rounds. ", rounds)
	b.WriteString("The plain go-nfs export (bench/readdir/plaingonfs: helpers.NewNullAuthHandler + NewCachingHandler over osfs) serves an equal plain directory; its first and second listings are shown.\n\n")
	b.WriteString("| entries | ovlnfs cold | ovlnfs warm | warm speed-up | warm per entry | plain go-nfs 1st | plain go-nfs 2nd | plain 1st / ovlnfs warm |\n|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		p1, p2, ratio := secs(r.plainFirst), secs(r.plainSecond), "-"
		if r.plainFirstErr {
			p1, p2 = "did not finish", "-"
		} else {
			ratio = fmt.Sprintf("%.2fx", r.plainFirst.Seconds()/r.ovlWarm.Seconds())
			if r.plainSecondTO {
				p2 = "did not finish"
			}
		}
		fmt.Fprintf(&b, "| %d | %s | %s | %.2fx | %s | %s | %s | %s |\n", r.n, secs(r.ovlCold), secs(r.ovlWarm),
			r.ovlCold.Seconds()/r.ovlWarm.Seconds(), perEntry(r.ovlWarm, r.n), p1, p2, ratio)
	}
	b.WriteString("\nThe union's own listing, in-process (billyunion.ReadDir; cold builds it from the layers, warm returns a copy of the cached snapshot), and the heap a cached listing holds (runtime.MemStats.HeapAlloc after GC, before and after caching the listing, divided by its entries):\n\n")
	b.WriteString("| entries | union cold | union warm | warm speed-up | cold per entry | warm per entry | heap per cached entry | with identities cached |\n|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %d | %s | %s | %.0fx | %s | %s | %.0f bytes | %.0f bytes |\n", r.n, secs(r.unionCold), fmt.Sprintf("%.2f ms", float64(r.unionWarm.Microseconds())/1000),
			r.unionCold.Seconds()/r.unionWarm.Seconds(), perEntry(r.unionCold, r.n), fmt.Sprintf("%.3f µs", float64(r.unionWarm.Nanoseconds())/1000/float64(r.n)), r.bytesPerEntry, r.bytesWithIDs)
	}
	b.WriteString("\nThrough NFS, a cold listing builds the snapshot (every layer read, every entry looked up) and makes each entry's handle with a union lookup, caching the identity in the snapshot entry; a warm listing finds the snapshot, positions at the cookie by index and only encodes. go-nfs's own READDIRPLUS (the plain export) scans the listing from the start on every page and makes a handle per entry, so paging through a big directory is quadratic there. \"did not finish\" = not within -plain-timeout.\n")
	return b.String()
}

func sizesOf(rows []row) string {
	var s []string
	for _, r := range rows {
		s = append(s, strconv.Itoa(r.n))
	}
	return strings.Join(s, ",")
}
