package differential

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/billyunion"
)

func TestMain(m *testing.M) {
	// Modes must mean what the operations say on both sides, as they do
	// for an NFS server (clients apply their own umask).
	syscall.Umask(0)
	os.Exit(m.Run())
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func requireOverlay(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("the differential test needs root (kernel overlay mounts)")
		}
		t.Skip("needs root (kernel overlay mounts)")
	}
}

// TestDifferential runs DIFFTEST_SEQS (default 2000) random sequences of
// DIFFTEST_OPS (default 30) operations in each variant (variants.go;
// DIFFTEST_VARIANT picks one); DIFFTEST_SEED runs one sequence, and
// DIFFTEST_KEEP keeps the layers of a divergent one (and its kernel mount).
func TestDifferential(t *testing.T) {
	requireOverlay(t)
	for _, v := range selectedVariants() {
		t.Run(v.name, func(t *testing.T) { testDifferential(t, v) })
	}
}

func testDifferential(t *testing.T, v variant) {
	seqs, nops := envInt("DIFFTEST_SEQS", 2000), envInt("DIFFTEST_OPS", 30)
	seeds := make([]uint64, seqs)
	for i := range seeds {
		seeds[i] = uint64(i + 1)
	}
	if s := os.Getenv("DIFFTEST_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("DIFFTEST_SEED: %v", err)
		}
		seeds = []uint64{v}
	}
	start := time.Now()
	var next, ran, opsRan, skipped, accepted, dirRenames, redirected, linkedOps, indexEntries, diffed atomic.Int64
	var mu sync.Mutex
	var failures []string
	var wg sync.WaitGroup
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				mu.Lock()
				enough := len(failures) >= 5
				mu.Unlock()
				if i >= len(seeds) || enough {
					return
				}
				st, err := runSequence(seeds[i], nops, v)
				ran.Add(1)
				opsRan.Add(int64(st.ops))
				skipped.Add(int64(st.skipped))
				if st.acceptedDivergence {
					accepted.Add(1)
				}
				dirRenames.Add(int64(st.dirRenames))
				linkedOps.Add(int64(st.linkedOps))
				indexEntries.Add(int64(st.indexEntries))
				redirected.Add(int64(st.redirected))
				if st.diffed {
					diffed.Add(1)
				}
				if err != nil {
					mu.Lock()
					failures = append(failures, err.Error())
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	for _, f := range failures {
		t.Error(f)
	}
	t.Logf("differential (%s): %d sequences, %d operations compared (%d skipped on special files; %d directory renames, %d of them with a redirect; %d on names of files with several names; %d index entries at the ends; %d kernel uppers diffed), %d divergent sequences, %d ended early at a deliberate divergence, %s",
		v.name, ran.Load(), opsRan.Load(), skipped.Load(), dirRenames.Load(), redirected.Load(), linkedOps.Load(), indexEntries.Load(), diffed.Load(), len(failures), accepted.Load(), time.Since(start).Round(time.Millisecond))
	if len(failures) == 0 && ran.Load() != int64(len(seeds)) {
		t.Fatalf("ran %d of %d sequences", ran.Load(), len(seeds))
	}
}

type seqStats struct {
	ops, skipped       int
	acceptedDivergence bool
	// dirRenames counts directory renames that succeeded, redirected those
	// of them that left a redirect in the kernel's upper.
	dirRenames, redirected int
	// linkedOps counts operations on names of files with several names
	// (variant.hardLinks); indexEntries the kernel's index entries at the
	// end of the sequence.
	linkedOps, indexEntries int
	// diffed: billyunion.Diff of the kernel's upper was compared at the end.
	diffed bool
}

// sides is one sequence's pair of overlays over identical layer copies.
type sides struct {
	kdir, udir string // the kernel's and the union's copies
	mnt        string
	fs         *billyunion.FS
	index      bool // both run with index=on: their index directories are compared
}

