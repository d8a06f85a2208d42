// Package crash_test kills a real `ovlnfs serve` with SIGKILL at random moments of a
// mixed workload sent by an NFSv3 client over TCP on 127.0.0.1, and after each restart
// checks what a crash may and may not leave behind: no half-built object is visible (the
// tree is exactly the state before or after the call that was in flight, a write cut at
// a page boundary at most), every call the server answered is there, WORKDIR/work is
// empty once the server is ready, and the kernel overlay mounts the same layers and
// shows the same tree (names, types, modes, sizes, contents, symlink targets, which
// names are one file).
//
// CRASHTEST_KILLS (default 100) sets the number of kills, CRASHTEST_SEED the seed of the
// layers, workload and kill delays (printed; timing makes a run unrepeatable in detail),
// CRASHTEST_WORKERS the number of concurrent clients (3), each with a subtree of its own.
//
// commit_test.go's TestCommitResetKilled kills the server inside `ovlnfs commit` and
// `ovlnfs reset` instead (CRASHTEST_COMMIT_KILLS).
package crash_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/internal/rpctest"
	"github.com/ovlnfs/ovlnfs/tests/internal/testenv"
)

// TestMain removes the ovlnfs binary the test built.
func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

// seedFromEnv is CRASHTEST_SEED, or a new seed: a failure's log names it, to run the
// same kills again.
func seedFromEnv(t *testing.T) uint64 {
	v := os.Getenv("CRASHTEST_SEED")
	if v == "" {
		return uint64(time.Now().UnixNano())
	}
	seed, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		t.Fatalf("CRASHTEST_SEED=%q: %v", v, err)
	}
	return seed
}

// killsPerRound: fresh layers after this many kills, so that lower files are still left
// to copy up and lower directories to rename.
const killsPerRound = 10

// stats are the figures the test reports.
type stats struct {
	mu          sync.Mutex
	kills       int
	ops         map[string]int // acknowledged calls by kind
	inflight    map[string]int // calls unanswered at a kill, by kind
	applied     map[string]int // of those, the ones whose change was there after the restart
	classes     map[string]int // calls unanswered at a kill, by the multi-step change they make
	classesDone map[string]int // of those, the ones whose change was there after the restart
	partial     int            // writes found cut at a page boundary
	leftKills   int            // kills after which WORKDIR/work held something
	leftFiles   int            // entries found there, in all
	leftKinds   map[string]int
	idxTmpKills int // kills after which the moves index held a temporary record
	// kills after which WORKDIR/index (index=on) held a temporary
	indexTmpKills int
	starts        []time.Duration
	startKills    int // kills during a start (killDuringStart)
	startRebuilds int // of those, starts that were rebuilding the moves index
	rebuildsCut   int // of those, kills that left the rebuilt index half-written
	kernelRuns    int
}

func (s *stats) count(m map[string]int, k string) {
	s.mu.Lock()
	m[k]++
	s.mu.Unlock()
}

func TestCrashConsistency(t *testing.T) {
	testenv.RequireRoot(t)
	kills := envInt(t, "CRASHTEST_KILLS", 100)
	workers := envInt(t, "CRASHTEST_WORKERS", 3)
	seed := seedFromEnv(t)
	t.Logf("CRASHTEST_SEED=%d CRASHTEST_KILLS=%d CRASHTEST_WORKERS=%d", seed, kills, workers)
	bin := testenv.BuildOvlnfs(t)
	hasIndex := indexSupported(t, bin)
	index := hasIndex
	switch v := os.Getenv("CRASHTEST_INDEX"); v {
	case "":
	case "on", "off":
		if v == "on" && !hasIndex {
			t.Fatal("CRASHTEST_INDEX=on: this ovlnfs has no -o index")
		}
		index = v == "on"
	default:
		t.Fatalf("CRASHTEST_INDEX=%q: on or off", v)
	}
	t.Logf("index=%v (both ovlnfs and the kernel overlay)", onOff(index))
	st := &stats{ops: map[string]int{}, inflight: map[string]int{}, applied: map[string]int{}, classes: map[string]int{}, classesDone: map[string]int{}, leftKinds: map[string]int{}}
	r := rand.New(rand.NewPCG(seed, 0xc4a5))
	began := time.Now()
	for round := 0; st.kills < kills; round++ {
		h := &harness{t: t, bin: bin, r: r, st: st, workers: workers, round: round, seed: seed, index: index, hasIndex: hasIndex,
			lowerLinks: index || os.Getenv("CRASHTEST_LOWER_LINKS") != ""}
		h.runRound(min(killsPerRound, kills-st.kills))
		if t.Failed() {
			break
		}
	}
	st.report(t, time.Since(began))
}

