// Command peers measures ovlnfs against what a user would pick instead: NFS-Ganesha
// (FSAL VFS) re-exporting a kernel overlay mount (index=on,nfs_export=on) of identical
// layers. Both servers run on 127.0.0.1 and are driven by the same clients: fio with the
// libnfs engine, libnfs's nfs-ls, and a small libnfs program (client/nfsclient.c). Each
// round starts both servers afresh over their own copy of the lower layer and a fresh
// upper; the jobs alternate between the contenders (A,B in even rounds, B,A in odd
// ones); figures are medians over the rounds, with the ratio ovlnfs/Ganesha (oriented
// so that above 1 means ovlnfs is better) and each server process's CPU seconds per
// GiB moved. The core table goes to docs/benchmarks.md (section "peers"), the scaling
// series (-scaling clients,tree) to sections of their own and SVG plots in docs/.
// ovlnfs serves /metrics during the run, and each of its fio jobs is checked against
// the counters (metricscheck.go, section "peers-metrics"): a mismatch fails the run.
//
//	sh bench/peers/setup.sh                # Debian packages, and fio built with libnfs
//	go run ./bench/peers -rounds 3
//	go run ./bench/peers -core=false -scaling clients,tree -tree-sizes 10000,100000
//
// Needs root (drop_caches, mount -t overlay, whiteouts, a network namespace for
// rpcbind). It is a benchmark, not a test: nothing in `go test ./...` runs it.
package main

import (
	_ "embed"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/bench/benchenv"
	"github.com/ovlnfs/ovlnfs/bench/report"
)

//go:embed client/nfsclient.c
var clientSource []byte

type config struct {
	rounds, scalingRounds int
	out, docs             string
	dir                   string
	keep                  bool
	fio                   string
	ovlnfsBin, rev        string
	runtime               time.Duration
	core                  bool
	jobs                  map[string]bool
	scaling               map[string]bool
	clients               []int
	treeSizes             []int
	seed                  uint64
	bigMiB, treeFiles     int
	perfDir               string
	perfJobs              map[string]bool
}

func main() {
	var c config
	var jobs, scaling, clients, treeSizes, perfJobs string
	flag.IntVar(&c.rounds, "rounds", 3, "interleaved rounds of the core table (medians)")
	flag.IntVar(&c.scalingRounds, "scaling-rounds", 3, "interleaved rounds of each scaling series")
	flag.StringVar(&c.out, "out", "docs/benchmarks.md", "benchmarks file to update")
	flag.StringVar(&c.docs, "svg-dir", "docs", "directory the scaling plots are written to")
	flag.StringVar(&c.dir, "dir", "", "scratch directory (default: a temp dir on /var/tmp, removed at the end)")
	flag.BoolVar(&c.keep, "keep", false, "keep the generated lower layers in -dir for the next run (reused when their spec matches)")
	flag.StringVar(&c.fio, "fio", "/var/cache/ovlnfs-bench/fio/fio", "fio built with --enable-libnfs (bench/peers/setup.sh)")
	flag.StringVar(&c.ovlnfsBin, "ovlnfs", "", "ovlnfs binary (default: go build ./cmd/ovlnfs of the working tree)")
	flag.StringVar(&c.rev, "rev", "", "build ovlnfs from this git revision (git archive) instead of the working tree")
	flag.DurationVar(&c.runtime, "runtime", 10*time.Second, "duration of the time-based random I/O jobs")
	flag.BoolVar(&c.core, "core", true, "run the core table")
	flag.StringVar(&jobs, "jobs", "", "only these core jobs, comma-separated (ls,toolchain,seqread-cold,seqread,par4,randread,seqwrite,randwrite,copyup); the report is then not written unless -out is given explicitly")
	flag.StringVar(&scaling, "scaling", "", "scaling series to run: clients, tree (comma-separated)")
	flag.StringVar(&clients, "clients", "1,4,16", "client counts of the clients series")
	flag.StringVar(&treeSizes, "tree-sizes", "10000,100000", "tree sizes (files) of the tree series; 1000000 works but takes hours here")
	flag.Uint64Var(&c.seed, "seed", 12, "seed of the layer generator")
	flag.IntVar(&c.bigMiB, "big-mib", 1024, "size of the big lower file in MiB")
	flag.IntVar(&c.treeFiles, "tree-files", 20000, "files in the core table's toolchain-like tree")
	flag.StringVar(&c.perfDir, "perf", "", "record a perf profile of the ovlnfs process during -perf-jobs into this directory (figures of such a run are not for the report)")
	flag.StringVar(&perfJobs, "perf-jobs", "seqread,toolchain", "jobs profiled with -perf")
	flag.Parse()
	outGiven := false
	flag.Visit(func(f *flag.Flag) { outGiven = outGiven || f.Name == "out" })
	c.jobs, c.scaling, c.perfJobs = set(jobs), set(scaling), set(perfJobs)
	if len(c.jobs) > 0 && !outGiven {
		c.out = ""
	}
	var err error
	if c.clients, err = ints(clients); err == nil {
		c.treeSizes, err = ints(treeSizes)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err == nil {
		err = run(&c, log)
	}
	exitCleanups.Run()
	if err != nil {
		log.Error("peer benchmark failed", "err", err)
		os.Exit(1)
	}
}

func set(s string) map[string]bool {
	m := map[string]bool{}
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			m[f] = true
		}
	}
	return m
}

