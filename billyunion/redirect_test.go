package billyunion

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// upperRedirectOf reads the redirect xattr of p in the upper layer ("" for none).
func upperRedirectOf(t *testing.T, ls *layerSet, p string) string {
	t.Helper()
	buf := make([]byte, 1024)
	n, err := unix.Lgetxattr(ls.path("u", p), "trusted.overlay.redirect", buf)
	if err == unix.ENODATA {
		return ""
	}
	if err != nil {
		t.Fatalf("redirect of %s: %v", p, err)
	}
	return string(buf[:n])
}

func isUpperWhiteout(ls *layerSet, p string) bool {
	st, err := os.Lstat(ls.path("u", p))
	return err == nil && st.Mode()&os.ModeCharDevice != 0 && st.Sys().(*syscall.Stat_t).Rdev == 0
}

// TestRedirectFormat: the values the kernel writes (checked against a 6.18 kernel with
// redirect_dir=on doing the same renames): the old name within a parent, the old path from
// the root across parents, a kept absolute one, and the old place spelled through an
// ancestor's own redirect; the old name whited out; the tree copied nowhere.
func TestRedirectFormat(t *testing.T) {
	requireRoot(t)
	ls := newLayerSet(t, 2)
	ls.dir("l1", "a/s")
	ls.dir("l2", "a/t")
	ls.file("l1", "a/f", "f")
	ls.file("l1", "p/q/g", "g")
	ls.dir("l1", "x")
	ls.dir("l1", "y/z")
	fs := ls.open()
	for _, mv := range [][2]string{{"a", "b"}, {"p/q", "x/q2"}, {"b", "n/b2"}, {"x/q2", "x/q3"}, {"x", "x4"}, {"y", "y2"}, {"y2/z", "z2"}} {
		if mv[0] == "b" {
			noErr(t, "mkdir n", fs.Mkdir("n", 0o755))
		}
		noErr(t, "rename "+mv[0]+" "+mv[1], fs.Rename(mv[0], mv[1]))
	}
	for p, want := range map[string]string{"n/b2": "/a", "x4": "x", "x4/q3": "/p/q", "y2": "y", "z2": "/y/z", "n": ""} {
		if got := upperRedirectOf(t, ls, p); got != want {
			t.Errorf("redirect of %s = %q, want %q", p, got, want)
		}
	}
	for _, p := range []string{"a", "p/q", "x", "y", "y2/z"} {
		if !isUpperWhiteout(ls, p) {
			t.Errorf("%s: no whiteout left at the old name", p)
		}
	}
	for p, want := range map[string]string{"": "n p x4 y2 z2", "n/b2": "f s t", "x4/q3": "g", "p": "", "y2": ""} {
		if got := names(t, fs, p); got != want {
			t.Errorf("listing of %q = %q, want %q", p, got, want)
		}
	}
	if got := readAll(t, fs, "n/b2/f"); got != "f" {
		t.Errorf("n/b2/f reads %q", got)
	}
	// Only the directories themselves were copied up.
	for _, p := range []string{"n/b2", "x4/q3", "z2"} {
		if left, _ := os.ReadDir(ls.path("u", p)); len(left) != 0 {
			t.Errorf("upper %s holds %d entries: the tree was copied", p, len(left))
		}
	}
	// Back again: the kept relative redirect, the whiteout replaced.
	noErr(t, "rename y2 y", fs.Rename("y2", "y"))
	if got := upperRedirectOf(t, ls, "y"); got != "y" {
		t.Errorf("renamed back: redirect %q", got)
	}
	if _, err := os.Lstat(ls.path("u", "y2")); !os.IsNotExist(err) {
		t.Errorf("renamed back: something left at y2: %v", err)
	}
	// Removing a redirected directory: its lower entries count until whited out.
	wantErrno(t, "rmdir of a redirected non-empty dir", fs.Rmdir("x4/q3"), syscall.ENOTEMPTY)
	noErr(t, "unlink", fs.Unlink("x4/q3/g"))
	noErr(t, "rmdir", fs.Rmdir("x4/q3"))
	if got := names(t, fs, "x4"); got != "" {
		t.Errorf("x4 after rmdir shows %q", got)
	}
	left, _ := os.ReadDir(ls.path("w", "work"))
	if len(left) != 0 {
		t.Fatalf("work dir not clean: %v", left)
	}
}

