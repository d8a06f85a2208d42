package crash_test

// TestCommitResetKilled kills a real `ovlnfs serve` with SIGKILL while it runs an
// `ovlnfs commit` or `ovlnfs reset` sent through its control socket, and checks that the
// workspace is the old state or the new one after the restart (whose Recover takes the
// operation back or finishes it), never a mix.
//
// CRASHTEST_COMMIT_KILLS (default 100) sets the number of kills, CRASHTEST_SEED the seed
// (printed), CRASHTEST_COMMIT_DIR where the workspaces are made (by default a tmpfs the
// test mounts). The full run:
//
//	CRASHTEST_COMMIT_KILLS=1000 go test -v -run TestCommitResetKilled -timeout 30m ./tests/crash
//
// Every workspace holds a lower file with several names, one of them copied up through the
// index (the others show the copy through the index): a commit, which empties the index,
// must keep them one file (the server links the other names into the upper first).

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/internal/mount"
	"github.com/ovlnfs/ovlnfs/internal/rpctest"
	"github.com/ovlnfs/ovlnfs/tests/internal/testenv"
)

// wsOp is the operation a kill interrupts.
type wsOp int

const (
	opCommit      wsOp = iota // commit onto the configured lowers
	opCommitAgain             // commit onto a layer committed before (a stack of two)
	opResetSnap               // reset to a snapshot taken before later changes
	opResetLowers             // reset to the lowers
	opFlatten                 // commit --flatten: the whole tree, replacing the lowers
	numOps
)

func (o wsOp) String() string {
	return [...]string{"commit", "second commit", "reset --to=snapshot", "reset to the lowers", "flattened commit"}[o]
}

func (o wsOp) isCommit() bool { return o == opCommit || o == opCommitAgain || o == opFlatten }

// wsStats are the figures the test reports, per operation.
type wsStats struct {
	kills          [numOps]int
	beforeOp       [numOps]int // killed before the operation began: no journal, old state
	insideOld      [numOps]int // killed with the journal there, taken back: old state
	insideNew      [numOps]int // killed with the journal there, finished: new state
	afterOp        [numOps]int // killed after the operation: no journal, new state
	answered       [numOps]int // the CLI had its answer before the kill
	durations      [numOps][]time.Duration
	kernelCompared int
}

// kernelEvery: the kernel overlay mounts the result of one iteration in this many.
const kernelEvery = 5

func TestCommitResetKilled(t *testing.T) {
	testenv.RequireRoot(t)
	kills := envInt(t, "CRASHTEST_COMMIT_KILLS", 100)
	seed := seedFromEnv(t)
	t.Logf("CRASHTEST_SEED=%d CRASHTEST_COMMIT_KILLS=%d", seed, kills)
	bin := testenv.BuildOvlnfs(t)
	base := commitTestDir(t)
	r := rand.New(rand.NewPCG(seed, 0xc0317))
	st := &wsStats{}
	began := time.Now()
	// One unkilled run of each operation measures how long it takes from the server's
	// log line to the CLI's exit, and when its journal is there: the kill delays spread
	// over the first, most of them over the second.
	var took [numOps]timing
	var span [numOps]time.Duration // how long the journal is there, adjusted as kills land
	for op := range numOps {
		ws := newWorkspace(t, bin, r, mkdirTemp(t, base), op)
		took[op] = ws.calibrate(op)
		ws.dispose()
		span[op] = max(took[op].to-took[op].from, time.Millisecond)
		t.Logf("%v unkilled: %v from the server's log line to the CLI's exit, the journal there from %v to %v", op,
			took[op].total.Round(10*time.Microsecond), took[op].from.Round(10*time.Microsecond), took[op].to.Round(10*time.Microsecond))
	}
	for i := range kills {
		op := wsOp(r.IntN(int(numOps)))
		ws := newWorkspace(t, bin, r, mkdirTemp(t, base), op)
		ws.iter = i
		// Most kills come a moment after the journal appeared, within the time it is
		// there (measured unkilled, then shortened after a kill that came too late and
		// lengthened after one inside, since one measure on a busy machine is rough);
		// some after the server's log line, within the operation's whole time; a few
		// after the CLI's start, before its request.
		tm := took[op]
		k := kill{from: fromJournal, delay: time.Duration(r.Int64N(int64(span[op]) + 1))}
		switch r.IntN(8) {
		case 0:
			k = kill{from: fromStart, delay: time.Duration(r.Int64N(int64(3 * time.Millisecond)))}
		case 1:
			k = kill{from: fromLog, delay: time.Duration(r.Int64N(int64(tm.total*5/4) + 1))}
		}
		inside, isNew := ws.run(op, k, nil, st)
		if t.Failed() {
			return
		}
		if k.from == fromJournal {
			switch {
			case !inside && isNew:
				span[op] = max(span[op]*7/10, 200*time.Microsecond)
			case inside:
				span[op] = span[op] * 11 / 10
			}
		}
		if i%kernelEvery == 0 {
			ws.kernelCompare()
			st.kernelCompared++
		}
		ws.dispose()
		if (i+1)%100 == 0 {
			t.Logf("%d kills", i+1)
		}
	}
	total := 0
	for op := range numOps {
		total += st.kills[op]
	}
	t.Logf("%d kills in %v; the kernel overlay compared %d times", total, time.Since(began).Round(time.Second), st.kernelCompared)
	for op := range numOps {
		var sum time.Duration
		for _, d := range st.durations[op] {
			sum += d
		}
		avg := time.Duration(0)
		if n := len(st.durations[op]); n > 0 {
			avg = sum / time.Duration(n)
		}
		t.Logf("  %v: %d kills: %d before it began, %d inside it (the journal there) of which %d taken back and %d finished, %d after it (%d answered before the kill); %v on average from the server's log line to the kill (of those not timed from the CLI's start); kills after the journal appeared spread over %v at the end",
			op, st.kills[op], st.beforeOp[op], st.insideOld[op]+st.insideNew[op], st.insideOld[op], st.insideNew[op], st.afterOp[op], st.answered[op], avg.Round(10*time.Microsecond), span[op].Round(10*time.Microsecond))
	}
}

