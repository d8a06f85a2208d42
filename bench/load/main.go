// Command load is the load run of ovlnfs: many client connections doing a mix of NFSv3
// operations for a while, every answer checked, and the server process watched for
// growth. It builds cmd/ovlnfs, writes two lower layers (a tree of a few thousand files
// with overrides, whiteouts and opaque directories, symbolic links, big files, and a
// directory per client with lower files to copy up) and an empty upper, starts
// `ovlnfs serve` on 127.0.0.1 with --pprof-listen on another loopback port, and opens
// -conns connections (go-nfs-client: one TCP connection and one MOUNT each). Each runs
// the mix until -duration is over: LOOKUP/GETATTR walks, READDIRPLUS listings, READs of
// small files and of 1 MiB of big ones, WRITE+COMMIT, truncation, CREATE/REMOVE,
// MKDIR/RMDIR, RENAME, chmod, SYMLINK and READLINK. Reads are checked against the
// layers' content; changes happen in the client's own directory, which the client models
// exactly (read back after every write, listings compared, handles kept across renames
// and copy-up, removed objects' handles STALE). Once a second the server's RSS, open
// descriptors, threads, goroutines and live heap are sampled; after the clients leave,
// the run waits and samples again (the open-file cache closes idle files after 5 s).
// Figures go to docs/benchmarks.md (section "load").
//
//	go run ./bench/load -conns 64 -duration 60s
//
// Needs root (whiteouts are character devices, the opaque xattr is trusted.*). It is a
// benchmark, not a test: nothing in `go test ./...` runs it.
package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"

	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/willscott/go-nfs-client/nfs/rpc"

	"github.com/ovlnfs/ovlnfs/bench/benchenv"
	"github.com/ovlnfs/ovlnfs/bench/report"
)

type config struct {
	conns     int
	duration  time.Duration
	settle    time.Duration
	bigMiB    int
	bigFiles  int
	out       string
	dir       string
	ovlnfsBin string
	rev       string
	dumpDir   string
	section   string
}

func main() {
	var c config
	flag.IntVar(&c.conns, "conns", 64, "client connections")
	flag.DurationVar(&c.duration, "duration", 60*time.Second, "how long the clients run the mix")
	flag.DurationVar(&c.settle, "settle", 15*time.Second, "how long to watch the idle server after the clients left")
	flag.IntVar(&c.bigMiB, "big-mib", 128, "size of each big lower file in MiB")
	flag.IntVar(&c.bigFiles, "big-files", 4, "big lower files")
	flag.StringVar(&c.out, "out", "docs/benchmarks.md", "benchmarks file to update (\"\" for none)")
	flag.StringVar(&c.dir, "dir", "", "scratch directory (default: a temp dir on /var/tmp, removed at the end)")
	flag.StringVar(&c.ovlnfsBin, "ovlnfs", "", "ovlnfs binary (default: go build ./cmd/ovlnfs of the working tree)")
	flag.StringVar(&c.rev, "rev", "", "build ovlnfs from this git revision (git archive) instead of the working tree")
	flag.StringVar(&c.dumpDir, "dump-dir", "", "write the server's goroutine dumps (debug=2) and its log here")
	flag.StringVar(&c.section, "section", "load", "the section of -out to write (<!-- bench:NAME begin/end -->)")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	err := run(&c, log)
	exitCleanups.Run()
	if err != nil {
		log.Error("load run failed", "err", err)
		os.Exit(1)
	}
}

// exitCleanups run at the end and on SIGINT/SIGTERM: the server, the scratch directory.
var exitCleanups benchenv.Cleanups

