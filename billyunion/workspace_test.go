package billyunion

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
)

// treeOf is what a union shows: each path's type, mode, content or link target, and a
// regular file's link count.
func treeOf(t *testing.T, fs *FS) map[string]string {
	t.Helper()
	var paths []string
	walkPaths(fs, "", &paths)
	out := map[string]string{}
	for _, p := range paths {
		fi, err := fs.Lstat(p)
		if err != nil {
			t.Fatalf("lstat %s: %v", p, err)
		}
		desc := fi.Mode().String()
		switch {
		case fi.Mode().IsRegular():
			desc += fmt.Sprintf(" %q nlink=%d", readWhole(t, fs, p), fi.Sys().(*syscall.Stat_t).Nlink)
		case fi.Mode()&os.ModeSymlink != 0:
			target, _ := fs.Readlink(p)
			desc += " -> " + target
		}
		out[p] = desc
	}
	return out
}

func openWorkspace(t *testing.T, lowers []string, upper, work string) *FS {
	t.Helper()
	fs, err := New(Options{Lowers: lowers, Upper: upper, Work: work})
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

// TestSnapshotAndReset: a snapshot taken, more changes made, the workspace reset to the
// snapshot shows the tree of the snapshot (hard links through the index included), reset
// to the lowers shows the lowers alone (an empty diff), and a union with index=on opens
// each time (the upper root keeps its origin).
func TestSnapshotAndReset(t *testing.T) {
	lowers, upper, work := diffFixture(t)
	ws := Workspace{Upper: upper, Work: work}
	fs := openWorkspace(t, lowers, upper, work)
	must(t, fs.Link("linked", "linked-again"))
	randomChanges(fs, randFor(1), 40)
	atSnapshot := treeOf(t, fs)
	must(t, fs.Close())

	info, err := ws.Snapshot("s1")
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "s1" || info.Taken.IsZero() {
		t.Errorf("snapshot info %+v", info)
	}
	if _, err := ws.Snapshot("s1"); !errors.Is(err, os.ErrExist) {
		t.Errorf("a second snapshot s1: %v, want EEXIST", err)
	}
	if _, err := ws.Snapshot("../x"); err == nil {
		t.Error("a snapshot name with a slash was taken")
	}

	fs = openWorkspace(t, lowers, upper, work)
	randomChanges(fs, randFor(2), 40)
	if slices.Equal(slices.Sorted(maps.Keys(treeOf(t, fs))), slices.Sorted(maps.Keys(atSnapshot))) {
		t.Log("the later changes kept the same paths")
	}
	must(t, fs.Close())

	must(t, ws.Reset("s1"))
	fs = openWorkspace(t, lowers, upper, work)
	if got := treeOf(t, fs); !maps.Equal(got, atSnapshot) {
		t.Errorf("after reset to s1:\n got %v\nwant %v", got, atSnapshot)
	}
	must(t, fs.Close())

	must(t, ws.Reset(""))
	if d, err := Diff(DiffOptions{Lowers: lowers, Upper: upper}); err != nil || len(d) != 0 {
		t.Errorf("diff after reset to the lowers: %v %v", diffStrings(d), err)
	}
	fs = openWorkspace(t, lowers, upper, work)
	base, err := New(Options{Lowers: lowers})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := treeOf(t, fs), treeOf(t, base); !maps.Equal(got, want) {
		t.Errorf("after reset to the lowers:\n got %v\nwant %v", got, want)
	}
	base.Close()
	must(t, fs.Close())

	list, err := ws.Snapshots()
	if err != nil || len(list) != 1 || list[0].Name != "s1" {
		t.Errorf("snapshots: %+v %v", list, err)
	}
	must(t, ws.RemoveSnapshot("s1"))
	if list, _ := ws.Snapshots(); len(list) != 0 {
		t.Errorf("after rm: %+v", list)
	}
	if err := ws.Reset("s1"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("reset to a removed snapshot: %v", err)
	}
	for _, leftover := range []string{resetDirName, filepath.Join(snapshotsDirName, ".tmp-s1")} {
		if _, err := os.Lstat(filepath.Join(work, leftover)); err == nil {
			t.Errorf("%s left in the workdir", leftover)
		}
	}
}

// TestResetKilled: a reset killed at each of its steps leaves, once recovered, the old
// workspace (before the swap) or the new one (from the swap on), never a mix, and a union
// opens on it.
func TestResetKilled(t *testing.T) {
	backward := map[string]bool{"prepared": true, "half moved out": true}
	for i, step := range []string{"prepared", "half moved out", "all out", "half moved in", "index swapped", "finished"} {
		t.Run(step, func(t *testing.T) {
			lowers, upper, work := diffFixture(t)
			fs := openWorkspace(t, lowers, upper, work)
			must(t, fs.Link("linked", "linked-again"))
			randomChanges(fs, randFor(uint64(10+i)), 40)
			after := treeOf(t, fs) // what a reset to the snapshot must show
			must(t, fs.Close())
			ws := Workspace{Upper: upper, Work: work}
			if _, err := ws.Snapshot("s"); err != nil {
				t.Fatal(err)
			}
			fs = openWorkspace(t, lowers, upper, work)
			randomChanges(fs, randFor(uint64(20+i)), 40)
			before := treeOf(t, fs)
			must(t, fs.Close())

			killed := ws
			killed.killAt = step
			func() {
				defer func() {
					if r := recover(); r != errKilled {
						t.Fatalf("reset was not stopped at %q: %v", step, r)
					}
				}()
				_ = killed.Reset("s")
			}()
			if err := ws.Recover(); err != nil {
				t.Fatalf("recover: %v", err)
			}
			fs = openWorkspace(t, lowers, upper, work)
			got := treeOf(t, fs)
			must(t, fs.Close())
			want, name := after, "the snapshot's"
			if backward[step] {
				want, name = before, "the old"
			}
			if !maps.Equal(got, want) {
				t.Errorf("killed at %q: the tree is not %s:\n got %v\nwant %v", step, name, got, want)
			}
			if _, err := os.Lstat(filepath.Join(work, resetDirName)); err == nil {
				t.Errorf("%s left after recovery", resetDirName)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func randFor(seed uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, 11)) }