// indexSupported reports whether this ovlnfs takes -o index (the kernel's index=on
// format for hard links across copy-up), from its serve --help.
func indexSupported(t *testing.T, bin string) bool {
	out, _ := exec.Command(bin, "serve", "--help").CombinedOutput()
	return strings.Contains(string(out), "index=on")
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func (s *stats) report(t *testing.T, took time.Duration) {
	keys := func(m map[string]int) string {
		var ks []string
		for k := range m {
			ks = append(ks, k)
		}
		sort.Strings(ks)
		var b []string
		for _, k := range ks {
			b = append(b, fmt.Sprintf("%s %d", k, m[k]))
		}
		return strings.Join(b, ", ")
	}
	total, fly, app := 0, 0, 0
	for _, v := range s.ops {
		total += v
	}
	for k, v := range s.inflight {
		fly += v
		app += s.applied[k]
	}
	var sum time.Duration
	for _, d := range s.starts {
		sum += d
	}
	avg := time.Duration(0)
	if len(s.starts) > 0 {
		avg = sum / time.Duration(len(s.starts))
	}
	t.Logf("%d kills in %v; %d acknowledged calls (%s)", s.kills, took.Round(time.Second), total, keys(s.ops))
	t.Logf("calls in flight at a kill: %d (%s); their change found after the restart: %d (%s); writes cut at a page boundary: %d",
		fly, keys(s.inflight), app, keys(s.applied), s.partial)
	var cls []string
	for k := range s.classes {
		cls = append(cls, k)
	}
	sort.Strings(cls)
	for _, k := range cls {
		t.Logf("  in flight at a kill: %s: %d, change found after the restart: %d", k, s.classes[k], s.classesDone[k])
	}
	t.Logf("kills that left entries in WORKDIR/work (removed at the next start): %d, %d entries (%s); kills that left a temporary moves record: %d; a temporary in WORKDIR/index: %d",
		s.leftKills, s.leftFiles, keys(s.leftKinds), s.idxTmpKills, s.indexTmpKills)
	t.Logf("%d server starts, %v on average until ready; kernel overlay compared %d times; %d more kills during a start (%d of them to rebuild the moves index, %d with the rebuild half done)",
		len(s.starts), avg.Round(time.Millisecond), s.kernelRuns, s.startKills, s.startRebuilds, s.rebuildsCut)
}

type harness struct {
	t       *testing.T
	bin     string
	r       *rand.Rand
	st      *stats
	workers int
	round   int
	seed    uint64
	// index runs both ovlnfs and the kernel overlay with index=on; hasIndex says
	// this ovlnfs takes -o index at all.
	index, hasIndex bool
	// lowerLinks puts a lower file with two names in each subtree. Without index=on
	// their names come apart on copy-up, and a handle taken of one name before may
	// resolve to the other afterwards (the kernel needs index=on to export such files
	// over NFS at all), so they are there only with index=on unless
	// CRASHTEST_LOWER_LINKS is set.
	lowerLinks bool

	dir, l1, l2, upper, work, mnt string
	port                          int
	srv, older                    *testenv.Server

	models  []*node
	gens    []*gen
	history [][]string // per worker: its last calls, for failure messages
	ids     []int      // per worker: the last inode id given out

	verfMu   sync.Mutex
	verf     *[8]byte // this run's write verifier
	prevVerf *[8]byte
}

func (h *harness) fatalf(format string, args ...any) {
	h.t.Helper()
	h.t.Fatalf("round %d, kill %d (CRASHTEST_SEED=%d): %s", h.round, h.st.kills, h.seed, fmt.Sprintf(format, args...))
}

func (h *harness) runRound(kills int) {
	t := h.t
	var err error
	h.dir = filepath.Join(t.TempDir(), fmt.Sprintf("round%d", h.round))
	defer os.RemoveAll(h.dir)
	if h.l1, h.l2, h.upper, h.work, err = buildLayers(h.r, h.dir, h.workers, h.lowerLinks); err != nil {
		t.Fatal(err)
	}
	h.mnt = filepath.Join(h.dir, "mnt")
	if err := os.Mkdir(h.mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	h.port = testenv.FreePort(t)
	h.start()
	obs := h.observe(true)
	h.initModels(obs)
	h.kernelCompare(obs)
	h.start()
	for range kills {
		inflight := h.workload(time.Duration(1+h.r.IntN(200)) * time.Millisecond)
		if h.t.Failed() {
			return
		}
		h.st.kills++
		for w := range h.workers {
			h.remember(w, fmt.Sprintf("--- kill %d, restart", h.st.kills))
		}
		if h.st.kills%100 == 0 {
			h.t.Logf("%d kills", h.st.kills)
		}
		h.inspectLeftovers()
		if h.r.IntN(8) == 0 {
			h.killDuringStart()
		}
		h.start()
		obs := h.observe(false)
		for w := range h.workers {
			h.verify(w, obs, inflight[w])
		}
		h.kernelCompare(obs)
		h.start()
	}
	h.srv.Stop(10 * time.Second)
	h.srv.SetLogOnFailure(false) // this round passed
	if h.older != nil {
		h.older.SetLogOnFailure(false)
	}
}

// indexOption is the -o option string both sides get besides the layers; an ovlnfs
// without index support gets only redirect_dir=on (its default anyway), one with it
// index=on or off explicitly, whatever its default.
func (h *harness) indexOption() string {
	switch {
	case h.index:
		return "redirect_dir=on,index=on"
	case h.hasIndex:
		return "redirect_dir=on,index=off"
	}
	return "redirect_dir=on"
}

func (h *harness) serveArgs() []string {
	return []string{"--lowerdir=" + h.l1 + ":" + h.l2, "--upperdir=" + h.upper, "--workdir=" + h.work,
		fmt.Sprintf("--listen=127.0.0.1:%d", h.port), "--portmap=off", "--nlm=off", "--udp=false",
		"-o", h.indexOption()}
}

// start runs the server over the round's layers and checks what a start must have
// cleaned up.
func (h *harness) start() {
	h.t.Helper()
	began := time.Now()
	if h.older != nil {
		h.older.SetLogOnFailure(false) // a failure shows the last two servers' logs
	}
	h.older = h.srv
	h.srv = testenv.StartServer(h.t, h.bin, nil, h.serveArgs()...)
	h.st.starts = append(h.st.starts, time.Since(began))
	names, err := readNames(filepath.Join(h.work, "work"))
	if err != nil {
		h.fatalf("listing WORKDIR/work after the start: %v", err)
	}
	if len(names) > 0 {
		h.fatalf("WORKDIR/work holds %v after the server is ready", names)
	}
	idx, err := readNames(filepath.Join(h.work, "ovlnfs-index"))
	if err != nil {
		h.fatalf("listing the moves index: %v", err)
	}
	for _, n := range idx {
		if strings.HasPrefix(n, "#") {
			h.fatalf("the moves index holds the temporary %s after the server is ready", n)
		}
	}
	if kidx, err := readNames(filepath.Join(h.work, "index")); err == nil {
		for _, n := range kidx {
			if strings.HasPrefix(n, "#") {
				h.fatalf("WORKDIR/index holds the temporary %s after the server is ready", n)
			}
		}
	}
	if _, err := os.Lstat(filepath.Join(h.work, "ovlnfs-index.new")); !errors.Is(err, os.ErrNotExist) {
		h.fatalf("ovlnfs-index.new is left after the server is ready (%v)", err)
	}
	h.verfMu.Lock()
	if h.verf != nil {
		h.prevVerf = h.verf
	}
	h.verf = nil
	h.verfMu.Unlock()
}

func readNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

// killDuringStart starts the server and kills it 0 to 30 ms later, ready or not: the
// clean-up of WORKDIR/work and, every other time (the moves index removed first, as if
// the workdir had lost it), the rebuild of the moves index are interrupted too.
func (h *harness) killDuringStart() {
	h.t.Helper()
	if h.r.IntN(2) == 0 {
		if err := os.RemoveAll(filepath.Join(h.work, "ovlnfs-index")); err != nil {
			h.fatalf("removing the moves index: %v", err)
		}
		h.st.startRebuilds++
	}
	cmd := exec.Command(h.bin, append([]string{"serve"}, h.serveArgs()...)...)
	if err := cmd.Start(); err != nil {
		h.fatalf("starting ovlnfs: %v", err)
	}
	time.Sleep(time.Duration(h.r.IntN(30_000)) * time.Microsecond)
	cmd.Process.Kill()
	cmd.Wait()
	h.st.startKills++
	if _, err := os.Lstat(filepath.Join(h.work, "ovlnfs-index.new")); err == nil {
		h.st.rebuildsCut++
	}
}

// inspectLeftovers counts what the kill left in WORKDIR/work (the next start must remove
// it): how often kills land inside a multi-step change.
func (h *harness) inspectLeftovers() {
	names, err := readNames(filepath.Join(h.work, "work"))
	if err != nil {
		h.fatalf("listing WORKDIR/work: %v", err)
	}
	if len(names) > 0 {
		h.st.leftKills++
		h.st.leftFiles += len(names)
		for _, n := range names {
			var s unix.Stat_t
			kind := "other"
			if unix.Lstat(filepath.Join(h.work, "work", n), &s) == nil {
				switch s.Mode & unix.S_IFMT {
				case unix.S_IFREG:
					kind = "file"
				case unix.S_IFDIR:
					kind = "dir"
				case unix.S_IFCHR:
					kind = "whiteout"
				case unix.S_IFLNK:
					kind = "symlink"
				}
			}
			h.st.leftKinds[kind]++
		}
	}
	kidx, _ := readNames(filepath.Join(h.work, "index"))
	for _, n := range kidx {
		if strings.HasPrefix(n, "#") {
			h.st.indexTmpKills++
			break
		}
	}
	idx, _ := readNames(filepath.Join(h.work, "ovlnfs-index"))
	for _, n := range idx {
		if strings.HasPrefix(n, "#") {
			h.st.idxTmpKills++
			break
		}
	}
}

// observed is the union as the server shows it: path -> entry (with the NFS fileid), and,
// when asked, the contents of regular files.
type observed struct {
	entries map[string]entry
	nlink   map[string]uint32
	data    map[string][]byte
}

func (h *harness) observe(keepData bool) observed {
	h.t.Helper()
	c, err := dial(fmt.Sprintf("127.0.0.1:%d", h.port), 0x7000_0000)
	if err != nil {
		h.fatalf("dial: %v", err)
	}
	defer c.close()
	root, err := c.mountRoot()
	if err != nil {
		h.fatalf("MNT: %v", err)
	}
	o := observed{data: map[string][]byte{}}
	var keep func(ep string, fh []byte)
	if keepData {
		keep = func(ep string, fh []byte) {
			b, err := c.readBytes(fh)
			if err != nil {
				h.fatalf("READ %s: %v", ep, err)
			}
			o.data[ep] = b
		}
	}
	o.entries, o.nlink = nfsTree(c, root, h.fatalf, keep)
	for p := range o.entries {
		if !strings.Contains(p, "/") {
			if n, err := strconv.Atoi(strings.TrimPrefix(p, "w")); err != nil || !strings.HasPrefix(p, "w") || n >= h.workers {
				h.fatalf("unexpected %s in the root of the union", p)
			}
		}
	}
	return o
}

// initModels makes each worker's model from what the server shows of fresh layers (the
// kernel overlay's view of the same layers is compared next). Names of one lower file
// with several links are one file with index=on, else separate files: copying up one
// leaves the others on the lower.
func (h *harness) initModels(o observed) {
	h.models = make([]*node, h.workers)
	h.gens = make([]*gen, h.workers)
	h.ids = make([]int, h.workers)
	h.history = make([][]string, h.workers)
	for w := range h.workers {
		h.models[w] = newDir(0o755)
		h.gens[w] = &gen{r: rand.New(rand.NewPCG(h.r.Uint64(), uint64(w))), dirty: map[*inode]bool{}}
		h.ids[w] = (w + 1) * 1_000_000
	}
	var paths []string
	for p := range o.entries {
		paths = append(paths, p)
	}
	sort.Strings(paths) // parents first
	// With index=on the names of a lower file with several links stay one file.
	links := map[uint64]*inode{}
	for _, p := range paths {
		comps := strings.Split(p, "/")
		if len(comps) == 1 {
			continue
		}
		w, _ := strconv.Atoi(strings.TrimPrefix(comps[0], "w"))
		e := o.entries[p]
		parent := h.models[w].find(comps[1 : len(comps)-1])
		name := comps[len(comps)-1]
		switch e.typ {
		case 'd':
			parent.kids[name] = newDir(e.mode)
			parent.kids[name].lower = true
		case 'l':
			parent.kids[name] = &node{typ: 'l', target: e.target, lower: true}
		case 'f':
			if ino, ok := links[e.fileid]; ok && h.index && o.nlink[p] > 1 {
				ino.links = true
				parent.kids[name] = &node{typ: 'f', ino: ino}
				break
			}
			h.ids[w]++
			parent.kids[name] = &node{typ: 'f', ino: &inode{data: o.data[p], mode: e.mode, id: h.ids[w], lower: true,
				mtime: e.mtime, hasMtime: true}}
			links[e.fileid] = parent.kids[name].ino
		default:
			h.fatalf("%s: unexpected type in fresh layers", p)
		}
	}
	for w := range h.workers {
		if d := diffTrees(h.models[w].flatten(fmt.Sprintf("w%d", w)), subtree(o.entries, w)); d != "" {
			h.fatalf("model of fresh layers:\n%s", d)
		}
	}
}

func subtree(all map[string]entry, w int) map[string]entry {
	prefix := fmt.Sprintf("w%d/", w)
	out := map[string]entry{}
	for p, e := range all {
		if strings.HasPrefix(p, prefix) {
			out[p] = e
		}
	}
	return out
}

// verify checks worker w's subtree after a restart: exactly the acknowledged state, or
// that plus the call left in flight (a write possibly cut at a page boundary). The model
// moves on to whichever it was.
func (h *harness) verify(w int, o observed, inflight *op) {
	h.t.Helper()
	got := subtree(o.entries, w)
	prefix := fmt.Sprintf("w%d", w)
	before := diffTrees(h.models[w].flatten(prefix), got)
	if before == "" {
		if inflight != nil {
			h.st.count(h.st.inflight, inflight.kind)
			if inflight.class != "" {
				h.st.count(h.st.classes, inflight.class)
			}
		}
		h.checkLinks(w, o)
		return
	}
	if inflight == nil {
		h.fatalf("worker %d: the tree after the restart is not what the server acknowledged (no call in flight):\n%s\n%s\nits calls before:\n  %s", w, before, h.kernelSays(w), strings.Join(h.history[w], "\n  "))
	}
	h.st.count(h.st.inflight, inflight.kind)
	if inflight.class != "" {
		h.st.count(h.st.classes, inflight.class)
	}
	var after string
	for i, k := range inflight.outcomes() {
		m := h.models[w].clone()
		id := h.ids[w]
		apply(m, inflight, k, &id)
		d := diffTrees(m.flatten(prefix), got)
		if i == 0 {
			after = d
		}
		if d == "" {
			h.models[w], h.ids[w] = m, id
			h.gens[w].dirty = map[*inode]bool{}
			h.st.count(h.st.applied, inflight.kind)
			if inflight.class != "" {
				h.st.count(h.st.classesDone, inflight.class)
			}
			if i > 0 {
				h.st.partial++
			}
			h.checkLinks(w, o)
			return
		}
	}
	h.fatalf("worker %d: after the restart the tree is neither the state before nor after the call in flight (%v)\nagainst the state before:\n%s\nagainst the state after:\n%s\n%s\nits calls before:\n  %s",
		w, inflight, before, after, h.kernelSays(w), strings.Join(h.history[w], "\n  "))
}

// checkLinks: names the model has as one file (hard links made through the union) have
// one fileid.
func (h *harness) checkLinks(w int, o observed) {
	want := h.models[w].flatten(fmt.Sprintf("w%d", w))
	byGroup := map[int][]string{}
	for p, e := range want {
		if e.typ == 'f' {
			byGroup[e.group] = append(byGroup[e.group], p)
		}
	}
	for _, names := range byGroup {
		for _, p := range names[1:] {
			if o.entries[p].fileid != o.entries[names[0]].fileid {
				h.fatalf("hard links %s and %s have fileids %d and %d", names[0], p, o.entries[names[0]].fileid, o.entries[p].fileid)
			}
		}
	}
}

// workload runs every worker against the server until it is killed, killAfter from now,
// and returns each worker's call left in flight (nil: none was).
func (h *harness) workload(killAfter time.Duration) []*op {
	inflight := make([]*op, h.workers)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var failOnce sync.Once
	fail := func(format string, args ...any) {
		failOnce.Do(func() {
			h.t.Errorf("round %d, kill %d (CRASHTEST_SEED=%d): %s", h.round, h.st.kills, h.seed, fmt.Sprintf(format, args...))
			close(stop)
		})
	}
	for w := range h.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			inflight[w] = h.worker(w, fail)
		}()
	}
	select {
	case <-time.After(killAfter):
	case <-stop:
	}
	h.srv.Kill()
	wg.Wait()
	return inflight
}