// result is everything the report needs.
type result struct {
	c          *config
	rev        string
	m          *model
	samples    []sample
	tot        totals
	lat        *latencies
	elapsed    time.Duration
	errs       *errLog
	verfs      int
	exitStatus string
	serverLog  []string // warnings and errors the server logged
	groupsLoad []string // goroutine groups at the end of the load
	groupsIdle []string // ... and after the clients left
	dumpIdle   string   // debug=2 dump after the clients left
	cpuLoad    float64  // server CPU seconds during the load
	cpuClients float64  // this process's CPU seconds during the load
	setupTime  time.Duration
	loadavg    [2]string // the machine's 1-minute load average when the load started and ended
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

func run(c *config, log *slog.Logger) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (whiteouts in the lower layers are character devices)")
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sig
		log.Warn("interrupted: cleaning up", "signal", s)
		exitCleanups.Run()
		os.Exit(1)
	}()
	// A reply slower than the library's 5 s default would make it send the call again,
	// and a repeated CREATE, REMOVE or RENAME fails: wait instead (latencies show it).
	rpc.DefaultReadTimeout = 5 * time.Minute

	scratch := c.dir
	if scratch == "" {
		var err error
		if scratch, err = os.MkdirTemp("/var/tmp", "ovlnfs-bench-load-"); err != nil {
			return err
		}
		exitCleanups.Add(func() { os.RemoveAll(scratch) })
	} else {
		if err := os.MkdirAll(scratch, 0o755); err != nil {
			return err
		}
		scratch, _ = os.MkdirTemp(scratch, "run-")
		exitCleanups.Add(func() { os.RemoveAll(scratch) })
	}
	r := &result{c: c, errs: newErrLog()}
	bin, rev, err := benchenv.BuildOvlnfs(c.ovlnfsBin, c.rev, scratch)
	if err != nil {
		return err
	}
	r.rev = rev
	log.Info("writing layers", "conns", c.conns, "big files", c.bigFiles, "MiB each", c.bigMiB)
	m, err := writeLayers(filepath.Join(scratch, "layers"), c.conns, c.bigFiles, int64(c.bigMiB)<<20)
	if err != nil {
		return fmt.Errorf("writing the layers: %w", err)
	}
	r.m = m
	log.Info("layers written", "visible files", len(m.files), "hidden", len(m.hidden), "directories", len(m.dirs), "MiB", m.bytes>>20)

	srv, err := startServer(bin, m, filepath.Join(scratch, "ovlnfs.log"))
	if err != nil {
		return err
	}
	exitCleanups.Add(func() { srv.stop() })
	log.Info("server started", "pid", srv.cmd.Process.Pid, "listen", srv.addr, "pprof", srv.pprof)
	smp := newSampler(srv.cmd.Process.Pid, srv.pprof, filepath.Join(scratch, "layers"))
	smp.t0 = time.Now()
	for i := 0; i < 3; i++ {
		r.samples = append(r.samples, smp.take(phaseIdle))
		time.Sleep(time.Second)
	}

	// connect and set up every client
	setupStart := time.Now()
	workers := make([]*worker, c.conns)
	verfs := &verifiers{seen: map[[8]byte]int{}}
	var wg sync.WaitGroup
	var setupErr error
	var setupMu sync.Mutex
	for i := range workers {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			cn, err := dial(srv.addr, newLatencies())
			if err == nil {
				w := newWorker(i, cn, m, r.errs, verfs)
				if err = w.setup(); err == nil {
					cn.lat = newLatencies() // count the mix only
					workers[i] = w
					return
				}
				cn.close()
			}
			setupMu.Lock()
			setupErr = errors.Join(setupErr, fmt.Errorf("client %d: %w", i, err))
			setupMu.Unlock()
		}(i)
	}
	wg.Wait()
	r.setupTime = time.Since(setupStart)
	if setupErr != nil {
		for _, w := range workers {
			if w != nil {
				w.c.close()
			}
		}
		return fmt.Errorf("connecting the clients: %w", setupErr)
	}
	log.Info("clients connected", "conns", c.conns, "took", r.setupTime.Round(time.Millisecond))

	// the load
	stopSampling := make(chan struct{})
	sampled := make(chan []sample)
	smp.t0 = time.Now()
	cpu0, self0 := benchenv.CPUSeconds(srv.cmd.Process.Pid), benchenv.CPUSeconds(os.Getpid())
	go func() {
		var ss []sample
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stopSampling:
				sampled <- ss
				return
			case <-tick.C:
				s := smp.take(phaseLoad)
				ss = append(ss, s)
				if len(ss)%10 == 0 {
					log.Info("load", "t", s.at.Round(time.Second), "rss MiB", s.rss>>20, "fds", s.fds, "goroutines", s.gor, "heap MiB", s.heap>>20, "errors", r.errs.total)
				}
			}
		}
	}()
	r.loadavg[0] = loadavg()
	deadline := smp.t0.Add(c.duration)
	for _, w := range workers {
		wg.Add(1)
		go func(w *worker) { defer wg.Done(); w.run(deadline) }(w)
	}
	wg.Wait()
	r.elapsed = time.Since(smp.t0)
	r.loadavg[1] = loadavg()
	close(stopSampling)
	r.samples = append(r.samples, <-sampled...)
	r.cpuLoad = benchenv.CPUSeconds(srv.cmd.Process.Pid) - cpu0
	r.cpuClients = benchenv.CPUSeconds(os.Getpid()) - self0
	if _, text, err := smp.goroutines(); err == nil {
		r.groupsLoad = goroutineGroups(text, 6)
	}
	r.lat = newLatencies()
	for _, w := range workers {
		r.tot.add(w)
		r.lat.merge(w.c.lat)
	}
	log.Info("load done", "ops", r.tot.sum(), "errors", r.errs.total)

	// the clients leave; the server goes idle
	for _, w := range workers {
		w.c.close()
	}
	afterStart := time.Now()
	for time.Since(afterStart) < c.settle {
		time.Sleep(time.Second)
		s := smp.take(phaseAfter)
		s.since = time.Since(afterStart)
		r.samples = append(r.samples, s)
	}
	if _, text, err := smp.goroutines(); err == nil {
		r.groupsIdle = goroutineGroups(text, 8)
	}
	if d, err := smp.get("/debug/pprof/goroutine?debug=2"); err == nil {
		r.dumpIdle = d
	}

	// what reached the upper layer on disk, compared with each client's model
	for _, w := range workers {
		if err := checkUpper(m, w); err != nil {
			r.errs.add("upper layer on disk (after the run)", w.id, err)
		}
	}
	r.verfs = len(verfs.seen)
	if r.verfs > 1 {
		r.errs.add("WRITE/COMMIT verifier", -1, mismatch("verifier changed", "%d different verifiers from one server instance", r.verfs))
	}

	smp.hc.CloseIdleConnections()
	r.exitStatus = srv.stop()
	r.serverLog = srv.problems()
	if c.dumpDir != "" {
		os.MkdirAll(c.dumpDir, 0o755)
		os.WriteFile(filepath.Join(c.dumpDir, "goroutines-after.txt"), []byte(r.dumpIdle), 0o644)
		if b, err := os.ReadFile(srv.logPath); err == nil {
			os.WriteFile(filepath.Join(c.dumpDir, "ovlnfs.log"), b, 0o644)
		}
	}
	body := format(r)
	fmt.Println(body)
	if c.out != "" {
		if err := report.UpdateSection(c.out, c.section, body); err != nil {
			return err
		}
		log.Info("wrote", "file", c.out, "section", c.section)
	}
	if r.errs.total > 0 {
		return fmt.Errorf("%d errors", r.errs.total)
	}
	return nil
}

