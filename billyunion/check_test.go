package billyunion

import (
	"os"
	"path/filepath"
	"slices"
	"sort"
	"testing"

	"golang.org/x/sys/unix"
)

// TestCheckFindsAndRepairs: each inconsistency Check knows, made by hand in a workspace
// the union wrote, is found; --repair repairs what it can and a second check finds only
// what lies in a lower; the union opens on the repaired workspace and shows what it
// showed.
func TestCheckFindsAndRepairs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: whiteouts are 0/0 devices and the xattrs trusted ones")
	}
	lowers, upper, work := diffFixture(t)
	fs := openWorkspace(t, lowers, upper, work)
	f, err := fs.OpenFile("a", os.O_WRONLY|os.O_APPEND, 0) // copied up, with an origin
	must(t, err)
	f.Write([]byte("+"))
	f.Close()
	must(t, fs.Remove("b"))       // a whiteout
	must(t, fs.Rename("s", "s2")) // a redirect
	must(t, fs.Mkdir("s2/own", 0o755))
	must(t, fs.Close())
	l1, l2 := lowers[0], lowers[1]
	// Behind the union's back: the lower objects those point to go away.
	must(t, os.Remove(filepath.Join(l2, "a")))
	must(t, os.Remove(filepath.Join(l1, "b")))
	must(t, os.RemoveAll(filepath.Join(l1, "s")))
	// A lower whiteout of nothing, and leftovers in the workdir.
	must(t, unix.Mknod(filepath.Join(l1, "ghost"), unix.S_IFCHR, 0))
	must(t, os.WriteFile(filepath.Join(work, "work", "#junk"), nil, 0o600))
	must(t, os.WriteFile(filepath.Join(work, "index", "#tmp"), nil, 0o600))
	must(t, os.MkdirAll(filepath.Join(work, snapshotsDirName, ".tmp-half"), 0o700))
	must(t, os.MkdirAll(filepath.Join(work, resetDirName), 0o700))
	must(t, os.MkdirAll(filepath.Join(work, commitDirName), 0o700)) // no journal in it yet: taken back

	kinds := func(fs []Finding) []string {
		var out []string
		for _, f := range fs {
			out = append(out, f.Kind+" "+filepath.Base(f.Where))
		}
		sort.Strings(out)
		return out
	}
	opts := CheckOptions{Lowers: lowers, Upper: upper, Work: work}
	got, err := Check(opts)
	if err != nil {
		t.Fatal(err)
	}
	// s2's own origin (the lower s) is gone too, and so is what the whiteout the rename
	// left at s hid.
	want := []string{"commit-interrupted " + commitDirName, "index-stale #tmp", "lower-whiteout-useless ghost",
		"origin-dangling a", "origin-dangling s2", "redirect-dangling s2", "reset-interrupted " + resetDirName, "snapshot-partial .tmp-half", "whiteout-useless b",
		"whiteout-useless s", "work-leftover #junk"}
	if !slices.Equal(kinds(got), want) {
		t.Errorf("check:\n got %q\nwant %q", kinds(got), want)
	}
	for _, f := range got {
		if f.Repaired {
			t.Errorf("repaired without --repair: %+v", f)
		}
	}
	opts.Repair = true
	got, err = Check(opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range got {
		if f.Repaired != (f.Kind != "lower-whiteout-useless") {
			t.Errorf("repair: %+v", f)
		}
	}
	opts.Repair = false
	if got, err := Check(opts); err != nil || !slices.Equal(kinds(got), []string{"lower-whiteout-useless ghost"}) {
		t.Errorf("after the repair: %q %v", kinds(got), err)
	}
	fs = openWorkspace(t, lowers, upper, work)
	defer fs.Close()
	infos, err := fs.ReadDir("s2")
	if err != nil || len(infos) != 1 || infos[0].Name() != "own" {
		t.Errorf("s2 after the repair: %v %v", infos, err)
	}
	if data := readWhole(t, fs, "a"); string(data) != "a in l2+" {
		t.Errorf("a after the repair: %q", data)
	}
	if _, err := fs.Lstat("b"); err == nil {
		t.Error("b shows after the repair")
	}
}