func (h *harness) worker(w int, fail func(string, ...any)) *op {
	c, err := dial(fmt.Sprintf("127.0.0.1:%d", h.port), uint32(w+1)<<24)
	if err != nil {
		return nil // killed before it connected
	}
	defer c.close()
	root, err := c.mountRoot()
	if err == nil {
		root, err = c.lookup(root, fmt.Sprintf("w%d", w))
	}
	if err != nil {
		if !errors.Is(err, errNoReply) {
			fail("worker %d: mount: %v", w, err)
		}
		return nil
	}
	handles := map[string][]byte{"": root}
	resolve := func(p []string) ([]byte, error) {
		fh := root
		for i := range p {
			key := strings.Join(p[:i+1], "/")
			if c, ok := handles[key]; ok {
				fh = c
				continue
			}
			next, err := c.lookup(fh, p[i])
			if err != nil {
				return nil, fmt.Errorf("LOOKUP %s: %w", key, err)
			}
			handles[key] = next
			fh = next
		}
		return fh, nil
	}
	forget := func(p []string) {
		key := strings.Join(p, "/")
		for k := range handles {
			if k == key || strings.HasPrefix(k, key+"/") {
				delete(handles, k)
			}
		}
	}
	model, g := h.models[w], h.gens[w]
	for {
		for _, o := range g.next(model) {
			o.class = classify(model, o)
			sent, err := h.do(c, o, resolve)
			if errors.Is(err, errNoReply) {
				if sent {
					return o
				}
				return nil
			}
			if err != nil {
				fail("worker %d: %v: %v\nits calls before:\n  %s", w, o, err, strings.Join(h.history[w], "\n  "))
				return nil
			}
			h.remember(w, o.String())
			h.st.count(h.st.ops, o.kind)
			apply(model, o, -1, &h.ids[w])
			switch {
			case o.kind == "write" && o.stable == 0:
				g.dirty[model.find(o.p).ino] = true
			case o.kind == "commit":
				delete(g.dirty, model.find(o.p).ino)
			}
			if o.namespace() {
				forget(o.p)
				if o.p2 != nil {
					forget(o.p2)
				}
			}
		}
	}
}

