package billyunion

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// workspaces is n unions (uppers u0.., works w0..) sharing one Shared over lowers l1..
type workspaces struct {
	ls     *layerSet
	shared *Shared
	fs     []*FS
}

func newWorkspaces(t *testing.T, lowers int) *workspaces {
	t.Helper()
	requireRoot(t)
	return &workspaces{ls: newLayerSet(t, lowers)}
}

func (w *workspaces) lowerPaths() []string {
	var p []string
	for _, n := range w.ls.lowerNames() {
		p = append(p, filepath.Join(w.ls.root, n))
	}
	return p
}

// open makes the Shared (once the lowers are filled) and n unions on it, with opts.
func (w *workspaces) open(n int, opts Options) {
	t := w.ls.t
	t.Helper()
	s, err := NewShared(SharedOptions{Lowers: w.lowerPaths(), XattrPrefix: "trusted.overlay."})
	if err != nil {
		t.Fatal(err)
	}
	w.shared = s
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("closing the Shared: %v", err)
		}
	})
	for i := 0; i < n; i++ {
		w.fs = append(w.fs, w.openOne(i, opts))
	}
}

func (w *workspaces) openOne(i int, opts Options) *FS {
	t := w.ls.t
	t.Helper()
	up, wk := w.ls.path(fmt.Sprintf("u%d", i), ""), w.ls.path(fmt.Sprintf("w%d", i), "")
	for _, d := range []string{up, wk} {
		noErr(t, "mkdir", os.MkdirAll(d, 0o755))
	}
	opts.Upper, opts.Work, opts.XattrPrefix, opts.Shared = up, wk, "trusted.overlay.", w.shared
	fs, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() }) // before the Shared's (cleanups run last first)
	return fs
}

func wantNames(t *testing.T, fs *FS, who, p, want string) {
	t.Helper()
	if got := names(t, fs, p); got != want {
		t.Fatalf("%s lists %s as %q, want %q", who, p, got, want)
	}
}

// One workspace's creates, removals, renames and copy-ups never show in another's view
// or upper, and a lower-only directory both list is built once.
func TestSharedWorkspacesIsolated(t *testing.T) {
	w := newWorkspaces(t, 2)
	w.ls.file("l1", "d/a", "a1\n")
	w.ls.file("l1", "d/b", "b1\n")
	w.ls.file("l2", "d/c", "c2\n")
	w.ls.file("l2", "e/f", "f2\n")
	w.ls.file("l1", "d/sub/x", "x\n")
	w.open(3, Options{})
	a, b := w.fs[0], w.fs[1]

	for i, fs := range w.fs {
		wantNames(t, fs, fmt.Sprint("workspace ", i), "/d", "a b c sub")
	}
	st := w.shared.ListingStats()
	if st.Misses != 1 || st.Hits != 2 {
		t.Fatalf("three workspaces listing /d: shared cache %+v, want one build and two hits", st)
	}
	if own := a.ListingStats(); own.Misses != 0 {
		t.Fatalf("a built a listing of its own for a lower-only directory: %+v", own)
	}
	if a.SharedHandlePaths() == nil || a.SharedHandlePaths() != b.SharedHandlePaths() {
		t.Fatal("the workspaces do not share a handle path cache")
	}

	noErr(t, "a creates d/new", putFile(a, "/d/new", "new\n"))
	noErr(t, "a removes d/a", a.Remove("/d/a"))
	noErr(t, "a renames d/b to e/b2", a.Rename("/d/b", "/e/b2"))
	noErr(t, "a chmods d/c", a.Chmod("/d/c", 0o600))
	noErr(t, "a writes e/f", putFile(a, "/e/f", "f from a\n"))
	noErr(t, "a mkdirs d/sub/y", a.MkdirAll("/d/sub/y", 0o755))

	wantNames(t, a, "a", "/d", "c new sub")
	wantNames(t, a, "a", "/e", "b2 f")
	wantNames(t, a, "a", "/d/sub", "x y")
	for i, fs := range w.fs[1:] {
		who := fmt.Sprint("workspace ", i+1)
		wantNames(t, fs, who, "/d", "a b c sub")
		wantNames(t, fs, who, "/e", "f")
		wantNames(t, fs, who, "/d/sub", "x")
		if got := readAll(t, fs, "/e/f"); got != "f2\n" {
			t.Fatalf("%s reads e/f as %q", who, got)
		}
		if fi, err := fs.Lstat("/d/c"); err != nil || fi.Mode().Perm() != 0o644 {
			t.Fatalf("%s: d/c %v %v", who, fi.Mode(), err)
		}
		if _, err := fs.Lstat("/d/new"); err == nil {
			t.Fatalf("%s sees a's d/new", who)
		}
		up, err := os.ReadDir(w.ls.path(fmt.Sprintf("u%d", i+1), ""))
		if err != nil || len(up) != 0 {
			t.Fatalf("%s's upper holds %v (%v)", who, up, err)
		}
	}
	// b's own change is b's alone, a's stay a's.
	noErr(t, "b creates d/sub/z", putFile(b, "/d/sub/z", "z\n"))
	wantNames(t, b, "b", "/d/sub", "x z")
	wantNames(t, a, "a", "/d/sub", "x y")
	wantNames(t, w.fs[2], "workspace 2", "/d/sub", "x")
}