// commitTestDir is where the workspaces are made: CRASHTEST_COMMIT_DIR, or a tmpfs the
// test mounts (and unmounts), on which a commit takes milliseconds rather than the
// hundreds a syncfs of a busy disk can take, so that a CI run of 100 kills stays short.
func commitTestDir(t *testing.T) string {
	if d := os.Getenv("CRASHTEST_COMMIT_DIR"); d != "" {
		return d
	}
	d := t.TempDir()
	if err := unix.Mount("tmpfs", d, "tmpfs", 0, "size=512m,mode=0755"); err != nil {
		testenv.Missing(t, "mounting a tmpfs: %v", err)
	}
	t.Cleanup(func() { unmount(d) })
	return d
}

func mkdirTemp(t *testing.T, base string) string {
	d, err := os.MkdirTemp(base, "ws-")
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// workspace is one export's layers made for one kill, and the trees it may show.
// served is a directory of layers one ovlnfs serves from an exports file, with a control
// socket, restarted after each kill: what the commit tests' fixtures share.
type served struct {
	t    *testing.T
	bin  string
	iter int // the kill iteration, for messages (-1 before the first)

	dir, conf, sock string
	port            int
	srv             *testenv.Server
}

func (s *served) fatalf(format string, args ...any) {
	s.t.Helper()
	s.t.Fatalf("iteration %d: %s", s.iter, fmt.Sprintf(format, args...))
}

// start (re)starts the server.
func (s *served) start() {
	s.t.Helper()
	if s.srv != nil {
		s.srv.SetLogOnFailure(false) // a failure shows the last server's log
	}
	s.srv = testenv.StartServer(s.t, s.bin, nil, "--config="+s.conf, "--control="+s.sock,
		fmt.Sprintf("--listen=127.0.0.1:%d", s.port), "--portmap=off", "--nlm=off", "--udp=false")
}

func (s *served) dispose() {
	s.srv.Kill()
	s.srv.SetLogOnFailure(false)
	if err := os.RemoveAll(s.dir); err != nil {
		s.t.Error(err)
	}
}

type workspace struct {
	served
	r *rand.Rand

	l1, l2, upper, work, committed, mnt string

	lowers map[string]entry // the lowers alone
	old    map[string]entry // the tree before the operation
	target map[string]entry // the tree after it (a commit's: the same as old)
	layer  string           // a commit's new layer
	stack0 []string         // the committed layers before the operation
}

// newWorkspace builds two lowers and an upper made by the kernel overlay (copy-ups by
// write, chmod and truncate, whiteouts of files and of a directory, an opaque directory, a
// renamed lower directory with a redirect and one renamed inside it, new directories, a
// lower file with three names copied up through the index and a lower file linked
// through it, a few hundred files in the upper root so that moving them takes a while),
// then starts the server on it and brings it to the state the operation op starts from.
func newWorkspace(t *testing.T, bin string, r *rand.Rand, dir string, op wsOp) *workspace {
	w := &workspace{served: served{t: t, bin: bin, dir: dir, iter: -1}, r: r}
	w.l1, w.l2 = filepath.Join(dir, "l1"), filepath.Join(dir, "l2")
	w.upper, w.work = filepath.Join(dir, "upper"), filepath.Join(dir, "work")
	w.committed, w.mnt = filepath.Join(dir, "committed"), filepath.Join(dir, "mnt")
	for _, d := range []string{w.l1, w.l2, w.upper, w.work, w.committed, w.mnt} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var err error
	data := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		return b
	}
	file := func(p string, size int) {
		if err == nil {
			err = os.MkdirAll(filepath.Dir(p), 0o755)
		}
		if err == nil {
			err = os.WriteFile(p, data(size), 0o644)
		}
	}
	do := func(e error) {
		if err == nil {
			err = e
		}
	}
	small := func() int { return r.IntN(8 << 10) }
	for i := range 10 {
		file(filepath.Join(w.l2, fmt.Sprintf("f%d", i)), small())
	}
	for _, p := range []string{"ren/x0", "ren/x1", "ren/a/y0", "ren/a/b/z0", "gone/g0", "gone/sub/g1", "op/o0", "m/p0", "m/p1", "m/p2", "h1", "k1"} {
		file(filepath.Join(w.l2, p), small())
	}
	do(os.Link(filepath.Join(w.l2, "h1"), filepath.Join(w.l2, "h2")))
	do(os.MkdirAll(filepath.Join(w.l2, "hl"), 0o755))
	do(os.Link(filepath.Join(w.l2, "h1"), filepath.Join(w.l2, "hl", "h3")))
	do(os.Symlink("f0", filepath.Join(w.l2, "s1")))
	do(os.MkdirAll(filepath.Join(w.l2, "e"), 0o755))
	file(filepath.Join(w.l1, "m", "p0"), small())
	file(filepath.Join(w.l1, "m", "p3"), small())
	file(filepath.Join(w.l1, "f1"), small())
	if err == nil {
		err = unix.Mknod(filepath.Join(w.l1, "f9"), unix.S_IFCHR, 0) // a lower whiteout
	}
	if err != nil {
		t.Fatal(err)
	}
	opts := fmt.Sprintf("lowerdir=%s:%s,upperdir=%s,workdir=%s,redirect_dir=on,index=on", w.l1, w.l2, w.upper, w.work)
	if err := unix.Mount("overlay", w.mnt, "overlay", 0, opts); err != nil {
		if errors.Is(err, syscall.ENODEV) {
			testenv.Missing(t, "the kernel has no overlay filesystem")
		}
		t.Fatalf("kernel overlay mount %s: %v", opts, err)
	}
	in := func(p string) string { return filepath.Join(w.mnt, p) }
	func() {
		defer unmount(w.mnt)
		if w.lowers, err = walkTree(w.mnt); err != nil {
			return
		}
		appendTo := func(p string, b []byte) {
			f, e := os.OpenFile(in(p), os.O_WRONLY|os.O_APPEND, 0)
			if e == nil {
				_, e = f.Write(b)
				e = errors.Join(e, f.Close())
			}
			do(e)
		}
		appendTo("f0", data(100))          // copy-up by a write
		do(os.Chmod(in("f1"), 0o600))      // by a chmod
		do(os.Truncate(in("f3"), 10))      // by a truncate
		do(os.Remove(in("f2")))            // whiteouts
		do(os.Remove(in("m/p1")))          // in a merged directory
		do(os.RemoveAll(in("gone")))       // of a directory
		do(os.RemoveAll(in("op")))         // an opaque directory
		do(os.Mkdir(in("op"), 0o750))      //
		file(in("op/new"), small())        //
		do(os.Rename(in("ren"), in("rd"))) // a redirect
		do(os.Rename(in("rd/a/b"), in("rd/bb")))
		// Names of a lower file with several names, one copied up through the index: a
		// commit links the others into the upper first (CoverIndexedAliases).
		appendTo("h1", data(50))
		do(os.Link(in("k1"), in("m/k1-link")))    // a lower file linked: two names, one file
		do(os.Rename(in("f6"), in("m/f6-moved"))) // copy-up and rename
		file(in("m/p4"), small())                 // new in a merged directory
		file(in("nd/sub/q0"), small())            // new directories
		do(os.Symlink("../f0", in("nd/sl")))      //
		for i := range 250 + r.IntN(100) {        // many entries in the upper root
			file(in(fmt.Sprintf("n%03d", i)), r.IntN(300))
		}
		if err == nil {
			w.old, err = walkTree(w.mnt)
		}
	}()
	if err != nil {
		t.Fatalf("building the upper through the kernel overlay: %v", err)
	}
	w.conf = filepath.Join(dir, "exports")
	conf := fmt.Sprintf("layer l1 %s\nlayer l2 %s\nexport /ws\n  lowers l1 l2\n  upper %s\n  work %s\n  options redirect_dir=on,index=on\n  clients 127.0.0.1(rw,insecure,no_root_squash)\n",
		w.l1, w.l2, w.upper, w.work)
	if err := os.WriteFile(w.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	w.sock = filepath.Join(dir, "control.sock")
	w.port = testenv.FreePort(t)
	w.start()
	got := w.observe()
	if d := diffTrees(w.old, got); d != "" {
		w.fatalf("ovlnfs shows another tree than the kernel overlay that made the upper (got: ovlnfs):\n%s", d)
	}
	if a, b := linkGroups(w.old), linkGroups(got); !slices.Equal(a, b) {
		w.fatalf("names that are one file: kernel overlay %v, ovlnfs %v", a, b)
	}
	w.old = got
	switch op {
	case opCommit, opFlatten:
		w.target = w.old
	case opCommitAgain:
		w.cli("commit", "--control="+w.sock, "/ws", filepath.Join(w.committed, "layer-0"))
		w.change()
		// The kernel overlay, over the stack, fills the upper again: copy-ups from the
		// committed layer, whiteouts over it, many new entries in the upper root.
		w.srv.Kill()
		w.kernelMount(func() error {
			for i := range 200 {
				if err := os.WriteFile(in(fmt.Sprintf("r%03d", i)), data(r.IntN(300)), 0o644); err != nil {
					return err
				}
			}
			f, err := os.OpenFile(in("n003"), os.O_WRONLY|os.O_APPEND, 0)
			if err == nil {
				_, err = f.Write([]byte("appended over the committed layer"))
				err = errors.Join(err, f.Close())
			}
			return errors.Join(err, os.Remove(in("n004")), os.Chmod(in("m/p4"), 0o600), os.Rename(in("nd"), in("nd2")))
		})
		w.start()
		w.old = w.observe()
		w.target = w.old
	case opResetSnap:
		w.target = w.old
		w.cli("snapshot", "--control="+w.sock, "/ws", "s1")
		w.change()
		w.old = w.observe()
	case opResetLowers:
		w.target = w.lowers
	}
	w.layer = filepath.Join(w.committed, fmt.Sprintf("layer-%d", len(w.stack())))
	w.stack0 = w.stack()
	return w
}

// cli runs an ovlnfs command that must succeed.
func (w *workspace) cli(args ...string) {
	w.t.Helper()
	if out, err := exec.Command(w.bin, args...).CombinedOutput(); err != nil {
		w.fatalf("ovlnfs %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// change makes changes through NFS after a snapshot or a first commit: files created and
// written, files of the upper (or the committed layer) removed and written to.
func (w *workspace) change() {
	w.t.Helper()
	c, root := w.dial()
	defer c.close()
	for i := range 5 {
		fh, err := c.create(root, fmt.Sprintf("late%d", i), 0o640)
		if err == nil {
			_, _, err = c.write(fh, 0, []byte(fmt.Sprintf("written after, %d", i)), 2)
		}
		if err != nil {
			w.fatalf("creating late%d: %v", i, err)
		}
	}
	for _, n := range []string{"n000", "n001", "f0", "f5"} {
		if err := c.remove(root, n); err != nil {
			w.fatalf("removing %s: %v", n, err)
		}
	}
	fh, err := c.lookup(root, "n002")
	if err == nil {
		_, _, err = c.write(fh, 0, []byte("overwritten"), 2)
	}
	if err != nil {
		w.fatalf("writing n002: %v", err)
	}
}

func (w *workspace) dial() (*client, []byte) {
	w.t.Helper()
	c, err := dial(fmt.Sprintf("127.0.0.1:%d", w.port), 0x5000_0000)
	if err != nil {
		w.fatalf("dial: %v", err)
	}
	r, err := c.call(mount.ProgramNumber, mount.Version, uint32(mount.ProcMnt), rpctest.Opaque([]byte("/ws")))
	if err != nil {
		w.fatalf("MNT /ws: %v", err)
	}
	if st := r.Uint32(); st != 0 {
		w.fatalf("MNT /ws: status %d", st)
	}
	root := append([]byte(nil), r.Opaque()...)
	return c, root
}

// observe walks the export through NFS.
func (w *workspace) observe() map[string]entry {
	w.t.Helper()
	c, root := w.dial()
	defer c.close()
	out, _ := nfsTree(c, root, w.fatalf, nil)
	return out
}

// stack is the committed layers WORK/ovlnfs-stack names, top-most first.
func (w *workspace) stack() []string {
	w.t.Helper()
	s, _, err := readStack(w.work)
	if err != nil {
		w.fatalf("%v", err)
	}
	return s
}

// flattened reports whether the stack's bottom layer is a flattened commit's, which
// replaced the configured lowers.
func (w *workspace) flattened() bool {
	w.t.Helper()
	_, f, err := readStack(w.work)
	if err != nil {
		w.fatalf("%v", err)
	}
	return f
}

// readStack reads WORK/ovlnfs-stack: a JSON array of layers, or, once a commit was
// flattened, an object with the layers and "flattened": true.
func readStack(work string) ([]string, bool, error) {
	b, err := os.ReadFile(filepath.Join(work, "ovlnfs-stack"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	var out struct {
		Layers    []string `json:"layers"`
		Flattened bool     `json:"flattened"`
	}
	if len(b) > 0 && b[0] == '[' {
		err = json.Unmarshal(b, &out.Layers)
	} else {
		err = json.Unmarshal(b, &out)
	}
	if err != nil {
		return nil, false, fmt.Errorf("ovlnfs-stack: %q: %w", b, err)
	}
	return out.Layers, out.Flattened, nil
}

// journal is the operation's journal directory in the workdir.
func (w *workspace) journal(op wsOp) string {
	if op.isCommit() {
		return filepath.Join(w.work, "ovlnfs-commit.new")
	}
	return filepath.Join(w.work, "ovlnfs-reset.new")
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// timing is an unkilled operation's: from the server's log line to the CLI's exit, and
// to when its journal appeared and was gone.
type timing struct{ total, from, to time.Duration }

func (w *workspace) calibrate(op wsOp) timing {
	w.t.Helper()
	var tm timing
	w.run(op, kill{}, &tm, nil)
	return tm
}

// kill says when run kills the server: delay after the CLI started, after the server
// logged the request or after the operation's journal appeared (or the CLI exited).
type kill struct {
	from  int
	delay time.Duration
}

const (
	fromStart = iota
	fromLog
	fromJournal
)

// run sends op through the CLI and kills the server as k says, restarts it and checks
// the result.
// With tm != nil it kills nothing, measures the operation into tm and checks the new
// state.
func (w *workspace) run(op wsOp, k kill, tm *timing, st *wsStats) (inside, isNew bool) {
	w.t.Helper()
	var args []string
	marker := "resetting a workspace"
	switch op {
	case opCommit, opCommitAgain:
		args = []string{"commit", "--control=" + w.sock, "/ws", w.layer}
		marker = "committing a workspace"
	case opFlatten:
		args = []string{"commit", "--control=" + w.sock, "--flatten", "/ws", w.layer}
		marker = "committing a workspace"
	case opResetSnap:
		args = []string{"reset", "--control=" + w.sock, "--to=s1", "/ws"}
	case opResetLowers:
		args = []string{"reset", "--control=" + w.sock, "/ws"}
	}
	cmd := exec.Command(w.bin, args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	logged := strings.Count(w.srv.Log(), marker)
	began := time.Now()
	if err := cmd.Start(); err != nil {
		w.fatalf("starting ovlnfs %v: %v", args, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	waitLog := func() time.Time {
		deadline := time.Now().Add(30 * time.Second)
		for strings.Count(w.srv.Log(), marker) == logged {
			if time.Now().After(deadline) {
				w.fatalf("the server did not log %q within 30s", marker)
			}
			time.Sleep(20 * time.Microsecond)
		}
		return time.Now()
	}
	if tm != nil {
		at := waitLog()
		var err error
		for journal, seen := w.journal(op), false; ; {
			select {
			case err = <-exited:
			default:
				if there := exists(journal); there != seen {
					if seen = there; seen {
						tm.from = time.Since(at)
					} else {
						tm.to = time.Since(at)
					}
				}
				continue
			}
			break
		}
		if err != nil {
			w.fatalf("ovlnfs %v: %v\n%s", args, err, out.String())
		}
		tm.total = time.Since(at)
		// Unkilled, the new state, with the server that made it and after a restart.
		for range 2 {
			got := w.observe()
			if op.isCommit() {
				if d := w.sameTree(w.target, got); d != "" {
					w.fatalf("%v: the tree is not the one before:\n%s", op, d)
				}
			} else if d := diffTrees(w.target, got); d != "" {
				w.fatalf("%v: the tree is not the new one:\n%s", op, d)
			}
			w.srv.Kill()
			w.start()
		}
		return
	}
	var killAt, logAt time.Time
	switch k.from {
	case fromStart:
		killAt = began.Add(k.delay)
	case fromLog:
		logAt = waitLog()
		killAt = logAt.Add(k.delay)
	case fromJournal:
		logAt = waitLog()
		for journal := w.journal(op); !exists(journal) && len(exited) == 0; {
		}
		killAt = time.Now().Add(k.delay)
	}
	time.Sleep(time.Until(killAt))
	// Whether the CLI had its answer: a kill after it must find the new state.
	answered := false
	select {
	case err := <-exited:
		answered = err == nil
		if err != nil {
			w.fatalf("ovlnfs %v failed before the kill: %v\n%s", args, err, out.String())
		}
		exited <- err
	default:
	}
	w.srv.Kill()
	killed := time.Now()
	inside = exists(w.journal(op))
	if err := <-exited; err == nil {
		answered = true
	}
	st.kills[op]++
	if k.from != fromStart {
		st.durations[op] = append(st.durations[op], killed.Sub(logAt))
	}
	if answered {
		st.answered[op]++
	}

	w.start()
	for _, j := range []string{"ovlnfs-commit.new", "ovlnfs-reset.new", "ovlnfs-stack.tmp", "ovlnfs-flatten.new", "ovlnfs-commit.done"} {
		if exists(filepath.Join(w.work, j)) {
			w.fatalf("%v killed: WORK/%s is left after the restart", op, j)
		}
	}
	if names, _ := readNames(filepath.Join(w.work, "ovlnfs-snapshots")); slices.ContainsFunc(names, func(n string) bool { return strings.HasPrefix(n, ".") }) {
		w.fatalf("%v killed: a temporary snapshot is left after the restart: %v", op, names)
	}
	got := w.observe()
	isNew = false
	if op.isCommit() {
		stack := w.stack()
		stacked := len(stack) > 0 && stack[0] == w.layer
		if op == opFlatten {
			// The flattened layer alone, or the old stack.
			if stacked != w.flattened() || stacked && len(stack) != 1 || !stacked && !slices.Equal(stack, w.stack0) {
				w.fatalf("%v killed: the stack is %v (flattened: %v), before it was %v, the new layer %s", op, stack, w.flattened(), w.stack0, w.layer)
			}
		} else if !slices.Equal(stack, w.stack0) && !(stacked && slices.Equal(stack[1:], w.stack0)) {
			w.fatalf("%v killed: the stack is %v, before it was %v, the new layer %s", op, stack, w.stack0, w.layer)
		}
		if stacked != exists(w.layer) {
			w.fatalf("%v killed: the stack names the new layer: %v, the layer exists: %v", op, stacked, exists(w.layer))
		}
		if answered && !stacked {
			w.fatalf("%v answered, then killed: the stack %v lacks the new layer", op, stack)
		}
		if stacked {
			ln, err := readNames(w.layer)
			if err != nil {
				w.fatalf("%v", err)
			}
			un, err := readNames(w.upper)
			if err != nil {
				w.fatalf("%v", err)
			}
			if both := intersect(ln, un); len(both) > 0 {
				w.fatalf("%v killed: the upper root and the new layer both hold %v", op, both)
			}
		}
		if d := w.sameTree(w.old, got); d != "" {
			w.fatalf("%v killed (%s, stacked: %v): the tree is not the one before:\n%s", op, where(inside), stacked, d)
		}
		isNew = stacked
	} else {
		dOld := w.sameTree(w.old, got)
		dNew := diffTrees(w.target, got)
		if dNew == "" {
			if a, b := linkGroups(w.target), linkGroups(got); !slices.Equal(a, b) {
				dNew = fmt.Sprintf("  names that are one file: %v, want %v", b, a)
			}
		}
		switch {
		case dNew == "":
			isNew = true
		case dOld == "" && answered:
			w.fatalf("%v answered, then killed: the tree is the old one", op)
		case dOld != "":
			w.fatalf("%v killed (%s): the tree is neither the old one nor the new one\nagainst the old one:\n%s\nagainst the new one:\n%s", op, where(inside), dOld, dNew)
		}
	}
	switch {
	case inside && isNew:
		st.insideNew[op]++
	case inside:
		st.insideOld[op]++
	case isNew:
		st.afterOp[op]++
	default:
		st.beforeOp[op]++
	}
	w.srv.SetLogOnFailure(false)
	return inside, isNew
}

func where(inside bool) string {
	if inside {
		return "inside it, the journal there"
	}
	return "no journal there"
}

// sameTree compares got with want: the same entries, the same fileids (objects keep
// their identity through a commit and through an operation taken back), the same names
// that are one file.
func (w *workspace) sameTree(want, got map[string]entry) string {
	if d := diffTrees(want, got); d != "" {
		return d
	}
	var lines []string
	for p, e := range want {
		if got[p].fileid != e.fileid {
			lines = append(lines, fmt.Sprintf("  %s: fileid %d, want %d", p, got[p].fileid, e.fileid))
		}
	}
	if a, b := linkGroups(want), linkGroups(got); !slices.Equal(a, b) {
		lines = append(lines, fmt.Sprintf("  names that are one file: %v, want %v", b, a))
	}
	slices.Sort(lines)
	if len(lines) > 40 {
		lines = append(lines[:40], fmt.Sprintf("  ... and %d more", len(lines)-40))
	}
	return strings.Join(lines, "\n")
}

func intersect(a, b []string) []string {
	var out []string
	for _, x := range a {
		if slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

// kernelMount mounts the workspace with the kernel overlay (the server stopped), the
// committed layers above the configured lowers (or alone, once flattened), and runs fn
// on it.
func (w *workspace) kernelMount(fn func() error) {
	w.t.Helper()
	lowers := w.stack()
	if !w.flattened() {
		lowers = append(lowers, w.l1, w.l2)
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s,redirect_dir=on,index=on", strings.Join(lowers, ":"), w.upper, w.work)
	if err := unix.Mount("overlay", w.mnt, "overlay", 0, opts); err != nil {
		w.fatalf("kernel overlay mount %s: %v", opts, err)
	}
	defer unmount(w.mnt)
	if err := fn(); err != nil {
		w.fatalf("on the kernel overlay (%s): %v", opts, err)
	}
}

// kernelCompare stops the server and mounts the result with the kernel overlay, the
// committed layers above the configured lowers, and compares its tree with what the
// server showed last.
func (w *workspace) kernelCompare() {
	w.t.Helper()
	got := w.observe()
	w.srv.Kill()
	w.kernelMount(func() error {
		k, err := walkTree(w.mnt)
		if err != nil {
			return err
		}
		if d := diffTrees(got, k); d != "" {
			return fmt.Errorf("the kernel overlay shows another tree than ovlnfs (got: kernel):\n%s", d)
		}
		if a, b := linkGroups(got), linkGroups(k); !slices.Equal(a, b) {
			return fmt.Errorf("names that are one file: ovlnfs %v, kernel overlay %v", a, b)
		}
		return nil
	})
}