func (h *harness) remember(w int, s string) {
	h.history[w] = append(h.history[w], s)
	if len(h.history[w]) > 40 {
		h.history[w] = h.history[w][1:]
	}
}

// do sends op's call (after the lookups it needs); sent says whether the call itself went
// out, so that an unanswered one is known to be in flight.
func (h *harness) do(c *client, o *op, resolve func([]string) ([]byte, error)) (sent bool, err error) {
	dir, err := resolve(o.p[:len(o.p)-1])
	if err != nil {
		return false, err
	}
	name := o.p[len(o.p)-1]
	var obj, dir2 []byte
	switch o.kind {
	case "write", "commit", "chmod", "truncate", "link":
		if obj, err = resolve(o.p); err != nil {
			return false, err
		}
	}
	if o.p2 != nil {
		if dir2, err = resolve(o.p2[:len(o.p2)-1]); err != nil {
			return false, err
		}
	}
	switch o.kind {
	case "create":
		_, err = c.create(dir, name, o.mode)
	case "mkdir":
		err = c.mkdir(dir, name, o.mode)
	case "symlink":
		err = c.symlink(dir, name, o.target)
	case "write":
		var committed uint32
		var verf [8]byte
		committed, verf, err = c.write(obj, o.off, o.data, o.stable)
		if err == nil {
			if o.stable != 0 && committed != 2 {
				return true, fmt.Errorf("FILE_SYNC write answered stability %d", committed)
			}
			err = h.checkVerifier(verf)
		}
	case "commit":
		var verf [8]byte
		if verf, err = c.commit(obj); err == nil {
			err = h.checkVerifier(verf)
		}
	case "chmod":
		err = c.setattr(obj, rpctest.Sattr{Mode: &o.mode})
	case "truncate":
		err = c.setattr(obj, rpctest.Sattr{Size: &o.size})
	case "rename":
		err = c.rename(dir, name, dir2, o.p2[len(o.p2)-1])
	case "link":
		err = c.link(obj, dir2, o.p2[len(o.p2)-1])
	case "remove":
		err = c.remove(dir, name)
	case "rmdir":
		err = c.rmdir(dir, name)
	}
	return true, err
}