// A change made to a lower behind the unions' back is seen by every workspace's next
// listing of a shared directory.
func TestSharedLowerChangeBehindBack(t *testing.T) {
	w := newWorkspaces(t, 1)
	w.ls.file("l1", "d/a", "a\n")
	w.open(2, Options{})
	for _, fs := range w.fs {
		wantNames(t, fs, "workspace", "/d", "a")
	}
	w.ls.file("l1", "d/b", "b\n")
	noErr(t, "remove l1/d/a", os.Remove(w.ls.path("l1", "d/a")))
	for i, fs := range w.fs {
		wantNames(t, fs, fmt.Sprint("workspace ", i), "/d", "b")
	}
	if st := w.shared.ListingStats(); st.Misses != 2 {
		t.Fatalf("shared cache %+v: want a build before the change and one after", st)
	}
}

// With the index on, a lower file with several links that one workspace copied up
// through another name shows the copy there, through a lower-only directory, and the
// lower file in the others.
func TestSharedIndexLinkedFiles(t *testing.T) {
	w := newWorkspaces(t, 1)
	w.ls.file("l1", "h1/one", "lower\n")
	w.ls.dir("l1", "h2")
	noErr(t, "link", os.Link(w.ls.path("l1", "h1/one"), w.ls.path("l1", "h2/two")))
	w.ls.file("l1", "h2/plain", "p\n")
	w.open(2, Options{})
	a, b := w.fs[0], w.fs[1]
	sizeIn := func(fs *FS, dir, name string) int64 {
		t.Helper()
		fis, err := fs.ReadDir(dir)
		noErr(t, "readdir", err)
		for _, fi := range fis {
			if fi.Name() == name {
				return fi.Size()
			}
		}
		t.Fatalf("%s not listed in %s", name, dir)
		return 0
	}
	for _, fs := range w.fs {
		if got := sizeIn(fs, "/h2", "two"); got != 6 {
			t.Fatalf("h2/two listed with size %d", got)
		}
	}
	appendTo(t, a, "/h1/one", "more from a\n")
	if got := sizeIn(a, "/h2", "two"); got != 18 {
		t.Fatalf("a lists h2/two (a lower-only directory there) with size %d, want the copy's 18", got)
	}
	if got := readAll(t, a, "/h2/two"); got != "lower\nmore from a\n" {
		t.Fatalf("a reads h2/two as %q", got)
	}
	if got := sizeIn(b, "/h2", "two"); got != 6 {
		t.Fatalf("b lists h2/two with size %d, want the lower's 6", got)
	}
	if got := readAll(t, b, "/h2/two"); got != "lower\n" {
		t.Fatalf("b reads h2/two as %q", got)
	}
}

