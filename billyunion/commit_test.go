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
)

// committedFixture is a workspace the union changed in every way a commit must carry:
// new files and directories, a copied-up lower file, a whiteout, a renamed lower
// directory (a redirect), an opaque directory, links of a lower file (the index).
func committedFixture(t *testing.T) (lowers []string, upper, work string) {
	t.Helper()
	lowers, upper, work = diffFixture(t)
	fs := openWorkspace(t, lowers, upper, work)
	must(t, fs.Link("linked", "linked-again"))
	randomChanges(fs, randFor(5), 50)
	f, err := fs.OpenFile("made", os.O_CREATE|os.O_WRONLY, 0o644)
	must(t, err)
	f.Write([]byte("made in the upper"))
	f.Close()
	must(t, fs.Close())
	return lowers, upper, work
}

// identities is every path's ObjectID in the union.
func identities(t *testing.T, fs *FS) map[string]string {
	t.Helper()
	var paths []string
	walkPaths(fs, "", &paths)
	out := map[string]string{"": ""}
	for _, p := range append(paths, "") {
		id, err := fs.Identify(p)
		if err != nil {
			t.Fatalf("identify %s: %v", p, err)
		}
		out[p] = id.ID.Key()
	}
	return out
}

// wantKept checks that fs, after what (a commit), shows tree, gives every path of ids its
// ObjectID and has the LayerSetID setID, as the union before it did.
func wantKept(t *testing.T, fs *FS, what string, tree, ids map[string]string, setID uint32) {
	t.Helper()
	if got := treeOf(t, fs); !maps.Equal(got, tree) {
		t.Errorf("after the %s:\n got %v\nwant %v", what, got, tree)
	}
	got := identities(t, fs)
	for p, id := range ids {
		if got[p] != id {
			t.Errorf("%s changed identity across the %s", p, what)
		}
	}
	if fs.LayerSetID() != setID {
		t.Errorf("LayerSetID %08x after the %s, %08x before", fs.LayerSetID(), what, setID)
	}
}

// TestCommit: a commit moves the upper into a new lower layer; the union over it (with
// an empty upper) shows the same tree, every object with the same identity (so the same
// file handle), under the same LayerSetID; the kernel overlay mounts the new layer under
// the old ones and shows the same tree.
func TestCommit(t *testing.T) {
	lowers, upper, work := committedFixture(t)
	fs := openWorkspace(t, lowers, upper, work)
	tree, ids, setID := treeOf(t, fs), identities(t, fs), fs.LayerSetID()
	must(t, fs.Close())

	var last [2]int
	ws := Workspace{Upper: upper, Work: work, Progress: func(done, total int) { last = [2]int{done, total} }}
	into := filepath.Join(filepath.Dir(upper), "layer-1")
	info, err := ws.Commit(into)
	if err != nil {
		t.Fatal(err)
	}
	if info.Layer != into || info.Entries == 0 {
		t.Errorf("commit info %+v", info)
	}
	if last != [2]int{info.Entries, info.Entries} {
		t.Errorf("the last progress report %v, want all %d entries", last, info.Entries)
	}
	stack, err := ws.Committed()
	if err != nil || len(stack) != 1 || stack[0] != into {
		t.Fatalf("committed layers %v %v", stack, err)
	}
	if entries, _ := os.ReadDir(upper); len(entries) != 0 {
		t.Errorf("the upper holds %d entries after the commit", len(entries))
	}
	fs, err = New(Options{Lowers: append([]string{into}, lowers...), Upper: upper, Work: work, CommittedLowers: 1})
	if err != nil {
		t.Fatal(err)
	}
	wantKept(t, fs, "commit", tree, ids, setID)
	// The workspace goes on: a change after the commit lands in the empty upper, and a
	// committed file written again (copied up from the new layer) keeps its identity.
	f, err := fs.OpenFile("after", os.O_CREATE|os.O_WRONLY, 0o644)
	must(t, err)
	f.Close()
	f, err = fs.OpenFile("made", os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
	f.Write([]byte(" and after"))
	f.Close()
	if id, err := fs.Identify("made"); err != nil || id.ID.Key() != ids["made"] {
		t.Errorf("made changed identity when copied up after the commit: %v", err)
	}
	must(t, fs.Close())
	d, err := Diff(DiffOptions{Lowers: append([]string{into}, lowers...), Upper: upper})
	if got := diffStrings(d); err != nil || !slices.Equal(got, []string{"A /after", "C /made"}) {
		t.Errorf("diff after the commit: %v %v", got, err)
	}
	must(t, os.Remove(filepath.Join(upper, "after")))
	must(t, os.Remove(filepath.Join(upper, "made")))

	if os.Geteuid() != 0 {
		t.Log("not root: the kernel overlay is not tried")
		return
	}
	kwork, mnt := filepath.Join(t.TempDir(), "w"), filepath.Join(t.TempDir(), "m")
	must(t, os.MkdirAll(kwork, 0o755))
	must(t, os.MkdirAll(mnt, 0o755))
	// The kernel's own workdir must be on the upper's filesystem: beside the upper.
	kwork = filepath.Join(filepath.Dir(upper), "kwork")
	must(t, os.MkdirAll(kwork, 0o755))
	opts := "lowerdir=" + strings.Join(append([]string{into}, lowers...), ":") + ",upperdir=" + upper + ",workdir=" + kwork + ",redirect_dir=on,index=off"
	if out, err := exec.Command("mount", "-t", "overlay", "overlay", "-o", opts, mnt).CombinedOutput(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("mount the kernel overlay: %v %s", err, out)
		}
		t.Skipf("no kernel overlay: %v %s", err, out)
	}
	defer exec.Command("umount", mnt).Run()
	// The union's tree without link counts, which the index (off for the kernel here)
	// makes differ.
	kernel, want := plainTree(t, mnt), withoutLinks(tree)
	if !maps.Equal(kernel, want) {
		t.Errorf("the kernel overlay of the committed layer:\n got %v\nwant %v", kernel, want)
	}
}