func ints(s string) ([]int, error) {
	var r []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("bad number %q", f)
		}
		r = append(r, n)
	}
	return r, nil
}

// exitCleanups run at the end and on SIGINT/SIGTERM: servers, mounts, rpcbind, scratch.
var exitCleanups benchenv.Cleanups

func run(c *config, log *slog.Logger) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root")
	}
	for _, tool := range []string{c.fio, "nfs-ls", "ganesha.nfsd", "rpcbind", "cc", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found: run sh bench/peers/setup.sh", tool)
		}
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sig
		log.Warn("interrupted: cleaning up", "signal", s)
		exitCleanups.Run()
		os.Exit(1)
	}()

	scratch := c.dir
	if scratch == "" {
		var err error
		if scratch, err = os.MkdirTemp("/var/tmp", "ovlnfs-bench-peers-"); err != nil {
			return err
		}
	} else if err := os.MkdirAll(scratch, 0o755); err != nil {
		return err
	}
	if !c.keep {
		exitCleanups.Add(func() { os.RemoveAll(scratch) })
	}
	work, err := os.MkdirTemp(scratch, "run-")
	if err != nil {
		return err
	}
	exitCleanups.Add(func() { os.RemoveAll(work) })

	t := &tools{fio: c.fio, runtime: c.runtime, client: filepath.Join(work, "nfsclient")}
	src := filepath.Join(work, "nfsclient.c")
	if err := os.WriteFile(src, clientSource, 0o644); err != nil {
		return err
	}
	if o, err := exec.Command("cc", "-O2", "-o", t.client, src, "-lnfs").CombinedOutput(); err != nil {
		return fmt.Errorf("cc nfsclient.c -lnfs (package libnfs-dev): %v\n%s", err, o)
	}
	bin, rev, err := benchenv.BuildOvlnfs(c.ovlnfsBin, c.rev, work)
	if err != nil {
		return err
	}
	rb, err := startRpcbind()
	if err != nil {
		return err
	}
	exitCleanups.Add(rb.stop)
	env := envInfo(c, rev)
	var checks []metricsCheck

	if c.core && !(len(c.jobs) > 0 && !anyCore(c.jobs)) {
		var js []job
		for _, j := range coreJobs() {
			if len(c.jobs) == 0 || c.jobs[j.key] {
				js = append(js, j)
			}
		}
		s := spec{BigMiB: c.bigMiB, MidMiB: 64, DirFiles: 10000, TreeFiles: c.treeFiles, Seed: c.seed}
		res, m, err := runSession(c, log, t, scratch, work, bin, s, js, c.rounds)
		if err != nil {
			return err
		}
		if c.out != "" {
			if err := report.UpdateSection(c.out, "peers", formatCore(c, env, m, js, res)); err != nil {
				return err
			}
			log.Info("wrote", "file", c.out, "section", "peers")
		}
		checks = append(checks, metricsChecks(js, res)...)
	}
	if c.scaling["clients"] {
		js := clientJobs(c.clients)
		s := spec{BigMiB: c.bigMiB, MidMiB: 64, DirFiles: 10000, TreeFiles: c.treeFiles, Seed: c.seed}
		res, _, err := runSession(c, log, t, scratch, work, bin, s, js, c.scalingRounds)
		if err != nil {
			return err
		}
		if c.out != "" {
			body, err := formatClients(c, env, js, res)
			if err != nil {
				return err
			}
			if err := report.UpdateSection(c.out, "peers-clients", body); err != nil {
				return err
			}
		}
		checks = append(checks, metricsChecks(js, res)...)
	}
	if c.scaling["tree"] {
		var rows []treeRow
		for _, n := range c.treeSizes {
			js := treeJobs()
			s := spec{TreeFiles: n, Seed: c.seed, TreeOnly: true}
			res, m, err := runSession(c, log, t, scratch, work, bin, s, js, c.scalingRounds)
			if err != nil {
				return err
			}
			rows = append(rows, treeRow{n: n, m: m, res: res})
		}
		if c.out != "" {
			body, err := formatTree(c, env, rows)
			if err != nil {
				return err
			}
			if err := report.UpdateSection(c.out, "peers-tree", body); err != nil {
				return err
			}
		}
	}
	if len(checks) == 0 {
		return nil
	}
	if c.out != "" {
		if err := report.UpdateSection(c.out, "peers-metrics", formatMetricsChecks(c, env, checks)); err != nil {
			return err
		}
		log.Info("wrote", "file", c.out, "section", "peers-metrics")
	}
	var bad []string
	for _, k := range checks {
		if !k.ok {
			bad = append(bad, fmt.Sprintf("%s round %d: %s", k.job, k.round, k.why))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("/metrics disagree with fio: %s", strings.Join(bad, "; "))
	}
	log.Info("/metrics agree with fio", "jobs", len(checks))
	return nil
}