// TestRedirectKeepsIdentity: a renamed lower or merged directory, and what is in it, keep
// their inode numbers and ObjectIDs, and the old IDs lead to the new paths, also after a
// restart (a new union on the same layers).
func TestRedirectKeepsIdentity(t *testing.T) {
	requireRoot(t)
	ls := newLayerSet(t, 2)
	ls.file("l1", "low/f", "f")
	ls.file("l2", "low/deep/g", "g")
	ls.file("l1", "merged/h", "h")
	ls.dir("u", "merged")
	fs := ls.open()
	paths := []string{"low", "low/f", "low/deep", "low/deep/g", "merged", "merged/h"}
	before := map[string]Identity{}
	for _, p := range paths {
		id, err := fs.Identify(p)
		noErr(t, "identify "+p, err)
		before[p] = id
	}
	noErr(t, "rename low", fs.Rename("low", "low2"))
	noErr(t, "mkdir sub", fs.Mkdir("sub", 0o755))
	noErr(t, "rename merged", fs.Rename("merged", "sub/m"))
	noErr(t, "rename low2/deep", fs.Rename("low2/deep", "sub/deep2"))
	now := map[string]string{"low": "low2", "low/f": "low2/f", "low/deep": "sub/deep2", "low/deep/g": "sub/deep2/g", "merged": "sub/m", "merged/h": "sub/m/h"}
	check := func(fs *FS, stage string) {
		t.Helper()
		for _, p := range paths {
			id, err := fs.Identify(now[p])
			if err != nil {
				t.Fatalf("%s: identify %s: %v", stage, now[p], err)
			}
			if id.Ino != before[p].Ino || !id.ID.Equal(before[p].ID) {
				t.Errorf("%s: %s (was %s): ino %d id %x, was ino %d id %x", stage, now[p], p, id.Ino, id.ID.Handle, before[p].Ino, before[p].ID.Handle)
			}
			var found string
			if id.Dir {
				found, err = fs.FindDir(before[p].ID)
				if err != nil || !fs.isAt(found, before[p].ID) {
					found, err = fs.FindMoved(before[p].ID)
				}
			} else {
				found, err = fs.FindMoved(before[p].ID)
			}
			if err != nil || found != now[p] {
				t.Errorf("%s: the ID of %s leads to %q (%v), want %q", stage, p, found, err, now[p])
			}
		}
	}
	check(fs, "after the renames")
	fs.Close()
	check(ls.open(), "after a restart")
	// The moves index lost: rebuilt from the redirects in the upper.
	noErr(t, "remove the index", os.RemoveAll(ls.path("w", "ovlnfs-index")))
	check(ls.open(), "after rebuilding the index")
}

// TestRedirectModes: follow reads redirects but makes none (EXDEV), nofollow answers EPERM
// for a name holding one, off is follow, the user.overlay. prefix allows only nofollow.
func TestRedirectModes(t *testing.T) {
	requireRoot(t)
	ls := newLayerSet(t, 1)
	ls.file("l1", "a/f", "f")
	ls.file("l1", "c/g", "g")
	fs := ls.open()
	noErr(t, "rename with redirect_dir=on", fs.Rename("a", "b"))
	fs.Close()
	for _, mode := range []string{"follow", "off"} {
		fs := ls.openWith(Options{RedirectDir: mode})
		if got := readAll(t, fs, "b/f"); got != "f" {
			t.Errorf("%s: b/f reads %q", mode, got)
		}
		wantErrno(t, mode+": rename of a lower dir", fs.Rename("c", "d"), syscall.EXDEV)
		fs.Close()
	}
	fs = ls.openWith(Options{RedirectDir: "nofollow"})
	_, err := fs.Lstat("b")
	wantErrno(t, "nofollow: a redirected dir", err, syscall.EPERM)
	_, err = fs.Lstat("b/f")
	wantErrno(t, "nofollow: below a redirected dir", err, syscall.EPERM)
	wantErrno(t, "nofollow: rename of a lower dir", fs.Rename("c", "d"), syscall.EXDEV)
	if got := readAll(t, fs, "c/g"); got != "g" {
		t.Errorf("nofollow: c/g reads %q", got)
	}
	fs.Close()
	for _, mode := range []string{"on", "follow", "off"} {
		_, err := New(Options{Lowers: []string{ls.path("l1", "")}, XattrPrefix: "user.overlay.", RedirectDir: mode})
		if !errors.Is(err, syscall.EINVAL) {
			t.Errorf("user.overlay. with redirect_dir=%s: %v, want EINVAL", mode, err)
		}
	}
	_, err = New(Options{Lowers: []string{ls.path("l1", "")}, RedirectDir: "yes"})
	if !errors.Is(err, syscall.EINVAL) {
		t.Errorf("redirect_dir=yes: %v, want EINVAL", err)
	}
}

