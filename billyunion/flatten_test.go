package billyunion

import (
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/billyunion/layer"
	"github.com/ovlnfs/ovlnfs/copyup"
)

// openStacked opens the workspace's union over its stack, as the server does.
func openStacked(t *testing.T, ws Workspace, lowers []string) *FS {
	t.Helper()
	stack, err := ws.ReadStack()
	must(t, err)
	lw, committed, former, formerCommitted := stack.Lowers(lowers)
	fs, err := New(Options{Lowers: lw, Upper: ws.Upper, Work: ws.Work, CommittedLowers: committed, FormerLowers: former, FormerCommitted: formerCommitted})
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

// flattenFixture is committedFixture committed once, and changed again over the
// committed layer: the flattened commit then has upper objects, objects of a committed
// layer (with and without origins) and of the configured lowers to carry.
func flattenFixture(t *testing.T) (lowers []string, ws Workspace) {
	t.Helper()
	lowers, upper, work := committedFixture(t)
	ws = Workspace{Upper: upper, Work: work}
	_, err := ws.Commit(filepath.Join(filepath.Dir(upper), "layer-1"))
	must(t, err)
	fs := openStacked(t, ws, lowers)
	randomChanges(fs, randFor(9), 40)
	must(t, fs.MkdirAll("fresh/sub", 0o755))
	must(t, os.WriteFile(filepath.Join(upper, "fresh/sub/f"), []byte("fresh"), 0o644))
	must(t, fs.Close())
	return lowers, ws
}

// plainTree describes the directory tree at root as treeOf describes a union's, without
// link counts.
func plainTree(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		desc := fi.Mode().String()
		switch {
		case fi.Mode().IsRegular():
			b, _ := os.ReadFile(p)
			desc += " " + string(b)
		case fi.Mode()&os.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			desc += " -> " + target
		}
		out[rel] = desc
		return nil
	})
	must(t, err)
	return out
}

// withoutLinks is a treeOf tree as plainTree describes it.
func withoutLinks(tree map[string]string) map[string]string {
	want := map[string]string{}
	for p, desc := range tree {
		if i := strings.Index(desc, " nlink="); i >= 0 {
			desc = desc[:i]
		}
		if i := strings.Index(desc, " \""); i >= 0 {
			desc = desc[:i] + " " + strings.Trim(desc[i+1:], "\"")
		}
		want[p] = desc
	}
	return want
}