// metricsChecks are ovlnfs's metrics checks of a session, by job then round. A job
// whose check is missing for a round (it failed, or is not a fio job) has none.
func metricsChecks(js []job, res results) []metricsCheck {
	var out []metricsCheck
	for _, j := range js {
		for _, o := range res[j.key][0] {
			if o.check != nil {
				out = append(out, *o.check)
			}
		}
	}
	return out
}

func anyCore(js map[string]bool) bool {
	for _, j := range coreJobs() {
		if js[j.key] {
			return true
		}
	}
	return false
}

// results[job key][contender index] are the outcomes of the rounds.
type results map[string][2][]outcome

// runSession generates (or reuses) the layers of s for both contenders and runs the
// jobs for the given rounds, both servers started afresh in each round.
func runSession(c *config, log *slog.Logger, t *tools, scratch, work, bin string, s spec, js []job, rounds int) (results, *model, error) {
	log.Info("modelling layers", "spec", s.String())
	m := newModel(s)
	t.m = m
	layers := filepath.Join(scratch, "layers-"+s.String())
	cs := []*contender{newOvlnfs(filepath.Join(layers, "A"), bin, work), newGanesha(filepath.Join(layers, "B"), work)}
	for _, ct := range cs {
		stamp := filepath.Join(ct.base, ".spec")
		if b, err := os.ReadFile(stamp); err == nil && string(b) == s.String() {
			log.Info("reusing lower layer", "dir", ct.lower)
			continue
		}
		os.RemoveAll(ct.base)
		log.Info("writing lower layer", "dir", ct.lower, "tree_files", s.TreeFiles)
		t0 := time.Now()
		if err := m.writeLower(ct.lower); err != nil {
			return nil, nil, err
		}
		if err := os.WriteFile(stamp, []byte(s.String()), 0o644); err != nil {
			return nil, nil, err
		}
		log.Info("lower layer written", "seconds", time.Since(t0).Seconds())
	}
	res := results{}
	for r := 0; r < rounds; r++ {
		for _, ct := range cs {
			ct := ct
			if err := ct.start(ct, r); err != nil {
				for _, o := range cs {
					if o.cmd != nil {
						o.stop(o)
					}
				}
				return nil, nil, fmt.Errorf("start %s: %w", ct.name, err)
			}
			if err := m.writeUpper(ct.upper); err != nil {
				return nil, nil, err
			}
			exitCleanups.Add(func() {
				if ct.cmd != nil {
					ct.stop(ct)
				}
			})
		}
		if r == 0 && !s.TreeOnly {
			for _, ct := range cs {
				if err := check(t, ct); err != nil {
					log.Error("first check failed", "contender", ct.name, "err", err)
				}
			}
		}
		order := []int{0, 1}
		if r%2 == 1 {
			order = []int{1, 0}
		}
		for _, j := range js {
			for _, i := range order {
				ct := cs[i]
				o := runOne(c, log, t, ct, j, r)
				v := res[j.key]
				v[i] = append(v[i], o)
				res[j.key] = v
			}
		}
		for _, ct := range cs {
			ct.stop(ct)
			ct.cleanRound(r)
		}
	}
	return res, m, nil
}