// checkVerifier: one verifier for every WRITE and COMMIT of a run, another after a
// restart (how a client learns to send again what it had not seen committed).
func (h *harness) checkVerifier(v [8]byte) error {
	h.verfMu.Lock()
	defer h.verfMu.Unlock()
	if h.verf == nil {
		if h.prevVerf != nil && *h.prevVerf == v {
			return fmt.Errorf("write verifier %x did not change across a restart", v)
		}
		h.verf = &v
		return nil
	}
	if *h.verf != v {
		return fmt.Errorf("write verifier changed from %x to %x without a restart", *h.verf, v)
	}
	return nil
}

// kernelCompare stops the server (SIGKILL, idle), mounts the layers with the kernel
// overlay and compares its tree with what the server showed.
func (h *harness) kernelCompare(o observed) {
	h.t.Helper()
	h.srv.Kill()
	k, opts := h.kernelWalk()
	if d := diffTrees(o.entries, k); d != "" {
		h.fatalf("the kernel overlay (%s) shows another tree than ovlnfs (got: kernel):\n%s", opts, d)
	}
	if a, b := linkGroups(o.entries), linkGroups(k); !slices.Equal(a, b) {
		h.fatalf("names that are one file: ovlnfs %v, kernel overlay %v", a, b)
	}
}