// Unions whose options cannot share the lowers are refused; the Shared outlives them.
func TestSharedRefusesOtherOptions(t *testing.T) {
	w := newWorkspaces(t, 2)
	w.ls.file("l1", "a", "a\n")
	w.open(1, Options{})
	up, wk := w.ls.path("u9", ""), w.ls.path("w9", "")
	noErr(t, "mkdir", os.MkdirAll(up, 0o755))
	noErr(t, "mkdir", os.MkdirAll(wk, 0o755))
	for _, c := range []struct {
		what string
		opts Options
	}{
		{"other lowers", Options{Lowers: w.lowerPaths()[:1]}},
		{"lowers in another order", Options{Lowers: []string{w.lowerPaths()[1], w.lowerPaths()[0]}}},
		{"another xattr prefix", Options{Lowers: w.lowerPaths(), XattrPrefix: "user.overlay."}},
	} {
		opts := c.opts
		opts.Upper, opts.Work, opts.Shared = up, wk, w.shared
		if opts.XattrPrefix == "" {
			opts.XattrPrefix = "trusted.overlay."
		}
		fs, err := New(opts)
		if err == nil {
			fs.Close()
			t.Fatalf("%s: accepted", c.what)
		}
		wantErrno(t, c.what, err, syscall.EINVAL)
		if strings.Contains(err.Error(), "\n") {
			t.Fatalf("%s: a multi-line error %q", c.what, err)
		}
	}
	// Equal lowers spelt out are accepted.
	fs := w.openOne(8, Options{Lowers: w.lowerPaths()})
	wantNames(t, fs, "explicit lowers", "/", "a")
	wantErrno(t, "closing a Shared in use", w.shared.Close(), syscall.EBUSY)
}

