package billyunion

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// diffFixture is two lower layers with a small tree, and an empty upper.
func diffFixture(t *testing.T) (lowers []string, upper, work string) {
	t.Helper()
	root := t.TempDir()
	l1, l2 := filepath.Join(root, "l1"), filepath.Join(root, "l2")
	upper, work = filepath.Join(root, "upper"), filepath.Join(root, "work")
	files := map[string]string{
		"l2/a":          "a in l2",
		"l2/d/x":        "x",
		"l2/d/y":        "y",
		"l2/d/e/z":      "z",
		"l2/m/p":        "p in l2",
		"l1/m/q":        "q in l1",
		"l1/b":          "b",
		"l1/d/w":        "w",
		"l2/keep/k":     "k",
		"l1/s/t/u":      "u",
		"l2/linked":     "two names",
		"l2/deep/1/2/3": "3",
	}
	for p, data := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Link(filepath.Join(l2, "linked"), filepath.Join(l2, "d", "linked2")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("a", filepath.Join(l1, "sym")); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{upper, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return []string{l1, l2}, upper, work
}

func diffStrings(cs []Change) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = string(c.Kind) + " " + c.Path
	}
	return out
}

// TestDiffNamedChanges: each kind of change the union makes shows as docker diff shows
// it.
func TestDiffNamedChanges(t *testing.T) {
	lowers, upper, work := diffFixture(t)
	fs, err := New(Options{Lowers: lowers, Upper: upper, Work: work})
	if err != nil {
		t.Fatal(err)
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	f, err := fs.OpenFile("new", os.O_CREATE|os.O_WRONLY, 0o644) // added
	must(err)
	f.Close()
	must(fs.MkdirAll("newdir/sub", 0o755))                // added, with what is below
	f, err = fs.OpenFile("a", os.O_WRONLY|os.O_APPEND, 0) // a lower file written: copied up
	must(err)
	_, err = f.Write([]byte("more"))
	must(err)
	f.Close()
	must(fs.Remove("b"))                            // a lower file removed: a whiteout
	must(fs.Chmod("keep/k", 0o600))                 // metadata only
	must(fs.Rename("s", "s2"))                      // a lower directory renamed: a redirect
	must(fs.Remove("deep/1/2/3"))                   // removals deep down
	must(fs.Remove("deep/1/2"))                     //
	must(fs.Link("linked", "linked3"))              // a link of a lower file
	must(fs.Setxattr("d/w", "user.x", []byte("v"))) // xattrs only
	for _, name := range []string{"p", "q"} {
		must(fs.Remove("m/" + name))
	}
	must(fs.Remove("m"))
	must(fs.Mkdir("m", 0o755)) // a merged directory replaced: opaque
	must(fs.Close())

	got, err := Diff(DiffOptions{Lowers: lowers, Upper: upper, Work: work})
	if err != nil {
		t.Fatal(err)
	}
	// d/linked2, the lower file's other name, shows the copy "linked" got through the
	// index when it was linked: changed too.
	want := []string{"C /a", "D /b", "C /d", "C /d/linked2", "C /d/w", "C /deep", "C /deep/1", "D /deep/1/2", "C /keep",
		"C /keep/k", "C /linked", "A /linked3", "C /m", "D /m/p", "D /m/q", "A /new", "A /newdir", "A /newdir/sub", "D /s",
		"A /s2", "A /s2/t", "A /s2/t/u"}
	if !slices.Equal(diffStrings(got), want) {
		t.Errorf("diff:\n got %q\nwant %q", diffStrings(got), want)
	}
	for _, c := range got {
		if c.Path == "/a" && (c.Type != "file" || c.Size != int64(len("a in l2more"))) {
			t.Errorf("/a: %+v", c)
		}
		if c.Path == "/newdir" && c.Type != "dir" {
			t.Errorf("/newdir: %+v", c)
		}
	}
	if _, err := Diff(DiffOptions{Lowers: lowers}); err == nil {
		t.Error("a diff without an upper was taken")
	}
}

// TestDiffMatchesWalk: on random trees changed by random operations through the union,
// Diff says what an independent walk says: the union and the lowers compared path by
// path, by type, attributes (ctime too: every copy-up changes it), content, link target
// and xattrs, a deleted path said once, an added directory's contents all added.
func TestDiffMatchesWalk(t *testing.T) {
	seeds := 40
	if testing.Short() {
		seeds = 10
	}
	for seed := range seeds {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			lowers, upper, work := diffFixture(t)
			fs, err := New(Options{Lowers: lowers, Upper: upper, Work: work})
			if err != nil {
				t.Fatal(err)
			}
			randomChanges(fs, rand.New(rand.NewPCG(uint64(seed), 7)), 60)
			if err := fs.Close(); err != nil {
				t.Fatal(err)
			}
			got, err := Diff(DiffOptions{Lowers: lowers, Upper: upper, Work: work})
			if err != nil {
				t.Fatal(err)
			}
			// The workspace as it is served (the index on), against the lowers.
			merged, err := New(Options{Lowers: lowers, Upper: upper, Work: work})
			if err != nil {
				t.Fatal(err)
			}
			defer merged.Close()
			base, err := New(Options{Lowers: lowers})
			if err != nil {
				t.Fatal(err)
			}
			defer base.Close()
			want := walkDiff(t, merged, base)
			if !slices.Equal(diffStrings(got), want) {
				t.Errorf("seed %d:\n diff %q\n walk %q", seed, diffStrings(got), want)
			}
		})
	}
}