func runOne(c *config, log *slog.Logger, t *tools, ct *contender, j job, round int) outcome {
	if !ct.alive() {
		return outcome{err: fmt.Errorf("server not running: %s", benchenv.Tail(ct.logf.Name()))}
	}
	unix.Sync() // no job pays for the writeback of an earlier one
	if err := j.prep(t, ct, round); err != nil {
		return outcome{err: fmt.Errorf("preparing: %w", err)}
	}
	var stopPerf func()
	if c.perfDir != "" && ct.short == "ovlnfs" && c.perfJobs[j.key] {
		stopPerf = perfRecord(c.perfDir, fmt.Sprintf("%s-%s-r%d", ct.short, j.key, round), ct.cmd.Process.Pid, log)
	}
	var before map[string]float64
	if ct.metrics != "" {
		var err error
		if before, err = scrapeMetrics(ct.metrics); err != nil {
			return outcome{err: fmt.Errorf("scraping /metrics before the job: %w", err)}
		}
	}
	t.lastFio = nil
	cpu0 := ct.cpu()
	v, moved, err := j.run(t, ct, round)
	o := outcome{value: v, moved: moved, cpu: ct.cpu() - cpu0, err: err}
	if before != nil && t.lastFio != nil && err == nil {
		after, serr := scrapeMetrics(ct.metrics)
		if serr != nil {
			o.err = fmt.Errorf("scraping /metrics after the job: %w", serr)
			return o
		}
		k := judge(j.key, round, *t.lastFio, delta(before, after))
		o.check = &k
		if !k.ok {
			log.Error("metrics disagree with fio", "job", j.key, "round", round, "why", k.why)
		} else {
			log.Info("metrics agree with fio", "job", j.key, "round", round)
		}
	}
	if stopPerf != nil {
		stopPerf()
	}
	if err != nil {
		log.Error("job failed", "job", j.key, "contender", ct.short, "round", round, "err", err)
	} else {
		log.Info("job", "job", j.key, "contender", ct.short, "round", round, "value", fmt.Sprintf("%.2f %s", v, j.unit),
			"server_cpu_s", fmt.Sprintf("%.2f", o.cpu), "MiB_moved", moved>>20)
	}
	return o
}

// perfRecord samples the process with perf (call graphs by frame pointer, which Go
// binaries keep) until the returned function is called, then writes a text report.
func perfRecord(dir, name string, pid int, log *slog.Logger) func() {
	os.MkdirAll(dir, 0o755)
	data := filepath.Join(dir, name+".data")
	cmd := exec.Command("perf", "record", "-F", "999", "-g", "-p", strconv.Itoa(pid), "-o", data)
	cmd.Stdout, cmd.Stderr = nil, nil
	if err := cmd.Start(); err != nil {
		log.Warn("perf record", "err", err)
		return nil
	}
	time.Sleep(500 * time.Millisecond)
	return func() {
		cmd.Process.Signal(syscall.SIGINT)
		cmd.Wait()
		for _, v := range []struct{ suffix, args string }{
			{".flat.txt", "--no-children --sort symbol"},
			{".children.txt", "--children --sort symbol"},
		} {
			out, err := os.Create(filepath.Join(dir, name+v.suffix))
			if err != nil {
				continue
			}
			rep := exec.Command("sh", "-c", "perf report -i "+data+" --stdio -g none --percent-limit 0.5 "+v.args)
			rep.Stdout = out
			rep.Run()
			out.Close()
		}
		log.Info("perf profile written", "dir", dir, "name", name)
	}
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