// TestMalformedRedirects: a value the kernel rejects answers EINVAL for that name (and its
// parent's listing leaves it out), one it reads as a C string is cut at the NUL, a "." or
// ".." component answers EACCES, one too long finds nothing; nothing panics. A redirect in
// the bottom layer is never read, as in the kernel.
func TestMalformedRedirects(t *testing.T) {
	requireRoot(t)
	cases := []struct {
		value string
		want  error // from Lstat of the directory holding it
		merge bool  // l2/target merges in
	}{
		{"", syscall.EINVAL, false},
		{"a/b", syscall.EINVAL, false},
		{"//target", syscall.EINVAL, false},
		{"/target/", syscall.EINVAL, false},
		{"/", syscall.EINVAL, false},
		{"target\x00junk", nil, true},
		{"/target\x00/junk", nil, true},
		{"..", syscall.EACCES, false},
		{"/target/..", syscall.EACCES, false},
		{"\x00", syscall.EACCES, false},
		{strings.Repeat("t", 300), nil, false},
		{"target", nil, true},
		{"/target", nil, true},
	}
	for _, c := range cases {
		ls := newLayerSet(t, 2)
		ls.file("l2", "target/low", "low")
		ls.file("l1", "dir/top", "top")
		ls.xattr("l1", "dir", "trusted.overlay.redirect", c.value)
		fs := ls.open()
		_, err := fs.Lstat("dir")
		if !errors.Is(err, c.want) && !(c.want == nil && err == nil) {
			t.Errorf("redirect %q: lstat: %v, want %v", c.value, err, c.want)
			continue
		}
		if c.want != nil {
			if got := names(t, fs, ""); got != "target" {
				t.Errorf("redirect %q: root lists %q", c.value, got)
			}
			continue
		}
		want := "top"
		if c.merge {
			want = "low top"
		}
		if got := names(t, fs, "dir"); got != want {
			t.Errorf("redirect %q: dir lists %q, want %q", c.value, got, want)
		}
	}
	// In the bottom layer a malformed redirect is not read.
	ls := newLayerSet(t, 1)
	ls.file("l1", "dir/x", "x")
	ls.xattr("l1", "dir", "trusted.overlay.redirect", "a/b")
	if got := names(t, ls.open(), "dir"); got != "x" {
		t.Errorf("bottom-layer redirect: dir lists %q", got)
	}
}

// TestRenameHugeLowerDir: renaming a directory of 100,000 lower entries copies up the
// directory alone: as fast as renaming a small one, however big the tree.
func TestRenameHugeLowerDir(t *testing.T) {
	requireRoot(t)
	if testing.Short() {
		t.Skip("creates 100,000 files")
	}
	ls := newLayerSet(t, 1)
	const n = 100_000
	big := ls.path("l1", "big")
	noErr(t, "mkdir", os.Mkdir(big, 0o755))
	for i := 0; i < n; i++ {
		f, err := os.Create(filepath.Join(big, "f"+itoa(i)))
		noErr(t, "create", err)
		f.Close()
	}
	ls.file("l1", "small/f", "f")
	fs := ls.open()
	timeRename := func(from, to string) time.Duration {
		start := time.Now()
		noErr(t, "rename "+from, fs.Rename(from, to))
		return time.Since(start)
	}
	small, huge := timeRename("small", "small2"), timeRename("big", "big2")
	t.Logf("rename of a lower dir: %d entries %v, 1 entry %v", n, huge, small)
	if left, _ := os.ReadDir(ls.path("u", "big2")); len(left) != 0 {
		t.Fatalf("the upper big2 holds %d entries", len(left))
	}
	if huge > 50*small+200*time.Millisecond {
		t.Errorf("renaming %d entries took %v, one entry %v: not O(1)", n, huge, small)
	}
	fis, err := fs.ReadDir("big2")
	noErr(t, "readdir", err)
	if len(fis) != n {
		t.Fatalf("big2 lists %d entries, want %d", len(fis), n)
	}
}