// TestCommitFlatten: a flattened commit makes a layer that is the workspace's whole tree
// as a plain directory tree (no whiteouts, no opaque, redirect or impure marks), which
// replaces the lowers: the union over it alone (the lowers as former lowers) shows the
// same tree, every object with the same identity, under the same LayerSetID; the kernel
// overlay with the layer as its only lower shows the same tree too.
func TestCommitFlatten(t *testing.T) {
	lowers, ws := flattenFixture(t)
	fs := openStacked(t, ws, lowers)
	tree, ids, setID := treeOf(t, fs), identities(t, fs), fs.LayerSetID()
	copied, err := ws.StageFlatten(fs)
	must(t, err)
	must(t, fs.Close())
	if copied == 0 {
		t.Fatal("nothing copied from the lowers")
	}
	into := filepath.Join(filepath.Dir(ws.Upper), "flat")
	info, err := ws.CommitWith(into, CommitOptions{Flatten: true})
	must(t, err)
	if !info.Flattened || info.Layer != into {
		t.Errorf("commit info %+v", info)
	}
	stack, err := ws.ReadStack()
	must(t, err)
	if !stack.Flattened || !slices.Equal(stack.Layers, []string{into}) {
		t.Fatalf("stack %+v", stack)
	}
	for _, n := range []string{commitDirName, flattenStage} {
		if _, err := os.Lstat(filepath.Join(ws.Work, n)); err == nil {
			t.Errorf("%s is left", n)
		}
	}
	if got := plainTree(t, into); !maps.Equal(got, withoutLinks(tree)) {
		t.Errorf("the flattened layer as a plain tree:\n got %v\nwant %v", got, withoutLinks(tree))
	}
	x := copyup.Xattrs{Prefix: ws.prefix()}
	must(t, filepath.Walk(into, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode()&os.ModeCharDevice != 0 && st.Rdev == 0 {
			t.Errorf("whiteout %s in the flattened layer", p)
		}
		for _, n := range []string{x.Opaque(), x.Redirect(), x.Impure()} {
			if ok, _ := layer.HasXattr(unix.AT_FDCWD, p, n); ok {
				t.Errorf("%s carries %s", p, n)
			}
		}
		return nil
	}))

	fs = openStacked(t, ws, lowers)
	wantKept(t, fs, "flattened commit", tree, ids, setID)
	// Every directory's handle is placed by the kernel (FindDir), through the layer, the
	// former committed layer or the former lowers its identity's object lies in.
	for p, desc := range tree {
		if !strings.HasPrefix(desc, "d") {
			continue
		}
		id, err := fs.Identify(p)
		must(t, err)
		if _, err := fs.FindDir(id.ID); err != nil {
			t.Errorf("FindDir of %s after the flattened commit: %v", p, err)
		}
	}
	// The workspace goes on over the flattened layer: a copy-up keeps the identity.
	f, err := fs.OpenFile("fresh/sub/f", os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
	f.Write([]byte(" more"))
	f.Close()
	if id, err := fs.Identify("fresh/sub/f"); err != nil || id.ID.Key() != ids["fresh/sub/f"] {
		t.Errorf("fresh/sub/f changed identity when copied up after the flattened commit: %v", err)
	}
	must(t, fs.Close())
	must(t, os.RemoveAll(filepath.Join(ws.Upper, "fresh")))

	if os.Geteuid() != 0 {
		t.Log("not root: the kernel overlay is not tried")
		return
	}
	base := filepath.Dir(ws.Upper)
	kup, kwork, mnt := filepath.Join(base, "kup"), filepath.Join(base, "kwork"), filepath.Join(t.TempDir(), "m")
	for _, d := range []string{kup, kwork, mnt} {
		must(t, os.MkdirAll(d, 0o755))
	}
	opts := "lowerdir=" + into + ",upperdir=" + kup + ",workdir=" + kwork + ",index=off"
	if out, err := exec.Command("mount", "-t", "overlay", "overlay", "-o", opts, mnt).CombinedOutput(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("mount the kernel overlay: %v %s", err, out)
		}
		t.Skipf("no kernel overlay: %v %s", err, out)
	}
	defer exec.Command("umount", mnt).Run()
	if got := plainTree(t, mnt); !maps.Equal(got, withoutLinks(tree)) {
		t.Errorf("the kernel overlay of the flattened layer alone:\n got %v\nwant %v", got, withoutLinks(tree))
	}
}

// TestCommitFlattenKilled: a flattened commit killed at each step leaves, once recovered,
// the workspace showing the same tree with the same identities: taken back (the old
// stack) before all is moved, finished (the flattened layer alone) after.
func TestCommitFlattenKilled(t *testing.T) {
	for _, step := range []string{"half committed", "all moved", "flattening", "half flattened", "flattened", "stack written", "stacked", "journal renamed"} {
		t.Run(step, func(t *testing.T) {
			lowers, ws := flattenFixture(t)
			fs := openStacked(t, ws, lowers)
			tree, ids := treeOf(t, fs), identities(t, fs)
			before, err := ws.ReadStack()
			must(t, err)
			_, err = ws.StageFlatten(fs)
			must(t, err)
			must(t, fs.Close())
			into := filepath.Join(filepath.Dir(ws.Upper), "flat")
			killed := ws
			killed.killAt = step
			func() {
				defer func() {
					if r := recover(); r != errKilled {
						t.Fatalf("commit not stopped at %q: %v", step, r)
					}
				}()
				_, _ = killed.CommitWith(into, CommitOptions{Flatten: true})
			}()
			must(t, ws.Recover())
			stack, err := ws.ReadStack()
			must(t, err)
			if step == "half committed" || step == "all moved" {
				if !slices.Equal(stack.Layers, before.Layers) || stack.Flattened {
					t.Fatalf("killed while moving: stack %+v, want %+v", stack, before)
				}
				if _, err := os.Lstat(into); err == nil {
					t.Errorf("%s left after taking the commit back", into)
				}
			} else if !stack.Flattened || !slices.Equal(stack.Layers, []string{into}) {
				t.Fatalf("killed after moving: stack %+v, want the flattened layer", stack)
			}
			fs = openStacked(t, ws, lowers)
			defer fs.Close()
			if got := treeOf(t, fs); !maps.Equal(got, tree) {
				t.Errorf("killed at %q:\n got %v\nwant %v", step, got, tree)
			}
			if got := identities(t, fs); !maps.Equal(got, ids) {
				t.Errorf("killed at %q: identities changed", step)
			}
			for _, n := range []string{commitDirName, commitDoneName, flattenStage, stackFile + ".tmp"} {
				if _, err := os.Lstat(filepath.Join(ws.Work, n)); err == nil {
					t.Errorf("%s is left after recovery", n)
				}
			}
		})
	}
}