// kernelWalk mounts the layers with the kernel overlay (the server must be stopped) and
// returns its tree and the mount options.
func (h *harness) kernelWalk() (map[string]entry, string) {
	h.t.Helper()
	opts := fmt.Sprintf("lowerdir=%s:%s,upperdir=%s,workdir=%s,redirect_dir=on,index=%s", h.l1, h.l2, h.upper, h.work, onOff(h.index))
	if err := unix.Mount("overlay", h.mnt, "overlay", 0, opts); err != nil {
		if errors.Is(err, syscall.ENODEV) {
			testenv.Missing(h.t, "the kernel has no overlay filesystem")
		}
		h.fatalf("kernel overlay mount %s: %v", opts, err)
	}
	defer unmount(h.mnt)
	h.st.kernelRuns++
	k, err := walkTree(h.mnt)
	if err != nil {
		h.fatalf("walking the kernel overlay: %v", err)
	}
	return k, opts
}

// kernelSays describes what the kernel overlay shows of w's subtree against the model,
// for a failure message (the server is stopped for it).
func (h *harness) kernelSays(w int) string {
	h.srv.Kill()
	k, _ := h.kernelWalk()
	d := diffTrees(h.models[w].flatten(fmt.Sprintf("w%d", w)), subtree(k, w))
	if d == "" {
		return "the kernel overlay shows the state before"
	}
	return "the kernel overlay, against the state before:\n" + d
}