// randomChanges applies n random operations to fs, on names the tree has.
func randomChanges(fs *FS, r *rand.Rand, n int) {
	for range n {
		var all []string
		walkPaths(fs, "", &all)
		pick := func() string {
			if len(all) == 0 {
				return "none"
			}
			return all[r.IntN(len(all))]
		}
		dirOf := func() string {
			for range 10 {
				p := pick()
				if fi, err := fs.Lstat(p); err == nil && fi.IsDir() {
					return p
				}
			}
			return ""
		}
		name := fmt.Sprintf("n%d", r.IntN(20))
		switch r.IntN(10) {
		case 0:
			if f, err := fs.OpenFile(path.Join(dirOf(), name), os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
				f.Write([]byte(name))
				f.Close()
			}
		case 1:
			_ = fs.Mkdir(path.Join(dirOf(), name), 0o755)
		case 2:
			if f, err := fs.OpenFile(pick(), os.O_WRONLY|os.O_APPEND, 0); err == nil {
				f.Write([]byte("+"))
				f.Close()
			}
		case 3:
			p := pick()
			if fi, err := fs.Lstat(p); err == nil && fi.IsDir() {
				removeTree(fs, p)
			} else {
				_ = fs.Remove(p)
			}
		case 4:
			_ = fs.Rename(pick(), path.Join(dirOf(), name))
		case 5:
			_ = fs.Chmod(pick(), 0o700)
		case 6:
			_ = fs.Link(pick(), path.Join(dirOf(), name))
		case 7:
			_ = fs.Symlink("target-"+name, path.Join(dirOf(), name))
		case 8:
			_ = fs.Setxattr(pick(), "user.t", []byte(name))
		case 9:
			_ = fs.Chtimes(pick(), time.Unix(1e9, 0), time.Unix(1e9, 0))
		}
	}
}

func removeTree(fs *FS, p string) {
	infos, _ := fs.ReadDir(p)
	for _, fi := range infos {
		c := path.Join(p, fi.Name())
		if fi.IsDir() {
			removeTree(fs, c)
		} else {
			_ = fs.Remove(c)
		}
	}
	_ = fs.Remove(p)
}

func walkPaths(fs *FS, p string, out *[]string) {
	infos, err := fs.ReadDir(p)
	if err != nil {
		return
	}
	for _, fi := range infos {
		c := path.Join(p, fi.Name())
		*out = append(*out, c)
		if fi.IsDir() {
			walkPaths(fs, c, out)
		}
	}
}

// walkDiff compares two unions path by path, knowing nothing of layers.
func walkDiff(t *testing.T, merged, base *FS) []string {
	t.Helper()
	var out []string
	var walk func(p string, addedAll bool)
	walk = func(p string, addedAll bool) {
		now := map[string]os.FileInfo{}
		infos, err := merged.ReadDir(p)
		if err != nil {
			t.Fatalf("ReadDir %s: %v", p, err)
		}
		for _, fi := range infos {
			now[fi.Name()] = fi
		}
		before := map[string]os.FileInfo{}
		if !addedAll {
			bi, _ := base.ReadDir(p)
			for _, fi := range bi {
				before[fi.Name()] = fi
			}
		}
		for name := range before {
			if _, ok := now[name]; !ok {
				out = append(out, "D /"+path.Join(p, name))
			}
		}
		for name, fi := range now {
			c := path.Join(p, name)
			old, existed := before[name]
			switch {
			case !existed:
				out = append(out, "A /"+c)
				if fi.IsDir() {
					walk(c, true)
				}
			case differs(t, merged, base, c, fi, old):
				out = append(out, "C /"+c)
				if fi.IsDir() {
					walk(c, !old.IsDir())
				}
			}
		}
	}
	walk("", false)
	sort.Strings(out)
	// Sorted as paths ("/a" < "/a/b" < "/a.c"), as Diff sorts.
	sort.Slice(out, func(i, j int) bool { return out[i][2:] < out[j][2:] })
	return out
}

func differs(t *testing.T, merged, base *FS, p string, a, b os.FileInfo) bool {
	sa, sb := a.Sys().(*syscall.Stat_t), b.Sys().(*syscall.Stat_t)
	if a.Mode() != b.Mode() || sa.Uid != sb.Uid || sa.Gid != sb.Gid || a.Size() != b.Size() ||
		sa.Mtim != sb.Mtim || sa.Ctim != sb.Ctim || sa.Nlink != sb.Nlink {
		return true
	}
	xa, _ := merged.Listxattr(p)
	xb, _ := base.Listxattr(p)
	if strings.Join(xa, ",") != strings.Join(xb, ",") {
		return true
	}
	switch {
	case a.Mode()&os.ModeSymlink != 0:
		ta, _ := merged.Readlink(p)
		tb, _ := base.Readlink(p)
		return ta != tb
	case a.Mode().IsRegular():
		return !bytes.Equal(readWhole(t, merged, p), readWhole(t, base, p))
	}
	return false
}

func readWhole(t *testing.T, fs *FS, p string) []byte {
	f, err := fs.Open(p)
	if err != nil {
		t.Fatalf("open %s: %v", p, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return b
}