// intoFixture is two workspaces over the same lowers: alice changed as committedFixture
// changes, bob with changes of his own (a new directory, a copied-up lower file).
func intoFixture(t *testing.T) (lowers []string, alice, bob Workspace, bobPaths []string) {
	t.Helper()
	lowers, upper, work := committedFixture(t)
	alice = Workspace{Upper: upper, Work: work}
	base := filepath.Dir(upper)
	bob = Workspace{Upper: filepath.Join(base, "bob-upper"), Work: filepath.Join(base, "bob-work")}
	must(t, os.MkdirAll(bob.Upper, 0o755))
	must(t, os.MkdirAll(bob.Work, 0o755))
	fs := openWorkspace(t, lowers, bob.Upper, bob.Work)
	must(t, fs.MkdirAll("bobdir/sub", 0o755))
	for _, p := range []string{"bobdir/sub/f", "bobdir/g"} {
		f, err := fs.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o644)
		must(t, err)
		f.Write([]byte("bob's " + p))
		f.Close()
	}
	f, err := fs.OpenFile("keep/k", os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
	f.Write([]byte(" bob wrote"))
	f.Close()
	must(t, fs.Close())
	return lowers, alice, bob, []string{"bobdir", "bobdir/sub", "bobdir/sub/f", "bobdir/g", "keep/k"}
}

// handedOver checks the state after alice's commit into bob: bob shows alice's tree with
// his own changes over it, alice's objects with the identities they had in alice and
// bob's with theirs, under bob's LayerSetID; alice shows her lowers alone (what she had
// made is STALE now, like after a reset), under her LayerSetID.
func handedOver(t *testing.T, lowers []string, alice, bob Workspace, bobPaths []string, into string,
	aliceTree, aliceIDs, bobTree, bobIDs map[string]string, aliceSet, bobSet uint32) {
	t.Helper()
	stack, err := bob.ReadStack()
	must(t, err)
	if !slices.Equal(stack.Layers, []string{into}) {
		t.Fatalf("bob's stack %+v, want %s", stack, into)
	}
	if stack, _ := alice.ReadStack(); len(stack.Layers) != 0 {
		t.Errorf("alice's stack %+v, want none", stack)
	}
	want := maps.Clone(aliceTree)
	for _, p := range bobPaths {
		want[p] = bobTree[p]
	}
	fs := openStacked(t, bob, lowers)
	defer fs.Close()
	got, gotIDs := treeOf(t, fs), identities(t, fs)
	if !maps.Equal(withoutLinks(got), withoutLinks(want)) {
		t.Errorf("bob after alice's commit into his stack:\n got %v\nwant %v", got, want)
	}
	for p := range want {
		wantID := aliceIDs[p]
		if slices.Contains(bobPaths, p) || p == "" {
			wantID = bobIDs[p]
		}
		if gotIDs[p] != wantID {
			t.Errorf("bob's %s: identity changed", p)
		}
	}
	if fs.LayerSetID() != bobSet {
		t.Errorf("bob's LayerSetID changed")
	}
	afs := openStacked(t, alice, lowers)
	defer afs.Close()
	if entries, _ := os.ReadDir(alice.Upper); len(entries) != 0 {
		t.Errorf("alice's upper holds %d entries", len(entries))
	}
	if afs.LayerSetID() != aliceSet {
		t.Errorf("alice's LayerSetID changed")
	}
	lfs, err := New(Options{Lowers: lowers})
	must(t, err)
	defer lfs.Close()
	if got, want := treeOf(t, afs), treeOf(t, lfs); !maps.Equal(withoutLinks(got), withoutLinks(want)) {
		t.Errorf("alice after handing over:\n got %v\nwant her lowers %v", got, want)
	}
}