// walkTree lists the tree below root as path -> entry, as observe does through NFS (st_ino
// for the fileid).
func walkTree(root string) (map[string]entry, error) {
	k := map[string]entry{}
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		var s unix.Stat_t
		if err := unix.Lstat(p, &s); err != nil {
			return err
		}
		e := entry{mode: s.Mode & 0o7777, fileid: s.Ino, mtime: [2]uint32{uint32(s.Mtim.Sec), uint32(s.Mtim.Nsec)},
			hasMtime: s.Mode&unix.S_IFMT != unix.S_IFDIR}
		switch s.Mode & unix.S_IFMT {
		case unix.S_IFREG:
			e.typ = 'f'
			e.nlink = uint32(s.Nlink)
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			e.size = int64(len(b))
			e.sum = (&inode{data: b}).hash()
		case unix.S_IFDIR:
			e.typ = 'd'
		case unix.S_IFLNK:
			e.typ, e.mode = 'l', 0
			if e.target, err = os.Readlink(p); err != nil {
				return err
			}
			e.size = int64(len(e.target))
		default:
			e.typ = '?'
		}
		k[rel] = e
		return nil
	})
	return k, err
}

// linkGroups lists the sets of non-directory names that share an inode number.
func linkGroups(m map[string]entry) []string {
	by := map[uint64][]string{}
	for p, e := range m {
		if e.typ == 'f' {
			by[e.fileid] = append(by[e.fileid], p)
		}
	}
	var out []string
	for _, names := range by {
		if len(names) > 1 {
			sort.Strings(names)
			out = append(out, strings.Join(names, "="))
		}
	}
	sort.Strings(out)
	return out
}