func setup(seed uint64, root string, v variant) (*sides, error) {
	tpl := filepath.Join(root, "tpl")
	if err := generate(rand.New(rand.NewPCG(seed, 0x0ad)), tpl, v.dirRenames, v.hardLinks); err != nil {
		return nil, fmt.Errorf("generate: %w", err)
	}
	s := &sides{kdir: filepath.Join(root, "k"), udir: filepath.Join(root, "b"), index: v.index == "on"}
	for _, d := range []string{s.kdir, s.udir} {
		if err := copyTree(tpl, d); err != nil {
			return nil, err
		}
	}
	s.mnt = filepath.Join(s.kdir, "m")
	os.Mkdir(s.mnt, 0o755)
	opts := fmt.Sprintf("lowerdir=%[1]s/l1:%[1]s/l2:%[1]s/l3,upperdir=%[1]s/u,workdir=%[1]s/w", s.kdir) + v.kernelOpts
	if err := unix.Mount("overlay", s.mnt, "overlay", 0, opts); err != nil {
		return nil, fmt.Errorf("kernel overlay mount: %w", err)
	}
	fs, err := billyunion.New(billyunion.Options{
		Lowers: []string{s.udir + "/l1", s.udir + "/l2", s.udir + "/l3"},
		Upper:  s.udir + "/u", Work: s.udir + "/w", XattrPrefix: "trusted.overlay.",
		RedirectDir: v.redirectDir, Index: v.index,
	})
	if err != nil {
		s.close()
		return nil, err
	}
	s.fs = fs
	return s, nil
}