// checkUpper compares the worker's own directory in the upper layer (and, for seed files
// never changed, in lower2) with the worker's model.
func checkUpper(m *model, w *worker) error {
	up := filepath.Join(m.upper, w.dir)
	for name, f := range w.files {
		b, err := os.ReadFile(filepath.Join(up, name))
		if errors.Is(err, os.ErrNotExist) && w.isSeed(name) && !w.copiedUp(name) {
			b, err = os.ReadFile(filepath.Join(m.lower2, w.dir, name))
		}
		if err != nil {
			return err
		}
		if string(b) != string(f.data) {
			return mismatch("upper content", "%s/%s: %s", w.dir, name, diff(b, f.data))
		}
	}
	ents, err := os.ReadDir(up)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		n := e.Name()
		if w.files[n] != nil || w.links[n] != nil {
			continue
		}
		if info, err := e.Info(); err == nil && info.Mode()&os.ModeCharDevice != 0 && strings.HasPrefix(n, "seed-") {
			continue // the whiteout of a removed seed file
		}
		return mismatch("stray upper entry", "%s/%s (%s)", w.dir, n, e.Type())
	}
	return nil
}

// server is the ovlnfs process.
type server struct {
	cmd     *exec.Cmd
	addr    string
	pprof   string
	logPath string
	logf    *os.File
	exited  chan struct{}
	status  string
}

func startServer(bin string, m *model, logPath string) (*server, error) {
	port, err := benchenv.FreePort()
	if err != nil {
		return nil, err
	}
	pport, err := benchenv.FreePort()
	if err != nil {
		return nil, err
	}
	s := &server{addr: fmt.Sprintf("127.0.0.1:%d", port), pprof: fmt.Sprintf("127.0.0.1:%d", pport), logPath: logPath, exited: make(chan struct{})}
	if s.logf, err = os.Create(logPath); err != nil {
		return nil, err
	}
	s.cmd = exec.Command(bin, "serve", "--lowerdir="+m.lower1+":"+m.lower2, "--upperdir="+m.upper, "--workdir="+m.work,
		"--listen="+s.addr, "--pprof-listen="+s.pprof, "--log-level=warn")
	s.cmd.Stdout, s.cmd.Stderr = s.logf, s.logf
	if err := s.cmd.Start(); err != nil {
		s.logf.Close()
		return nil, err
	}
	go func() {
		err := s.cmd.Wait()
		s.status = "exit status 0"
		if err != nil {
			s.status = err.Error()
		}
		close(s.exited)
	}()
	deadline := time.Now().Add(60 * time.Second)
	for _, a := range []string{s.addr, s.pprof} {
		for {
			select {
			case <-s.exited:
				return nil, fmt.Errorf("ovlnfs exited at start (%s): %s", s.status, benchenv.Tail(logPath))
			default:
			}
			if conn, err := net.DialTimeout("tcp", a, time.Second); err == nil {
				conn.Close()
				break
			}
			if time.Now().After(deadline) {
				s.stop()
				return nil, fmt.Errorf("ovlnfs did not listen on %s: %s", a, benchenv.Tail(logPath))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return s, nil
}

// stop sends SIGTERM (SIGKILL after 40 s) and returns how the process ended.
func (s *server) stop() string {
	select {
	case <-s.exited:
	default:
		s.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(40 * time.Second):
			s.cmd.Process.Kill()
			<-s.exited
			s.status += " (killed after 40 s without exiting on SIGTERM)"
		}
	}
	s.logf.Close()
	return s.status
}

// problems are the server's log lines at WARN or ERROR.
func (s *server) problems() []string {
	b, _ := os.ReadFile(s.logPath)
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR") || strings.HasPrefix(line, "panic") {
			out = append(out, line)
		}
	}
	return out
}