// TestCommitInto: alice's commit into bob's stack puts her layer on top of bob's lowers,
// under his upper (handedOver); a workspace on other lowers is refused, and so is the
// commit into itself.
func TestCommitInto(t *testing.T) {
	lowers, alice, bob, bobPaths := intoFixture(t)
	afs := openStacked(t, alice, lowers)
	aliceTree, aliceIDs, aliceSet := treeOf(t, afs), identities(t, afs), afs.LayerSetID()
	must(t, afs.Close())
	bfs := openStacked(t, bob, lowers)
	bobTree, bobIDs, bobSet := treeOf(t, bfs), identities(t, bfs), bfs.LayerSetID()
	must(t, bfs.Close())
	into := filepath.Join(filepath.Dir(alice.Upper), "alice-1")

	if _, err := alice.CommitWith(into, CommitOptions{Target: &bob, Lowers: lowers, TargetLowers: lowers[1:]}); err == nil || !strings.Contains(err.Error(), "other lowers") {
		t.Errorf("a target on other lowers: %v", err)
	}
	if _, err := alice.CommitWith(into, CommitOptions{Target: &alice, Lowers: lowers, TargetLowers: lowers}); err == nil {
		t.Error("a commit into itself was taken")
	}
	if _, err := os.Lstat(into); err == nil {
		t.Fatal("a refused commit left its layer")
	}
	info, err := alice.CommitWith(into, CommitOptions{Target: &bob, Lowers: lowers, TargetLowers: lowers})
	must(t, err)
	if info.Target != bob.Work || info.Layer != into {
		t.Errorf("commit info %+v", info)
	}
	handedOver(t, lowers, alice, bob, bobPaths, into, aliceTree, aliceIDs, bobTree, bobIDs, aliceSet, bobSet)
}

// TestCommitIntoKilled: a commit into another workspace killed at each step leaves both,
// once recovered (the target first, as a server may open it first), as they were or
// handed over.
func TestCommitIntoKilled(t *testing.T) {
	for _, step := range []string{"half committed", "all moved", "target journal", "stack written", "stacked", "journal renamed"} {
		t.Run(step, func(t *testing.T) {
			lowers, alice, bob, bobPaths := intoFixture(t)
			afs := openStacked(t, alice, lowers)
			aliceTree, aliceIDs, aliceSet := treeOf(t, afs), identities(t, afs), afs.LayerSetID()
			must(t, afs.Close())
			bfs := openStacked(t, bob, lowers)
			bobTree, bobIDs, bobSet := treeOf(t, bfs), identities(t, bfs), bfs.LayerSetID()
			must(t, bfs.Close())
			into := filepath.Join(filepath.Dir(alice.Upper), "alice-1")
			killed := alice
			killed.killAt = step
			func() {
				defer func() {
					if r := recover(); r != errKilled {
						t.Fatalf("commit not stopped at %q: %v", step, r)
					}
				}()
				_, _ = killed.CommitWith(into, CommitOptions{Target: &bob, Lowers: lowers, TargetLowers: lowers})
			}()
			must(t, bob.Recover())
			must(t, alice.Recover())
			for _, ws := range []Workspace{alice, bob} {
				for _, n := range []string{commitDirName, commitDoneName, stackFile + ".tmp"} {
					if _, err := os.Lstat(filepath.Join(ws.Work, n)); err == nil {
						t.Errorf("%s is left after recovery", filepath.Join(ws.Work, n))
					}
				}
			}
			if step == "stacked" || step == "journal renamed" {
				handedOver(t, lowers, alice, bob, bobPaths, into, aliceTree, aliceIDs, bobTree, bobIDs, aliceSet, bobSet)
				return
			}
			if _, err := os.Lstat(into); err == nil {
				t.Errorf("%s left after taking the commit back", into)
			}
			for _, c := range []struct {
				ws        Workspace
				tree, ids map[string]string
			}{{alice, aliceTree, aliceIDs}, {bob, bobTree, bobIDs}} {
				fs := openStacked(t, c.ws, lowers)
				if got := treeOf(t, fs); !maps.Equal(got, c.tree) {
					t.Errorf("%s killed at %q:\n got %v\nwant %v", c.ws.Upper, step, got, c.tree)
				}
				if got := identities(t, fs); !maps.Equal(got, c.ids) {
					t.Errorf("%s killed at %q: identities changed", c.ws.Upper, step)
				}
				must(t, fs.Close())
			}
		})
	}
}