func (s *sides) close() {
	if s.fs != nil {
		s.fs.Close()
	}
	for i := 0; i < 50; i++ {
		if err := unix.Unmount(s.mnt, 0); err == nil || err == unix.EINVAL || err == unix.ENOENT {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	unix.Unmount(s.mnt, unix.MNT_DETACH)
}

var opensFile = map[string]bool{"overwrite": true, "append": true, "writeat": true, "truncate": true, "read": true}

// diffEvery: one sequence in this many ends with the check of ovlnfs diff on the
// kernel's upper (checkDiff), which walks both trees again: 500 of the 2,000 per variant.
const diffEvery = 4

// runSequence runs one seed; the error says everything needed to replay it.
func runSequence(seed uint64, nops int, v variant) (st seqStats, err error) {
	root, err := os.MkdirTemp("", "ovlnfs-diff-")
	if err != nil {
		return st, err
	}
	defer func() {
		if err != nil && os.Getenv("DIFFTEST_KEEP") != "" {
			err = fmt.Errorf("%w\n  layers kept in %s", err, root)
			return
		}
		os.RemoveAll(root)
	}()
	s, err := setup(seed, root, v)
	if err != nil {
		return st, fmt.Errorf("seed %d: setup: %w", seed, err)
	}
	defer s.close()

	r := rand.New(rand.NewPCG(seed, 0x5e9))
	var history []string
	var renamed renameHistory
	fail := func(step int, what string, details ...string) error {
		return fmt.Errorf("seed %d (%s) diverged at step %d: %s\n  operations so far:\n    %s\n  %s\n  replay: DIFFTEST_VARIANT=%s DIFFTEST_SEED=%d DIFFTEST_OPS=%d go test ./tests/differential -run TestDifferential -v",
			seed, v.name, step, what, strings.Join(history, "\n    "), strings.Join(details, "\n  "), v.name, seed, nops)
	}
	for step := 1; step <= nops; step++ {
		ktree, err := walkHost(s.mnt, false)
		if err != nil {
			return st, fail(step, "walking the kernel overlay: "+err.Error())
		}
		top := v.nextOp(r, ktree, renamed)
		batch := []op{top}
		if top.kind == "rmrf" {
			batch = rmrfOps(ktree, top.a)
		}
		for _, o := range batch {
			if opensFile[o.kind] {
				if e, ok := ktree[o.a]; ok && e.kind != "file" && e.kind != "dir" && e.kind != "symlink" {
					st.skipped++ // opening a FIFO would block; the union refuses such opens by design
					continue
				}
			}
			st.ops++
			if o.linked {
				st.linkedOps++
			}
			history = append(history, o.String())
			if o.hasDotDot() {
				if got := applyUnion(s.fs, o); got.errno != syscall.EINVAL {
					return st, fail(step, o.String(), fmt.Sprintf("ovlnfs must refuse '..' with EINVAL, got %v", got.errno))
				}
			} else if o.throughSymlink(ktree) {
				// Deliberate divergence: the kernel would follow the
				// symlink (possibly out of the mount: never done here);
				// the union never follows one and answers ENOTDIR.
				if got := applyUnion(s.fs, o); got.errno != syscall.ENOTDIR {
					return st, fail(step, o.String(), fmt.Sprintf("ovlnfs must not walk through a symlink: want ENOTDIR, got %v", got.errno))
				}
			} else {
				k, u := applyKernel(s.mnt, o), applyUnion(s.fs, o)
				if k.errno == syscall.ENOTEMPTY && u.errno == 0 && (o.kind == "rmdir" && s.kernelShowsEmpty(o.a) ||
					o.kind == "rename" && ktree[o.b].kind == "dir" && s.kernelShowsEmpty(o.b)) {
					// Deliberate divergence (docs/semantics.md): the
					// kernel counts an xattr whiteout as an entry of a
					// directory to remove or replace; ovlnfs judges
					// emptiness on the merged view. The trees part here,
					// so the sequence ends.
					st.acceptedDivergence = true
					return st, nil
				}
				if k.errno != u.errno {
					return st, fail(step, o.String(), fmt.Sprintf("kernel: %v (%d)   ovlnfs: %v (%d)", k.errno, k.errno, u.errno, u.errno))
				}
				if k.errno == 0 && k.data != u.data {
					return st, fail(step, o.String(), fmt.Sprintf("kernel read %q, ovlnfs read %q", k.data, u.data))
				}
				history[len(history)-1] += "  => " + errName(k.errno)
				if o.kind == "rename" && k.errno == 0 && ktree[o.a].kind == "dir" {
					renamed = append(renamed, o)
					st.dirRenames++
					if _, err := lgetxattr(filepath.Join(s.kdir, "u", o.b), "trusted.overlay.redirect"); err == nil {
						st.redirected++
					}
				}
			}
			if o.kind == "rename" && !o.hasDotDot() {
				if s.mirrorStrayRename(o) {
					// Deliberate divergence: the kernel copied the
					// directory up before its failed rename, ovlnfs
					// did not. The uppers part here, so the sequence
					// ends.
					st.acceptedDivergence = true
					return st, nil
				}
			}
			if err := s.compare(); err != nil {
				return st, fail(step, o.String(), err.Error())
			}
		}
	}
	if s.index {
		if idx, err := indexEntries(filepath.Join(s.kdir, "w", "index")); err == nil {
			st.indexEntries = len(idx)
		}
	}
	if seed%diffEvery == 0 || len(os.Getenv("DIFFTEST_SEED")) > 0 {
		if err := s.checkDiff(); err != nil {
			return st, fail(nops, "ovlnfs diff", err.Error())
		}
		st.diffed = true
	}
	return st, nil
}

// mirrorStrayRename handles a deliberate divergence (docs/semantics.md: a
// failed rename changes nothing): before a rename the upper layer itself
// then refuses (ENOTEMPTY on a pure upper target), the kernel has already
// marked a pure upper directory moving into a merged one opaque, given a
// directory with lower parts its redirect (or turned its bare-name redirect
// into the equivalent path), marked the new parent impure and, for
// redirect_dir=on, copied the directory up, and keeps all of it when the
// rename fails; ovlnfs changes nothing. The marks change nothing visible (an
// opaque directory with no lower parts, a redirect naming the directory's own
// place, an impure mark) and are copied onto ovlnfs's upper, the copy-up
// made by a no-op chtimes through the union (and the old parent's mtime,
// which that copy-up of the kernel's stamps), so the comparison goes on; it
// ends the sequence (true) only if that fails.
func (s *sides) mirrorStrayRename(o op) bool {
	if _, err := os.Lstat(filepath.Join(s.mnt, o.a)); err != nil {
		return false // the rename succeeded: nothing stray about it
	}
	k := filepath.Join(s.kdir, "u", o.a)
	u := filepath.Join(s.udir, "u", o.a)
	if _, err := os.Lstat(k); err == nil {
		if _, err := os.Lstat(u); os.IsNotExist(err) {
			// The stray copy-up: made through the union by setting the
			// directory's times to what they are (a copy-up keeps them).
			fi, err := s.fs.Lstat(o.a)
			if err != nil {
				return true
			}
			st := fi.Sys().(*syscall.Stat_t)
			if s.fs.Chtimes(o.a, time.Unix(st.Atim.Unix()), time.Unix(st.Mtim.Unix())) != nil {
				return true
			}
			// The kernel's stray copy-up stamps the old parent's mtime too.
			var kst unix.Stat_t
			parent := path.Dir(o.a)
			if parent == "." {
				parent = ""
			}
			pfi, err := s.fs.Lstat(parent)
			if err != nil || unix.Lstat(filepath.Join(s.mnt, parent), &kst) != nil {
				return true
			}
			pst := pfi.Sys().(*syscall.Stat_t)
			if !deterministic(kst.Mtim.Nano()) && deterministic(pst.Mtim.Nano()) {
				if s.fs.Chtimes(parent, time.Unix(pst.Atim.Unix()), time.Unix(kst.Mtim.Unix())) != nil {
					return true
				}
			}
		}
	}
	mirror := func(rel, name string) {
		kp, up := filepath.Join(s.kdir, "u", rel), filepath.Join(s.udir, "u", rel)
		v, err := lgetxattr(kp, "trusted.overlay."+name)
		if err != nil {
			return
		}
		if uv, err := lgetxattr(up, "trusted.overlay."+name); err == unix.ENODATA || err == nil && uv != v {
			unix.Lsetxattr(up, "trusted.overlay."+name, []byte(v), 0)
		}
	}
	mirror(o.a, "opaque")
	mirror(o.a, "redirect")
	mirror(filepath.Dir(o.b), "impure")
	return false
}

// kernelShowsEmpty reports whether the kernel's listing shows no entries
// under dir now (names it lists but cannot look up are left out).
func (s *sides) kernelShowsEmpty(dir string) bool {
	tree, err := walkHost(s.mnt, false)
	if err != nil {
		return false
	}
	for p := range tree {
		if strings.HasPrefix(p, dir+"/") {
			return false
		}
	}
	return true
}

func errName(e syscall.Errno) string {
	if e == 0 {
		return "ok"
	}
	return e.Error()
}

// compare checks the visible trees, the upper layers and the work dir.
func (s *sides) compare() error {
	ktree, err := walkHost(s.mnt, false)
	if err != nil {
		return err
	}
	utree, err := walkUnion(s.fs)
	if err != nil {
		return fmt.Errorf("walking ovlnfs: %w", err)
	}
	if d := diffTrees(ktree, utree); len(d) > 0 {
		return fmt.Errorf("visible trees differ:\n    %s", strings.Join(d, "\n    "))
	}
	kup, err := walkHost(filepath.Join(s.kdir, "u"), true)
	if err != nil {
		return err
	}
	uup, err := walkHost(filepath.Join(s.udir, "u"), true)
	if err != nil {
		return err
	}
	if d := diffTrees(kup, uup); len(d) > 0 {
		return fmt.Errorf("upper layers differ:\n    %s", strings.Join(d, "\n    "))
	}
	if s.index {
		kidx, err := indexEntries(filepath.Join(s.kdir, "w", "index"))
		if err != nil {
			return err
		}
		uidx, err := indexEntries(filepath.Join(s.udir, "w", "index"))
		if err != nil {
			return err
		}
		if !slices.Equal(kidx, uidx) {
			return fmt.Errorf("index directories differ:\n    kernel: %v\n    ovlnfs: %v", kidx, uidx)
		}
	}
	left, err := os.ReadDir(filepath.Join(s.udir, "w", "work"))
	if err != nil {
		return err
	}
	if len(left) > 0 {
		var names []string
		for _, e := range left {
			names = append(names, e.Name())
		}
		return fmt.Errorf("ovlnfs left temporaries in its work dir: %v", slices.Sorted(slices.Values(names)))
	}
	return nil
}

// indexEntries describes the entries of an index directory, sorted: their
// names are handles of lower inodes, which differ between the two copies of
// the layers, so each is described by what it is (kind, link count,
// content, overlay xattrs) and by whether its name is the hex of its own
// origin record. The kernel's temporary names ("#...", its shared whiteout
// among them) are left out.
func indexEntries(dir string) ([]string, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, de := range des {
		if strings.HasPrefix(de.Name(), "#") {
			continue
		}
		p := filepath.Join(dir, de.Name())
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return nil, err
		}
		e := infoFromStat((*syscall.Stat_t)(unsafe.Pointer(&st)))
		if e.kind == "file" {
			b, err := os.ReadFile(p)
			if err != nil {
				return nil, err
			}
			e.content = digest(strings.NewReader(string(b)))
		}
		e.xattrs = overlayXattrs(p, false)
		origin, _ := lgetxattr(p, "trusted.overlay.origin")
		e.mtime = 0
		out = append(out, fmt.Sprintf("%v named-by-origin=%v", e, fmt.Sprintf("%x", origin) == de.Name()))
	}
	slices.Sort(out)
	return out, nil
}