// Workspaces listing a shared directory while one of them changes it never see each
// other's changes (go test -race).
func TestSharedConcurrentWorkspaces(t *testing.T) {
	w := newWorkspaces(t, 1)
	for i := 0; i < 50; i++ {
		w.ls.file("l1", fmt.Sprintf("d/f%02d", i), "x")
	}
	w.open(3, Options{})
	want := names(t, w.fs[0], "/d")
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i, fs := range w.fs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < 30; k++ {
				if i == 0 {
					if err := putFile(fs, fmt.Sprintf("/d/new%02d", k), "n"); err != nil {
						errs <- err
						return
					}
					continue
				}
				fis, err := fs.ReadDir("/d")
				if err != nil {
					errs <- err
					return
				}
				var n []string
				for _, fi := range fis {
					n = append(n, fi.Name())
				}
				if got := strings.Join(n, " "); got != want {
					errs <- fmt.Errorf("workspace %d lists %q while workspace 0 creates", i, got)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := len(strings.Fields(names(t, w.fs[0], "/d"))); got != 80 {
		t.Fatalf("workspace 0 lists %d names, want 80", got)
	}
}

func putFile(fs *FS, p, content string) error {
	f, err := fs.Create(p)
	if err != nil {
		return err
	}
	if _, err := f.Write([]byte(content)); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Workspaces over shared lowers resolve lower-only directories through the Shared's
// lower-only union: its directory cache holds each lower directory once (one
// descriptor per part), the workspaces' caches hold none of them, and a workspace
// closing leaves the others working.
func TestSharedDirectoryDescriptors(t *testing.T) {
	w := newWorkspaces(t, 1)
	const dirs = 40
	for i := 0; i < dirs; i++ {
		w.ls.file("l1", fmt.Sprintf("t/d%02d/f", i), "f")
	}
	countFDs := func() int {
		fds, err := os.ReadDir("/proc/self/fd")
		noErr(t, "list descriptors", err)
		return len(fds)
	}
	before := countFDs()
	w.open(5, Options{})
	walkAll := func(fs *FS) {
		for i := 0; i < dirs; i++ {
			p := fmt.Sprintf("/t/d%02d", i)
			wantNames(t, fs, "workspace", p, "f")
			if got := readAll(t, fs, p+"/f"); got != "f" {
				t.Fatalf("%s/f reads %q", p, got)
			}
		}
	}
	for _, fs := range w.fs {
		walkAll(fs)
	}
	if w.fs[0].DirCacheStats().Mode == "off" {
		if os.Getenv("CI") == "true" {
			t.Fatal("no directory cache here (fanotify)")
		}
		t.Skip("no directory cache here (fanotify): nothing to share")
	}
	for i, fs := range w.fs {
		if st := fs.DirCacheStats(); st.Dirs != 0 {
			t.Fatalf("workspace %d caches %d lower-only directories itself", i, st.Dirs)
		}
	}
	lower := w.shared.LowerDirCacheStats()
	if lower.Dirs < dirs+1 || lower.Hits == 0 {
		t.Fatalf("the shared lower directory cache holds %d directories (%d hits), want %d", lower.Dirs, lower.Hits, dirs+1)
	}
	// Each union: its upper, work and index descriptors, fanotify and the moves index;
	// the lower union: its layers and fanotify; not a descriptor per workspace and
	// cached directory.
	if open := countFDs() - before; open > dirs+1+5*12+12 {
		t.Fatalf("%d descriptors open for 5 workspaces over %d directories", open, dirs)
	}
	noErr(t, "closing workspace 0", w.fs[0].Close())
	for _, fs := range w.fs[1:] {
		walkAll(fs)
	}
	for _, fs := range w.fs[1:] {
		noErr(t, "closing a workspace", fs.Close())
	}
	if got := w.shared.fds.open(); got != 0 {
		t.Fatalf("%d shared descriptors open once every workspace closed", got)
	}
}

// A read-only union and a workspace share the lowers; each keeps its own view.
func TestSharedReadOnlyUnion(t *testing.T) {
	w := newWorkspaces(t, 2)
	w.ls.file("l1", "d/a", "a1\n")
	w.ls.file("l2", "d/b", "b2\n")
	w.ls.whiteout("l1", "d/gone")
	w.ls.file("l2", "d/gone", "hidden\n")
	w.open(1, Options{})
	ro, err := New(Options{Shared: w.shared, XattrPrefix: "trusted.overlay."})
	noErr(t, "read-only union", err)
	t.Cleanup(func() { ro.Close() })
	wantNames(t, ro, "read-only", "/d", "a b")
	wantNames(t, w.fs[0], "workspace", "/d", "a b")
	noErr(t, "workspace creates d/c", putFile(w.fs[0], "/d/c", "c"))
	wantNames(t, w.fs[0], "workspace", "/d", "a b c")
	wantNames(t, ro, "read-only", "/d", "a b")
	if got := readAll(t, ro, "/d/b"); got != "b2\n" {
		t.Fatalf("read-only reads d/b as %q", got)
	}
	if !ro.ReadOnly() {
		t.Fatal("a union without an upper is not read-only")
	}
}

// Workspaces over shared lowers see exactly what a union of their own layers sees, while
// their own changes, changes made behind their back in their uppers (new directories,
// whiteouts, opaque marks) and in the lowers come and go: each step's trees are compared
// with a fresh read-only union over the same layers (the upper as its top lower), which
// caches nothing from before the step.
func TestSharedLowerDirectoriesExact(t *testing.T) {
	w := newWorkspaces(t, 2)
	r := randFor(7)
	names := []string{"a", "b", "c"}
	for _, x := range names {
		for _, y := range names {
			w.ls.file("l2", x+"/"+y+"/f2", "l2 "+x+y)
			if y != "c" {
				w.ls.file("l1", x+"/"+y+"/z/f1", "l1 "+x+y)
			}
		}
	}
	w.ls.whiteout("l1", "c/a/f2")
	w.open(3, Options{Index: "off"})
	if w.fs[0].DirCacheStats().Mode == "off" {
		if os.Getenv("CI") == "true" {
			t.Fatal("no directory cache here (fanotify)")
		}
		t.Skip("no directory cache here (fanotify): nothing shared")
	}
	randomPath := func(depth int) string {
		p := ""
		for range depth {
			p += "/" + names[r.IntN(len(names))]
		}
		return p
	}
	oracle := func(i int) *FS {
		lowers := append([]string{w.ls.path(fmt.Sprintf("u%d", i), "")}, w.lowerPaths()...)
		fs, err := New(Options{Lowers: lowers, XattrPrefix: "trusted.overlay.", Index: "off"})
		noErr(t, "the oracle union", err)
		return fs
	}
	// stats is what Lstat says of every path of up to three components.
	stats := func(fs *FS) map[string]string {
		out := map[string]string{}
		var visit func(p string, depth int)
		visit = func(p string, depth int) {
			fi, err := fs.Lstat(p)
			if err != nil {
				out[p] = err.Error()
			} else {
				out[p] = fi.Mode().String()
			}
			if depth < 3 {
				for _, n := range names {
					visit(p+"/"+n, depth+1)
				}
			}
		}
		for _, n := range names {
			visit("/"+n, 1)
		}
		return out
	}
	// fresh is a union of its own over the lowers, with an empty upper on the same
	// filesystem: what a lower object's identity is, with nothing cached.
	fresh := func() *FS {
		up, wk := w.ls.path("fresh-u", ""), w.ls.path("fresh-w", "")
		os.RemoveAll(up)
		os.RemoveAll(wk)
		noErr(t, "mkdir", os.MkdirAll(up, 0o755))
		noErr(t, "mkdir", os.MkdirAll(wk, 0o755))
		fs, err := New(Options{Lowers: w.lowerPaths(), Upper: up, Work: wk, XattrPrefix: "trusted.overlay.", Index: "off"})
		noErr(t, "the fresh union", err)
		return fs
	}
	// upperHolds reports whether upper ui has anything on the way to p.
	upperHolds := func(ui int, p string) bool {
		comps := strings.Split(strings.TrimPrefix(p, "/"), "/")
		for k := range comps {
			if _, err := os.Lstat(w.ls.path(fmt.Sprintf("u%d", ui), strings.Join(comps[:k+1], "/"))); err == nil {
				return true
			}
		}
		return false
	}
	for step := range 120 {
		i := r.IntN(len(w.fs))
		fs, upper := w.fs[i], fmt.Sprintf("u%d", i)
		var did string
		switch r.IntN(9) {
		case 8: // a directory renamed through the union: a redirect
			from, to := randomPath(1+r.IntN(2)), randomPath(1)+fmt.Sprintf("/moved%d", r.IntN(3))
			did = "rename " + from + " to " + to
			fs.Rename(from, to)
		case 0, 1, 2:
			did = "changes through the union"
			randomChanges(fs, r, 2)
		case 3: // behind the back: a directory in the upper, sometimes opaque
			p := randomPath(1 + r.IntN(2))
			did = "mkdir in the upper " + p
			if os.MkdirAll(w.ls.path(upper, p), 0o755) == nil && r.IntN(2) == 0 {
				did += " (opaque)"
				w.ls.xattr(upper, p, "trusted.overlay.opaque", "y")
			}
		case 4: // behind the back: a whiteout in the upper
			p := randomPath(1 + r.IntN(3))
			did = "whiteout in the upper " + p
			if os.MkdirAll(filepath.Dir(w.ls.path(upper, p)), 0o755) == nil {
				unix.Mknod(w.ls.path(upper, p), unix.S_IFCHR, 0)
			}
		case 5: // behind the back: remove what the upper holds at a path
			p := randomPath(1 + r.IntN(2))
			did = "remove from the upper " + p
			os.RemoveAll(w.ls.path(upper, p))
		case 6: // behind the back: a new lower directory, or one removed
			p := randomPath(2 + r.IntN(2))
			if r.IntN(2) == 0 {
				did = "new lower file " + p + "/new"
				if os.MkdirAll(w.ls.path("l1", p), 0o755) == nil {
					os.WriteFile(w.ls.path("l1", p+"/new"), []byte("new"), 0o644)
				}
			} else {
				did = "remove from l1 " + p
				os.RemoveAll(w.ls.path("l1", p))
			}
		case 7: // behind the back: a lower directory's mode
			p := randomPath(1 + r.IntN(2))
			did = "chmod in l2 " + p
			os.Chmod(w.ls.path("l2", p), os.FileMode(0o700+r.IntN(0o100)))
		}
		for j, ws := range w.fs {
			o := oracle(j)
			want, wantStats := treeOf(t, o), stats(o)
			o.Close()
			got, gotStats := treeOf(t, ws), stats(ws)
			// Identities of what the workspace shows from the lowers alone, asked twice
			// (the second from what the first remembered), are the lowers' own.
			f := fresh()
			for p := range want {
				if upperHolds(j, p) {
					continue
				}
				wantID, wantParent, _, err := f.IdentifyWithParent(p)
				noErr(t, "fresh identity of "+p, err)
				for range 2 {
					id, parent, _, err := ws.IdentifyWithParent(p)
					top := !strings.Contains(strings.TrimPrefix(p, "/"), "/") // its parent is the root, each union's own
					if err != nil || id.ID.Key() != wantID.ID.Key() || id.Ino != wantID.Ino || !top && parent.Key() != wantParent.Key() {
						t.Fatalf("step %d (%s in workspace %d): workspace %d identifies %s as %v/%d (parent %v, %v), the lowers' is %v/%d (parent %v)",
							step, did, i, j, p, id.ID, id.Ino, parent, err, wantID.ID, wantID.Ino, wantParent)
					}
				}
			}
			f.Close()
			for _, pair := range []struct{ got, want map[string]string }{{got, want}, {gotStats, wantStats}} {
				for p, v := range pair.want {
					if pair.got[p] != v {
						t.Fatalf("step %d (%s in workspace %d): workspace %d shows %s as %q, its layers %q", step, did, i, j, p, pair.got[p], v)
					}
				}
				for p, v := range pair.got {
					if _, ok := pair.want[p]; !ok {
						t.Fatalf("step %d (%s in workspace %d): workspace %d shows %s (%q), its layers do not", step, did, i, j, p, v)
					}
				}
			}
		}
	}
	if st := w.shared.LowerDirCacheStats(); st.Hits == 0 || st.IdentityHits == 0 {
		t.Fatalf("the shared lower directory cache was never used: %+v", st)
	}
}

// An identity the shared lower directory cache remembers goes with its object: a lower
// file removed behind the workspaces' back and another made with the same inode number
// is identified as the new one.
func TestSharedLowerIdentityOfReusedInode(t *testing.T) {
	w := newWorkspaces(t, 1)
	w.ls.file("l1", "d/e/f", "old")
	w.open(2, Options{})
	if w.fs[0].DirCacheStats().Mode == "off" {
		if os.Getenv("CI") == "true" {
			t.Fatal("no directory cache here (fanotify)")
		}
		t.Skip("no directory cache here (fanotify): nothing shared")
	}
	for _, fs := range w.fs {
		for range 2 {
			_, err := fs.Identify("/d/e/f")
			noErr(t, "identify d/e/f", err)
		}
	}
	if st := w.shared.LowerDirCacheStats(); st.IdentityHits == 0 {
		t.Fatalf("the identity of d/e/f was not remembered by the shared lower cache: %+v", st)
	}
	old := w.ls.path("l1", "d/e/f")
	var st unix.Stat_t
	noErr(t, "stat", unix.Lstat(old, &st))
	noErr(t, "remove d/e/f", os.Remove(old))
	reused := false
	for i := 0; i < 2000 && !reused; i++ {
		p := w.ls.path("l1", fmt.Sprintf("d/e/g%d", i))
		noErr(t, "create", os.WriteFile(p, nil, 0o644))
		var nst unix.Stat_t
		noErr(t, "stat", unix.Lstat(p, &nst))
		if nst.Ino == st.Ino {
			noErr(t, "rename over d/e/f", os.Rename(p, old))
			reused = true
		}
	}
	if !reused {
		t.Skip("the filesystem gave no freed inode number back in 2,000 creates")
	}
	want, err := w.fs[0].handleAt(1, -100, old) // the new file's handle, named from the lower
	noErr(t, "handle of the new d/e/f", err)
	for i, fs := range w.fs {
		id, err := fs.Identify("/d/e/f")
		noErr(t, "identify the new d/e/f", err)
		if !bytes.Equal(id.ID.Handle, want.Handle) {
			t.Fatalf("workspace %d identifies the new d/e/f (same inode number) by the old file's handle", i)
		}
	}
}

// EntryIdentity of the entries of a shared listing (a lower-only directory every
// workspace lists from one snapshot, vouched for by the lower-only union's cache) equals
// Identify in each workspace, also in one whose upper has since made the directory its
// own; and an entry not yet identified whose name was given to another file in the lower
// behind the workspaces' back answers ENOENT.
func TestSharedListingIdentitiesAreIdentify(t *testing.T) {
	w := newWorkspaces(t, 1)
	w.ls.file("l1", "d/lower", "l")
	w.ls.file("l1", "d/other", "o")
	w.ls.file("l1", "d/sub/z", "z")
	w.open(2, Options{})
	requireDirCache(t, w.fs[0])
	// vouched: the entries come from the shared snapshot, and nothing changed since
	// their lookup, so the lower-only union's cache vouches for their parts.
	check := func(when string, fs *FS, want int, vouched bool) {
		t.Helper()
		entries, err := fs.ReadDir("d")
		noErr(t, "list d", err)
		if len(entries) != want {
			t.Fatalf("%s: %d entries in d, want %d", when, len(entries), want)
		}
		for _, fi := range entries {
			if vouched {
				_, ok, err := identifyListedIn(fs, "d", fi.(*fileInfo))
				if err != nil || !ok {
					t.Errorf("%s: d/%s of the shared listing not identified from its parts: %v", when, fi.Name(), err)
				}
			}
			listed, err := fs.EntryIdentity("d", fi)
			noErr(t, when+": EntryIdentity(d/"+fi.Name()+")", err)
			looked, err := fs.Identify("d/" + fi.Name())
			noErr(t, "identify", err)
			if !listed.ID.Equal(looked.ID) || listed.Ino != looked.Ino || listed.Dir != looked.Dir {
				t.Errorf("%s: d/%s listed as %+v, Identify says %+v", when, fi.Name(), listed, looked)
			}
		}
	}
	for i, fs := range w.fs {
		check(fmt.Sprintf("workspace %d", i), fs, 3, true)
	}
	if st := w.shared.ListingStats(); st.Hits == 0 {
		t.Fatalf("the second workspace did not list d from the shared snapshot: %+v", st)
	}
	w.ls.file("l1", "d/unrelated", "a change in the lower")
	check("after a change, workspace 1", w.fs[1], 4, true)
	noErr(t, "create in workspace 0", w.fs[0].MkdirAll("d/mine", 0o755))
	check("workspace 0 after its create", w.fs[0], 5, false) // its own listing now
	check("workspace 1 after workspace 0's create", w.fs[1], 4, true)

	w.ls.file("l1", "d/another", "a") // a new snapshot, no entry identified yet
	entries, err := w.fs[1].ReadDir("d")
	noErr(t, "list d", err)
	old := w.ls.path("l1", "d/lower")
	noErr(t, "remove d/lower", os.Remove(old))
	w.ls.file("l1", "d/lower", "another file")
	for _, fi := range entries {
		if fi.Name() != "lower" {
			continue
		}
		if _, ok, _ := identifyListedIn(w.fs[1], "d", fi.(*fileInfo)); ok {
			t.Errorf("d/lower, replaced in the lower since it was listed, identified from the parts its listing found")
		}
		if _, err := w.fs[1].EntryIdentity("d", fi); err != syscall.ENOENT {
			var st syscall.Stat_t
			noErr(t, "stat", syscall.Lstat(old, &st))
			if _, ino, _ := LayerObject(fi); ino != st.Ino { // the new file may have got the old inode
				t.Errorf("EntryIdentity of a replaced entry of a shared listing: %v, want ENOENT", err)
			}
		}
	}
}

// identifyListedIn is ListedEntries.identifyListed of one entry of a listing of dir.
func identifyListedIn(fs *FS, dir string, fi *fileInfo) (Identity, bool, error) {
	l := fs.ListedEntries(dir)
	defer l.Close()
	return l.identifyListed(fi)
}