// TestFindMovedBoundedOnLoopingRecords: moves records are hints; a forged one that names
// its own directory as the parent costs a bounded number of lookups, and the true one
// beside it still leads to the object.
func TestFindMovedBoundedOnLoopingRecords(t *testing.T) {
	requireRoot(t)
	ls := newLayerSet(t, 1)
	ls.file("l1", "a/b/f", "f")
	fs := ls.open()
	ida, err := fs.Identify("a")
	noErr(t, "identify a", err)
	idf, err := fs.Identify("a/b/f")
	noErr(t, "identify a/b/f", err)
	noErr(t, "rename", fs.Rename("a", "a2"))
	noErr(t, "forge", fs.moves.add(ida.ID, Location{Parent: ida.ID, Name: "loop"}))
	start := time.Now()
	p, err := fs.FindMoved(idf.ID)
	if err != nil || p != "a2/b/f" {
		t.Errorf("FindMoved: %q, %v; want a2/b/f", p, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("FindMoved took %v", d)
	}
	noErr(t, "forge only", fs.moves.add(ida.ID, Location{Parent: ida.ID, Name: "loop"}, Location{Parent: ida.ID, Name: "loop2"},
		Location{Parent: ida.ID, Name: "loop3"}, Location{Parent: ida.ID, Name: "loop4"}))
	if p, err := fs.FindMoved(idf.ID); !errors.Is(err, syscall.ESTALE) {
		t.Errorf("FindMoved over looping records only: %q, %v; want ESTALE", p, err)
	}
}

// TestListedRedirectedDirIdentity: a listing entry is identified from the parts its lookup
// found (identifyListed); a part below a redirect is reached where the redirect put it. A
// merged directory without an origin is numbered by that part.
func TestListedRedirectedDirIdentity(t *testing.T) {
	requireRoot(t)
	ls := newLayerSet(t, 1)
	ls.file("l1", "a/x", "x")
	ls.dir("u", "b")
	ls.xattr("u", "b", "trusted.overlay.redirect", "a")
	ls.whiteout("u", "a")
	fs := ls.open()
	requireDirCache(t, fs)
	for attempt := 0; ; attempt++ {
		// A listing built while nothing changes in the layers (the start's own
		// events, the moves index being written, come first).
		fs.dirs.generation()
		fs.listings.ForgetAll()
		fis, err := fs.ReadDir("")
		noErr(t, "readdir", err)
		var fi *fileInfo
		for _, e := range fis {
			if e.Name() == "b" {
				fi = e.(*fileInfo)
			}
		}
		if fi == nil {
			t.Fatal("b not listed")
		}
		got, ok, err := identifyListedIn(fs, "", fi)
		noErr(t, "identifyListed", err)
		if !ok {
			if attempt < 10 {
				continue
			}
			t.Fatal("the layers never stood still for a listing")
		}
		want, err := fs.Identify("b")
		noErr(t, "identify b", err)
		if !got.ID.Equal(want.ID) || got.Ino != want.Ino {
			t.Fatalf("listed b: id %x ino %d; Identify: id %x ino %d", got.ID.Handle, got.Ino, want.ID.Handle, want.Ino)
		}
		if st, _ := os.Stat(ls.path("l1", "a")); want.Ino != st.Sys().(*syscall.Stat_t).Ino {
			t.Fatalf("b is numbered %d, not by its lower part l1/a (%d)", want.Ino, st.Sys().(*syscall.Stat_t).Ino)
		}
		return
	}
}