// TestCommitKilled: a commit killed at each of its steps leaves, once recovered, the
// workspace showing the same tree, with the new layer stacked (from the stack file's
// update on) or not there at all (before).
func TestCommitKilled(t *testing.T) {
	for _, step := range []string{"half committed", "all moved", "stack written", "stacked", "journal renamed"} {
		t.Run(step, func(t *testing.T) {
			lowers, upper, work := committedFixture(t)
			fs := openWorkspace(t, lowers, upper, work)
			tree := treeOf(t, fs)
			must(t, fs.Close())
			into := filepath.Join(filepath.Dir(upper), "layer-1")
			killed := Workspace{Upper: upper, Work: work, killAt: step}
			func() {
				defer func() {
					if r := recover(); r != errKilled {
						t.Fatalf("commit not stopped at %q: %v", step, r)
					}
				}()
				_, _ = killed.Commit(into)
			}()
			ws := Workspace{Upper: upper, Work: work}
			must(t, ws.Recover())
			stack, err := ws.Committed()
			must(t, err)
			lw := lowers
			if step == "stacked" || step == "journal renamed" {
				if len(stack) != 1 || stack[0] != into {
					t.Fatalf("killed after stacking: stack %v", stack)
				}
				lw = append([]string{into}, lowers...)
			} else {
				if len(stack) != 0 {
					t.Fatalf("killed before stacking: stack %v", stack)
				}
				if _, err := os.Lstat(into); err == nil {
					t.Errorf("%s left after taking the commit back", into)
				}
			}
			fs, err = New(Options{Lowers: lw, Upper: upper, Work: work, CommittedLowers: len(stack)})
			if err != nil {
				t.Fatal(err)
			}
			defer fs.Close()
			if got := treeOf(t, fs); !maps.Equal(got, tree) {
				t.Errorf("killed at %q:\n got %v\nwant %v", step, got, tree)
			}
			for _, n := range []string{commitDirName, commitDoneName, stackFile + ".tmp"} {
				if _, err := os.Lstat(filepath.Join(work, n)); err == nil {
					t.Errorf("%s is left after recovery", n)
				}
			}
		})
	}
}

// TestCommitKeepsIndexedNames: a lower file with two names, written through one (a copy-up
// through the index), shows the write under both; after CoverIndexedAliases and a commit,
// which empties the index, both names are still one file with the write, the same
// identity and two links.
func TestCommitKeepsIndexedNames(t *testing.T) {
	lowers, upper, work := diffFixture(t) // l2/linked and l2/d/linked2 are one file
	fs := openWorkspace(t, lowers, upper, work)
	f, err := fs.OpenFile("linked", os.O_WRONLY|os.O_APPEND, 0)
	must(t, err)
	f.Write([]byte(" and more"))
	f.Close()
	if got := string(readWhole(t, fs, "d/linked2")); got != "two names and more" {
		t.Fatalf("the other name before the commit: %q", got)
	}
	ids := identities(t, fs)
	n, err := fs.CoverIndexedAliases()
	if err != nil || n != 1 {
		t.Fatalf("CoverIndexedAliases: %d, %v; want 1 name", n, err)
	}
	if n, err := fs.CoverIndexedAliases(); err != nil || n != 0 {
		t.Errorf("a second CoverIndexedAliases covered %d, %v", n, err)
	}
	must(t, fs.Close())
	into := filepath.Join(filepath.Dir(upper), "layer-1")
	if _, err := (Workspace{Upper: upper, Work: work}).Commit(into); err != nil {
		t.Fatal(err)
	}
	fs, err = New(Options{Lowers: append([]string{into}, lowers...), Upper: upper, Work: work, CommittedLowers: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	for _, p := range []string{"linked", "d/linked2"} {
		if got := string(readWhole(t, fs, p)); got != "two names and more" {
			t.Errorf("%s after the commit: %q", p, got)
		}
		fi, err := fs.Lstat(p)
		must(t, err)
		if nl := fi.Sys().(*syscall.Stat_t).Nlink; nl != 2 {
			t.Errorf("%s: %d links after the commit, want 2", p, nl)
		}
		if id, err := fs.Identify(p); err != nil || id.ID.Key() != ids[p] {
			t.Errorf("%s changed identity across the commit (%v)", p, err)
		}
	}
}