func unmount(mnt string) {
	for range 50 {
		if err := unix.Unmount(mnt, 0); err == nil || err == unix.EINVAL {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	unix.Unmount(mnt, unix.MNT_DETACH)
}

// nfsTree walks the union through c from root (READDIRPLUS): every entry's description, a
// regular file's data read whole (its size checked against GETATTR's) and summed, a
// symlink's target, and every entry's link count. file, when set, also hears each regular
// file's path and handle.
func nfsTree(c *client, root []byte, fatalf func(string, ...any), file func(ep string, fh []byte)) (map[string]entry, map[string]uint32) {
	entries, nlink := map[string]entry{}, map[string]uint32{}
	var walk func(fh []byte, p string)
	walk = func(fh []byte, p string) {
		ents, err := c.readdirAll(fh)
		if err != nil {
			fatalf("READDIRPLUS %q: %v", p, err)
		}
		for _, e := range ents {
			ep := path.Join(p, e.name)
			en := entry{mode: e.attr.Mode & 0o7777, fileid: e.fileid, mtime: e.attr.Mtime, hasMtime: e.attr.Ftype != rpctest.FtypeDir}
			switch e.attr.Ftype {
			case rpctest.FtypeReg:
				en.typ = 'f'
				en.size = int64(e.attr.Size)
				en.nlink = e.attr.Nlink
				if file != nil {
					file(ep, e.fh)
				}
				sum, n, err := c.readAll(e.fh)
				if err != nil {
					fatalf("READ %s: %v", ep, err)
				}
				if n != en.size {
					fatalf("%s: READ gave %d bytes, GETATTR size %d", ep, n, en.size)
				}
				en.sum = sum
			case rpctest.FtypeDir:
				en.typ = 'd'
			case rpctest.FtypeLnk:
				en.typ, en.mode = 'l', 0
				en.size = int64(e.attr.Size)
				if en.target, err = c.readlink(e.fh); err != nil {
					fatalf("READLINK %s: %v", ep, err)
				}
			default:
				en.typ = '?'
			}
			entries[ep] = en
			nlink[ep] = e.attr.Nlink
			if en.typ == 'd' {
				walk(e.fh, ep)
			}
		}
	}
	walk(root, "")
	return entries, nlink
}
