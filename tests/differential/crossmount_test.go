package differential

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/billyunion"
)

// TestCrossMount: an upper layer written by ovlnfs, mounted by the kernel
// overlay over the same lowers, shows the tree ovlnfs showed; and an upper
// written by the kernel overlay, opened by ovlnfs, shows the tree the kernel
// showed. DIFFTEST_CROSS_SEQS sequences each way (default 200) in each
// variant (with redirect_dir=on the directory renames make redirects on
// either side, which the other follows).
func TestCrossMount(t *testing.T) {
	requireOverlay(t)
	for _, v := range selectedVariants() {
		t.Run(v.name, func(t *testing.T) { testCrossMount(t, v) })
	}
}

func testCrossMount(t *testing.T, v variant) {
	n := envInt("DIFFTEST_CROSS_SEQS", 200)
	nops := envInt("DIFFTEST_OPS", 30)
	failures := 0
	for seed := uint64(1); seed <= uint64(n) && failures < 5; seed++ {
		for _, dir := range []string{"ovlnfs-then-kernel", "kernel-then-ovlnfs"} {
			if err := crossMount(seed, nops, dir == "ovlnfs-then-kernel", v); err != nil {
				failures++
				t.Errorf("seed %d (%s, %s): %v\n  replay: DIFFTEST_VARIANT=%s DIFFTEST_CROSS_SEQS=%d go test ./tests/differential -run TestCrossMount", seed, v.name, dir, err, v.name, seed)
			}
		}
	}
	t.Logf("cross-mount (%s): %d sequences each way, %d failures", v.name, n, failures)
}

// crossMount writes with one implementation, then reads with the other.
func crossMount(seed uint64, nops int, unionWrites bool, v variant) error {
	root, err := os.MkdirTemp("", "ovlnfs-cross-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	dir := filepath.Join(root, "set")
	if err := generate(rand.New(rand.NewPCG(seed, 0x0ad)), dir, v.dirRenames, v.hardLinks); err != nil {
		return err
	}
	mnt := filepath.Join(root, "m")
	os.Mkdir(mnt, 0o755)
	opts := fmt.Sprintf("lowerdir=%[1]s/l1:%[1]s/l2:%[1]s/l3,upperdir=%[1]s/u,workdir=%[1]s/w", dir) + v.kernelOpts
	mount := func() error { return unix.Mount("overlay", mnt, "overlay", 0, opts) }
	openUnion := func() (*billyunion.FS, error) {
		return billyunion.New(billyunion.Options{
			Lowers: []string{dir + "/l1", dir + "/l2", dir + "/l3"},
			Upper:  dir + "/u", Work: dir + "/w", XattrPrefix: "trusted.overlay.",
			RedirectDir: v.redirectDir, Index: v.index,
		})
	}
	r := rand.New(rand.NewPCG(seed, 0xc405))
	var written map[string]entryInfo
	var renamed renameHistory
	track := func(o op, tree map[string]entryInfo, errno syscall.Errno) {
		if o.kind == "rename" && errno == 0 && tree[o.a].kind == "dir" {
			renamed = append(renamed, o)
		}
	}

	if unionWrites {
		fs, err := openUnion()
		if err != nil {
			return err
		}
		for i := 0; i < nops; i++ {
			tree, err := walkUnion(fs)
			if err != nil {
				fs.Close()
				return err
			}
			for _, o := range expand(v.nextOp(r, tree, renamed), tree) {
				track(o, tree, applyUnion(fs, o).errno)
			}
		}
		written, err = walkUnion(fs)
		fs.Close()
		if err != nil {
			return err
		}
		if err := mount(); err != nil {
			return fmt.Errorf("kernel refused ovlnfs's upper: %w", err)
		}
		defer unix.Unmount(mnt, unix.MNT_DETACH)
		read, err := walkHost(mnt, false)
		if err != nil {
			return err
		}
		return treesEqual("ovlnfs wrote", written, "kernel reads", read)
	}
	if err := mount(); err != nil {
		return err
	}
	for i := 0; i < nops; i++ {
		tree, err := walkHost(mnt, false)
		if err != nil {
			unix.Unmount(mnt, 0)
			return err
		}
		for _, o := range expand(v.nextOp(r, tree, renamed), tree) {
			track(o, tree, applyKernel(mnt, o).errno)
		}
	}
	written, err = walkHost(mnt, false)
	if uerr := unix.Unmount(mnt, 0); uerr != nil {
		unix.Unmount(mnt, unix.MNT_DETACH)
	}
	if err != nil {
		return err
	}
	fs, err := openUnion()
	if err != nil {
		return fmt.Errorf("ovlnfs refused the kernel's upper: %w", err)
	}
	defer fs.Close()
	read, err := walkUnion(fs)
	if err != nil {
		return err
	}
	return treesEqual("kernel wrote", written, "ovlnfs reads", read)
}

// expand turns an rm -rf into its steps and drops operations that would
// walk through a symlink or climb with "..", which the two implementations
// treat differently by design (and which the kernel would follow out of
// the layers).
func expand(o op, tree map[string]entryInfo) []op {
	batch := []op{o}
	if o.kind == "rmrf" {
		batch = rmrfOps(tree, o.a)
	}
	var out []op
	for _, b := range batch {
		if b.hasDotDot() || b.throughSymlink(tree) {
			continue
		}
		if e, ok := tree[b.a]; ok && opensFile[b.kind] && e.kind != "file" && e.kind != "dir" && e.kind != "symlink" {
			continue
		}
		out = append(out, b)
	}
	return out
}

func treesEqual(wname string, w map[string]entryInfo, rname string, r map[string]entryInfo) error {
	if d := diffTrees(w, r); len(d) > 0 {
		return fmt.Errorf("%s / %s differ (first listed is %q):\n    %s", wname, rname, wname,
			strings.ReplaceAll(strings.Join(d, "\n    "), "kernel:", "first: "))
	}
	return nil
}