// TestCommitFlattenLowersElsewhere: with the lowers on another filesystem than the upper
// (a tmpfs), a plain commit and then a flattened one: the union opens after each (the
// upper root's origin names the new top layer with its filesystem's uuid); the flattened
// layer (on the upper's filesystem) holds copies of objects of the lowers' filesystem,
// which keep their identities (whose filesystem index is the lowers'), the directory
// handles still lead to them (FindDir through the former lowers), and the LayerSetID
// stays.
func TestCommitFlattenLowersElsewhere(t *testing.T) {
	shm, err := os.MkdirTemp("/dev/shm", "ovlnfs-flatten-")
	if err != nil {
		t.Skipf("no /dev/shm: %v", err)
	}
	defer os.RemoveAll(shm)
	root := t.TempDir()
	var a, b unix.Stat_t
	must(t, unix.Stat(shm, &a))
	must(t, unix.Stat(root, &b))
	if a.Dev == b.Dev {
		if os.Getenv("CI") != "" {
			t.Fatal("/dev/shm and the test's temporary directory are one filesystem")
		}
		t.Skip("/dev/shm and the test's temporary directory are one filesystem")
	}
	lower := filepath.Join(shm, "lower")
	for p, data := range map[string]string{"a": "a", "d/x": "x", "d/e/y": "y", "gone/z": "z", "ren/r": "r"} {
		must(t, os.MkdirAll(filepath.Dir(filepath.Join(lower, p)), 0o755))
		must(t, os.WriteFile(filepath.Join(lower, p), []byte(data), 0o644))
	}
	ws := Workspace{Upper: filepath.Join(root, "upper"), Work: filepath.Join(root, "work")}
	must(t, os.MkdirAll(ws.Upper, 0o755))
	must(t, os.MkdirAll(ws.Work, 0o755))
	lowers := []string{lower}
	fs := openStacked(t, ws, lowers)
	f, err := fs.OpenFile("d/x", os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
	f.Write([]byte(" more"))
	f.Close()
	must(t, fs.Remove("gone/z"))
	must(t, fs.Remove("gone"))
	must(t, fs.Rename("ren", "moved"))
	must(t, fs.MkdirAll("new/sub", 0o755))
	// A plain commit first: the layer on the upper's filesystem over the tmpfs lower (the
	// upper root's origin then names it, with its filesystem's uuid).
	setID := fs.LayerSetID()
	must(t, fs.Close())
	_, err = ws.Commit(filepath.Join(root, "layer-1"))
	must(t, err)
	fs = openStacked(t, ws, lowers)
	if fs.LayerSetID() != setID {
		t.Errorf("LayerSetID %08x after the plain commit, %08x before", fs.LayerSetID(), setID)
	}
	must(t, fs.MkdirAll("new/sub2", 0o755))
	tree, ids := treeOf(t, fs), identities(t, fs)
	_, err = ws.StageFlatten(fs)
	must(t, err)
	must(t, fs.Close())
	into := filepath.Join(root, "flat")
	_, err = ws.CommitWith(into, CommitOptions{Flatten: true})
	must(t, err)
	fs = openStacked(t, ws, lowers)
	defer fs.Close()
	wantKept(t, fs, "flattened commit", tree, ids, setID)
	for _, p := range []string{"d", "d/e", "moved", "new/sub"} {
		id, err := fs.Identify(p)
		must(t, err)
		if where, err := fs.FindDir(id.ID); err != nil || where != p && p != "moved" {
			t.Errorf("FindDir of %s: %q %v", p, where, err)
		}
	}
	if id, err := fs.Identify("d/e"); err != nil || id.ID.FS == 0 {
		t.Errorf("d/e (copied from the tmpfs lower) has filesystem index %d, want the lowers' (%v)", id.ID.FS, err)
	}
}
