package handles

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/billyunion"
)

// stack is a real union on temporary layers: two lowers, an upper, a work
// directory.
type stack struct {
	t                         testing.TB
	root, l1, l2, upper, work string
	fs                        *billyunion.FS
	h                         *Handles
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		// open_by_handle_at needs CAP_DAC_READ_SEARCH; CI runs as root.
		t.Skip("SKIPPED: needs root (open_by_handle_at, trusted.overlay xattrs)")
	}
}

func newStack(t *testing.T, files map[string]string) *stack { return newStackTB(t, files) }

func newStackTB(t testing.TB, files map[string]string) *stack {
	requireRoot(t)
	root := t.TempDir()
	s := &stack{t: t, root: root, l1: filepath.Join(root, "l1"), l2: filepath.Join(root, "l2"),
		upper: filepath.Join(root, "u"), work: filepath.Join(root, "w")}
	for _, d := range []string{s.l1, s.l2, s.upper, s.work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, content := range files {
		p := filepath.Join(root, name)
		if strings.HasSuffix(name, "/") {
			must(t, os.MkdirAll(p, 0o755))
			continue
		}
		must(t, os.MkdirAll(filepath.Dir(p), 0o755))
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s.open()
	t.Cleanup(func() { s.fs.Close() })
	return s
}

// open (re)starts the union and a fresh Handles on it, as a server restart
// does: nothing carries over but what is on disk.
func (s *stack) open() {
	s.t.Helper()
	if s.fs != nil {
		s.fs.Close()
	}
	fs, err := billyunion.New(billyunion.Options{Lowers: []string{s.l1, s.l2}, Upper: s.upper, Work: s.work})
	if err != nil {
		s.t.Fatal(err)
	}
	h, err := New(fs, Options{})
	if err != nil {
		s.t.Fatal(err)
	}
	s.fs, s.h = fs, h
}

func split(p string) []string {
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

type captured struct {
	path string
	fh   []byte
	ino  uint64
}

func (s *stack) capture(p string) captured {
	s.t.Helper()
	fh, err := s.h.ToHandle(split(p))
	if err != nil {
		s.t.Fatalf("ToHandle(%q): %v", p, err)
	}
	if len(fh) > MaxSize {
		s.t.Fatalf("handle of %q is %d bytes", p, len(fh))
	}
	id, err := s.fs.Identify(p)
	if err != nil {
		s.t.Fatal(err)
	}
	return captured{path: p, fh: fh, ino: id.Ino}
}

// expect checks that c's handle resolves to want, an object with c's
// file id, and that a new handle made there is byte-identical.
func (s *stack) expect(c captured, want string) {
	s.t.Helper()
	got, err := s.h.FromHandle(c.fh)
	if err != nil {
		s.t.Fatalf("handle of %q (now %q): %v", c.path, want, err)
	}
	if strings.Join(got, "/") != want {
		s.t.Fatalf("handle of %q resolves to %q, want %q", c.path, strings.Join(got, "/"), want)
	}
	id, err := s.fs.Identify(want)
	if err != nil || id.Ino != c.ino {
		s.t.Fatalf("%q: file id %d (%v), handle was made with %d", want, id.Ino, err, c.ino)
	}
	again, err := s.h.ToHandle(split(want))
	if err != nil {
		s.t.Fatal(err)
	}
	if !sameObject(again, c.fh) {
		s.t.Fatalf("%q: handle changed from %x to %x", want, c.fh, again)
	}
}

// sameObject compares the object part of two handles (the hint part of a
// non-directory's handle follows its current location).
func sameObject(a, b []byte) bool {
	ha, err1 := decode(a)
	hb, err2 := decode(b)
	return err1 == nil && err2 == nil && ha.obj.Equal(hb.obj) && ha.dir == hb.dir && ha.export == hb.export
}

func (s *stack) expectStale(c captured) {
	s.t.Helper()
	if got, err := s.h.FromHandle(c.fh); err != syscall.ESTALE {
		s.t.Fatalf("handle of removed %q: %q, %v; want ESTALE", c.path, got, err)
	}
}

const longName = "a-name-far-too-long-to-fit-into-a-64-byte-nfs-file-handle-beside-two-identities.txt"

func TestHandlesSurviveCopyUpRenameAndRestart(t *testing.T) {
	s := newStack(t, map[string]string{
		"l1/lowerfile":          "lower",
		"l1/chmodme":            "c",
		"l1/writeme":            "w",
		"l2/deep/a/b/c/d/file":  "deep",
		"l2/deep/a/b/c/d/other": "other",
		"l1/ldir/inside":        "i",
		"l2/" + longName:        "long",
		"u/upperfile":           "upper",
		"u/udir/sub/f":          "in upper dir",
		"u/udir/" + longName:    "long upper",
	})
	fs := s.fs
	c := map[string]captured{}
	for _, p := range []string{"", "lowerfile", "chmodme", "writeme", "deep", "deep/a/b/c/d", "deep/a/b/c/d/file",
		"deep/a/b/c/d/other", "ldir", "ldir/inside", longName, "upperfile", "udir", "udir/sub", "udir/sub/f", "udir/" + longName} {
		c[p] = s.capture(p)
	}
	// Copy-up by chmod and by write.
	if err := fs.Chmod("chmodme", 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := fs.OpenFile("writeme", os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("written"))
	f.Close()
	if err := fs.Chmod("deep/a/b/c/d/file", 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(s.upper, "chmodme")); err != nil {
		t.Fatal("chmod did not copy up")
	}
	s.expect(c["chmodme"], "chmodme")
	s.expect(c["writeme"], "writeme")
	s.expect(c["deep/a/b/c/d/file"], "deep/a/b/c/d/file")
	s.expect(c["deep/a/b/c/d"], "deep/a/b/c/d")

	// Rename objects: a lower file (copy-up and move), an upper file, a long name, into another directory.
	must(t, fs.MkdirAll("newhome/x", 0o755))
	must(t, fs.Rename("lowerfile", "newhome/x/moved-lower"))
	must(t, fs.Rename("upperfile", "newhome/moved-upper"))
	must(t, fs.Rename(longName, "newhome/x/"+longName+".2"))
	must(t, fs.Rename("deep/a/b/c/d/other", "newhome/other"))
	// Rename an ancestor (an upper directory; lower and merged ones: TestHandlesSurviveRenameOfLowerDir).
	must(t, fs.Rename("udir", "newhome/renamed-udir"))
	check := func() {
		s.expect(c[""], "")
		s.expect(c["lowerfile"], "newhome/x/moved-lower")
		s.expect(c["upperfile"], "newhome/moved-upper")
		s.expect(c[longName], "newhome/x/"+longName+".2")
		s.expect(c["deep/a/b/c/d/other"], "newhome/other")
		s.expect(c["udir"], "newhome/renamed-udir")
		s.expect(c["udir/sub"], "newhome/renamed-udir/sub")
		s.expect(c["udir/sub/f"], "newhome/renamed-udir/sub/f")
		s.expect(c["udir/"+longName], "newhome/renamed-udir/"+longName)
		s.expect(c["ldir"], "ldir")
		s.expect(c["ldir/inside"], "ldir/inside")
		s.expect(c["deep"], "deep")
		s.expect(c["chmodme"], "chmodme")
		s.expect(c["writeme"], "writeme")
	}
	check()
	// Restart: a fresh union and Handles, nothing cached.
	s.open()
	check()
	// Again, with the work directory's index lost: rebuilt from the upper.
	s.fs.Close()
	if err := os.RemoveAll(filepath.Join(s.work, "ovlnfs-index")); err != nil {
		t.Fatal(err)
	}
	s.fs = nil
	s.open()
	check()
}

// TestHandlesSurviveRenameOfLowerDir: directories with lower parts move with a redirect
// (their lower parts stay where they are); a handle of such a directory, or of anything in
// or below it, made before the renames resolves to the new path with the same file id,
// also after a restart and with the moves index rebuilt.
func TestHandlesSurviveRenameOfLowerDir(t *testing.T) {
	s := newStack(t, map[string]string{
		"l1/low/f":                "f",
		"l1/low/sub/g":            "g",
		"l2/low/sub/deeper/h":     "h",
		"l2/low/" + longName:      "long",
		"l1/merged/m":             "m",
		"u/merged/um":             "um",
		"l2/tree/a/b/c/file":      "file",
		"l2/tree/a/b/c/d/another": "another",
	})
	fs := s.fs
	c := map[string]captured{}
	for _, p := range []string{"low", "low/f", "low/sub", "low/sub/g", "low/sub/deeper", "low/sub/deeper/h", "low/" + longName,
		"merged", "merged/m", "merged/um", "tree/a/b", "tree/a/b/c", "tree/a/b/c/file", "tree/a/b/c/d", "tree/a/b/c/d/another"} {
		c[p] = s.capture(p)
	}
	must(t, fs.Rename("low", "low2"))               // same parent: a relative redirect
	must(t, fs.MkdirAll("home/x", 0o755))           //
	must(t, fs.Rename("low2/sub", "home/x/sub2"))   // out of a renamed dir: an absolute one
	must(t, fs.Rename("merged", "home/merged2"))    // a merged dir
	must(t, fs.Rename("tree/a/b", "home/b2"))       // a deep one
	must(t, fs.Rename("home/b2/c/d", "home/x/d2"))  // ... and one inside it
	must(t, fs.Rename("home", "home-renamed"))      // a pure upper ancestor of them all
	must(t, fs.Rename("low2", "home-renamed/low3")) // again, to another parent
	check := func() {
		t.Helper()
		for p, want := range map[string]string{
			"low": "home-renamed/low3", "low/f": "home-renamed/low3/f", "low/" + longName: "home-renamed/low3/" + longName,
			"low/sub": "home-renamed/x/sub2", "low/sub/g": "home-renamed/x/sub2/g",
			"low/sub/deeper": "home-renamed/x/sub2/deeper", "low/sub/deeper/h": "home-renamed/x/sub2/deeper/h",
			"merged": "home-renamed/merged2", "merged/m": "home-renamed/merged2/m", "merged/um": "home-renamed/merged2/um",
			"tree/a/b": "home-renamed/b2", "tree/a/b/c": "home-renamed/b2/c", "tree/a/b/c/file": "home-renamed/b2/c/file",
			"tree/a/b/c/d": "home-renamed/x/d2", "tree/a/b/c/d/another": "home-renamed/x/d2/another",
		} {
			s.expect(c[p], want)
		}
	}
	check()
	s.open() // a restart: nothing cached
	check()
	s.fs.Close()
	must(t, os.RemoveAll(filepath.Join(s.work, "ovlnfs-index")))
	s.fs = nil
	s.open() // the moves index rebuilt from the redirects in the upper
	check()
}

func TestHandlesOfRemovedObjectsAreStale(t *testing.T) {
	s := newStack(t, map[string]string{"l1/lower": "l", "u/upper": "u", "u/dir/": "", "l1/ldir/f": "f"})
	fs := s.fs
	lower, upper, dir, lf := s.capture("lower"), s.capture("upper"), s.capture("dir"), s.capture("ldir/f")
	must(t, fs.Remove("lower"))
	must(t, fs.Remove("upper"))
	must(t, fs.Remove("dir"))
	must(t, fs.Rename("ldir/f", "moved"))
	must(t, fs.Remove("moved"))
	// New objects under the same names (inode numbers may be reused too).
	for _, n := range []string{"lower", "upper", "ldir/f"} {
		f, err := fs.Create(n)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	must(t, fs.Mkdir("dir", 0o755))
	for _, c := range []captured{lower, upper, dir, lf} {
		s.expectStale(c)
	}
	s.open()
	for _, c := range []captured{lower, upper, dir, lf} {
		s.expectStale(c)
	}
}

func TestHardLinkKeepsHandleWhenFirstNameGoes(t *testing.T) {
	s := newStack(t, map[string]string{"u/a": "x", "u/d/": ""})
	c := s.capture("a")
	must(t, s.fs.Link("a", "d/b"))
	must(t, s.fs.Remove("a"))
	s.open()
	s.expect(c, "d/b")
}

// Changes made directly in a layer, behind the server's back: the handle
// answers ESTALE or the right object, never another one.
func TestLayersChangedUnderneath(t *testing.T) {
	s := newStack(t, map[string]string{"l1/f": "lower", "u/g": "upper", "u/d/h": "h"})
	f, g, h := s.capture("f"), s.capture("g"), s.capture("d/h")
	// f: replaced in the lower by another file of the same name.
	must(t, os.Remove(filepath.Join(s.l1, "f")))
	must(t, os.WriteFile(filepath.Join(s.l1, "f"), []byte("impostor"), 0o644))
	// g: renamed in the upper directly, and an impostor put in its place.
	must(t, os.Rename(filepath.Join(s.upper, "g"), filepath.Join(s.upper, "g2")))
	must(t, os.WriteFile(filepath.Join(s.upper, "g"), []byte("impostor"), 0o644))
	// h: its directory renamed directly (the kernel reconnects it).
	must(t, os.Rename(filepath.Join(s.upper, "d"), filepath.Join(s.upper, "d2")))
	for _, c := range []captured{f, g, h} {
		got, err := s.h.FromHandle(c.fh)
		if err == syscall.ESTALE {
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", c.path, err)
		}
		id, err := s.fs.Identify(strings.Join(got, "/"))
		if err != nil || id.Ino != c.ino {
			t.Fatalf("handle of %q resolved to %q, another object (ino %d, want %d)", c.path, got, id.Ino, c.ino)
		}
	}
	s.expectStale(f)
	s.expect(h, "d2/h")
}

func TestForeignAndForgedHandles(t *testing.T) {
	s := newStack(t, map[string]string{"l1/f": "x", "u/g": "y"})
	good := s.capture("f")
	// A handle from another configuration (other layers) is refused.
	other := newStack(t, map[string]string{"l1/f": "x"})
	foreign := other.capture("f")
	if _, err := s.h.FromHandle(foreign.fh); err != syscall.ESTALE {
		t.Fatalf("foreign handle: %v, want ESTALE", err)
	}
	// A well-formed handle naming an object outside the layers, on the same
	// filesystem, is refused.
	outside := filepath.Join(s.root, "outside")
	must(t, os.WriteFile(outside, []byte("secret"), 0o600))
	kh, _, err := unix.NameToHandleAt(unix.AT_FDCWD, outside, 0)
	if err != nil {
		t.Fatal(err)
	}
	dirh, _, err := unix.NameToHandleAt(unix.AT_FDCWD, s.root, 0)
	if err != nil {
		t.Fatal(err)
	}
	hd, _ := decode(good.fh)
	for _, forged := range []*handle{
		{export: hd.export, obj: billyunion.ObjectID{FS: hd.obj.FS, Type: kh.Type(), Handle: kh.Bytes()}},
		{export: hd.export, dir: true, obj: billyunion.ObjectID{FS: hd.obj.FS, Type: dirh.Type(), Handle: dirh.Bytes()}},
		{export: hd.export, obj: billyunion.ObjectID{FS: hd.obj.FS, Type: kh.Type(), Handle: kh.Bytes()},
			hasHint: true, parent: billyunion.ObjectID{FS: hd.obj.FS, Type: dirh.Type(), Handle: dirh.Bytes()}, name: "outside"},
		{export: hd.export, obj: billyunion.ObjectID{FS: 9, Type: kh.Type(), Handle: kh.Bytes()}},
	} {
		b, err := encode(forged)
		if err != nil {
			t.Fatal(err)
		}
		if p, err := s.h.FromHandle(b); err == nil {
			t.Fatalf("forged handle %x resolved to %q", b, p)
		}
	}
	// The stand-in for a vanished object is well-formed and names nothing.
	if _, err := decode(s.h.Gone()); err != nil {
		t.Fatalf("Gone() does not decode: %v", err)
	}
	if p, err := s.h.FromHandle(s.h.Gone()); err != syscall.ESTALE {
		t.Fatalf("Gone() resolved to %q, %v", p, err)
	}
	// Malformed bytes.
	for _, b := range [][]byte{nil, {1}, bytes.Repeat([]byte{0xff}, 64), append(append([]byte(nil), good.fh...), 0, 0, 0, 0), good.fh[:len(good.fh)-4], append(good.fh[:len(good.fh):len(good.fh)], 1, 0, 0, 0), make([]byte, 65)} {
		if p, err := s.h.FromHandle(b); err == nil {
			t.Fatalf("malformed %x resolved to %q", b, p)
		}
	}
}

func TestHandleFormatRoundTrip(t *testing.T) {
	id := func(n int) billyunion.ObjectID {
		return billyunion.ObjectID{FS: 1, Type: 1, Handle: bytes.Repeat([]byte{byte(n)}, n)}
	}
	for _, tc := range []struct {
		h          handle
		hint, hash bool
	}{
		{handle{export: 7, dir: true, obj: id(8)}, false, false},
		{handle{export: 7, obj: id(8), hasHint: true, parent: id(8), name: "short"}, true, false},
		{handle{export: 7, obj: id(8), hasHint: true, parent: id(8), name: longName}, true, true},
		{handle{export: 7, obj: id(40), hasHint: true, parent: id(40), name: "x"}, false, false},
	} {
		b, err := encode(&tc.h)
		if err != nil || len(b) > MaxSize || len(b)%4 != 0 {
			t.Fatalf("encode %+v: %d bytes, %v", tc.h, len(b), err)
		}
		got, err := decode(b)
		if err != nil {
			t.Fatalf("decode %x: %v", b, err)
		}
		if !got.obj.Equal(tc.h.obj) || got.dir != tc.h.dir || got.hasHint != tc.hint || got.hashed != tc.hash {
			t.Fatalf("round trip of %+v gave %+v", tc.h, got)
		}
		if tc.hint && !tc.hash && got.name != tc.h.name {
			t.Fatalf("name %q became %q", tc.h.name, got.name)
		}
		if tc.hash && got.nameHash != nameHash(tc.h.name) {
			t.Fatal("name hash lost")
		}
	}
	if _, err := encode(&handle{obj: id(60)}); err == nil {
		t.Fatal("a 60-byte kernel handle cannot fit")
	}
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Handles resolve while their objects are renamed back and forth concurrently: a live
// object's handle never answers ESTALE, and what it resolves to was the object.
func TestResolveDuringRenames(t *testing.T) {
	s := newStack(t, map[string]string{"l1/a/f0": "0", "l1/a/f1": "1", "u/b/g0": "g", "u/b/g1": "g"})
	must(t, s.fs.MkdirAll("c", 0o755))
	names := []string{"a/f0", "a/f1", "b/g0", "b/g1"}
	var cs []captured
	for _, n := range names {
		cs = append(cs, s.capture(n))
	}
	var (
		wg       sync.WaitGroup
		stop     atomic.Bool
		errMu    sync.Mutex
		firstErr error
	)
	fail := func(err error) {
		errMu.Lock()
		if firstErr == nil {
			firstErr = err
		}
		errMu.Unlock()
		stop.Store(true)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer stop.Store(true)
		for round := 0; round < 200 && !stop.Load(); round++ {
			for _, n := range names {
				moved := "c/" + strings.ReplaceAll(n, "/", "-")
				if err := s.fs.Rename(n, moved); err != nil {
					fail(fmt.Errorf("rename %s: %v", n, err))
					return
				}
				if err := s.fs.Rename(moved, n); err != nil {
					fail(fmt.Errorf("rename %s back: %v", moved, err))
					return
				}
			}
		}
	}()
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				for _, c := range cs {
					if _, err := s.h.FromHandle(c.fh); err != nil {
						fail(fmt.Errorf("handle of %s: %v", c.path, err))
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		t.Fatal(firstErr)
	}
	for _, c := range cs {
		s.expect(c, c.path)
	}
}

// Workspaces on one billyunion.Shared share a path cache; a lower object renamed in one
// workspace still resolves in each to its own path there, and never to another object.
func TestSharedPathCacheAcrossWorkspaces(t *testing.T) {
	requireRoot(t)
	root := t.TempDir()
	lower := filepath.Join(root, "l")
	must(t, os.MkdirAll(filepath.Join(lower, "d"), 0o755))
	must(t, os.WriteFile(filepath.Join(lower, "d", "f"), []byte("lower"), 0o644))
	must(t, os.WriteFile(filepath.Join(lower, "d", "g"), []byte("other"), 0o644))
	shared, err := billyunion.NewShared(billyunion.SharedOptions{Lowers: []string{lower}, XattrPrefix: "trusted.overlay."})
	must(t, err)
	t.Cleanup(func() { shared.Close() })
	var fss []*billyunion.FS
	var hs []*Handles
	for i := 0; i < 2; i++ {
		up, wk := filepath.Join(root, fmt.Sprint("u", i)), filepath.Join(root, fmt.Sprint("w", i))
		must(t, os.MkdirAll(up, 0o755))
		must(t, os.MkdirAll(wk, 0o755))
		fs, err := billyunion.New(billyunion.Options{Upper: up, Work: wk, XattrPrefix: "trusted.overlay.", Shared: shared})
		must(t, err)
		t.Cleanup(func() { fs.Close() })
		h, err := New(fs, Options{Export: 7}) // one export id: only the cache tells them apart
		must(t, err)
		fss, hs = append(fss, fs), append(hs, h)
	}
	if hs[0].paths != hs[1].paths {
		t.Fatal("the workspaces' Handles do not share the path cache")
	}
	fhA, err := hs[0].ToHandle([]string{"d", "f"})
	must(t, err)
	fhB, err := hs[1].ToHandle([]string{"d", "f"})
	must(t, err)
	if !sameObject(fhA, fhB) {
		t.Fatal("a lower file has different handles in two workspaces")
	}
	must(t, fss[0].Rename("/d/f", "/d/renamed"))
	hs[0].Forget(fhA)
	for round := 0; round < 2; round++ { // the second round starts from the other's cached path
		for i, want := range []string{"d/renamed", "d/f"} {
			p, err := hs[i].FromHandle(fhA)
			if err != nil || strings.Join(p, "/") != want {
				t.Fatalf("round %d: workspace %d resolves the file to %v (%v), want %s", round, i, p, err, want)
			}
		}
	}
}
