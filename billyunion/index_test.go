package billyunion

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/billyunion/layer"
)

func nlinkOf(t *testing.T, fs *FS, p string) uint64 {
	t.Helper()
	fi, err := fs.Lstat(p)
	if err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	return uint64(fi.Sys().(*syscall.Stat_t).Nlink)
}

func appendTo(t *testing.T, fs *FS, p, s string) {
	t.Helper()
	f, err := fs.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	noErr(t, "open for append "+p, err)
	_, err = f.Write([]byte(s))
	noErr(t, "write "+p, err)
	noErr(t, "close "+p, f.Close())
}

// indexEntry is the index entry name of the lower file p of ls's l1, and
// its stat (ok false when there is none).
func indexEntry(t *testing.T, ls *layerSet, p string) (string, unix.Stat_t, bool) {
	t.Helper()
	var zero [16]byte
	dir, err := layer.Open(filepath.Dir(ls.path("l1", p)))
	noErr(t, "open lower dir", err)
	defer dir.Close()
	// The union chose uuids for a fresh upper: the lower filesystem's.
	rec, err := layer.EncodeOrigin(dir.Root, filepath.Base(p), layer.FilesystemUUID(dir.Root))
	noErr(t, "encode", err)
	if _, err := unix.Lgetxattr(ls.path("u", ""), "trusted.overlay.uuid", make([]byte, 16)); err != nil {
		rec, _ = layer.EncodeOrigin(dir.Root, filepath.Base(p), zero)
	}
	n := hex.EncodeToString(rec)
	var st unix.Stat_t
	err = unix.Lstat(ls.path("w", "index/"+n), &st)
	return n, st, err == nil
}

func xattrOf(t *testing.T, path, attr string) string {
	t.Helper()
	b := make([]byte, 256)
	n, err := unix.Lgetxattr(path, attr, b)
	if err != nil {
		return "<" + err.Error() + ">"
	}
	return string(b[:n])
}

// TestIndexHardLinks follows the kernel's index=on (values checked against
// a 6.18 kernel overlay on the same steps): copying up one name of a lower
// file with two names puts the copy in the index and links it to the name;
// the other name shows the copy's data, the same inode number and link
// count; a later link copies up by linking the index entry; removing a lower
// name copies it up first; the index entry goes when the last name does.
func TestIndexHardLinks(t *testing.T) {
	requireRoot(t)
	ls := newLayerSet(t, 1)
	ls.file("l1", "a", "hello\n")
	noErr(t, "link", os.Link(ls.path("l1", "a"), ls.path("l1", "b")))
	ls.file("l1", "d/c", "solo\n")
	noErr(t, "link", os.Link(ls.path("l1", "d/c"), ls.path("l1", "c2")))
	fs := ls.open()

	lowerIno := ino(t, fs, "a")
	if ino(t, fs, "b") != lowerIno || nlinkOf(t, fs, "a") != 2 {
		t.Fatalf("before copy-up: a %d b %d nlink %d", lowerIno, ino(t, fs, "b"), nlinkOf(t, fs, "a"))
	}
	idA, err := fs.Identify("a")
	noErr(t, "identify a", err)
	if idB, err := fs.Identify("b"); err != nil || idB.ID.Key() != idA.ID.Key() {
		t.Fatalf("a and b: ObjectIDs %x and %x (%v)", idA.ID.Key(), idB.ID.Key(), err)
	}
	rb, err := fs.Open("b")
	noErr(t, "open b", err)
	defer rb.Close()

	appendTo(t, fs, "a", "more\n")
	if got := readAll(t, fs, "b"); got != "hello\nmore\n" {
		t.Fatalf("b after a write through a: %q", got)
	}
	buf := make([]byte, 64)
	n, _ := rb.ReadAt(buf, 0)
	if got := string(buf[:n]); got != "hello\nmore\n" {
		t.Fatalf("b opened before the copy-up reads %q", got)
	}
	for _, p := range []string{"a", "b"} {
		if ino(t, fs, p) != lowerIno || nlinkOf(t, fs, p) != 2 {
			t.Fatalf("%s after copy-up: ino %d (want %d) nlink %d (want 2)", p, ino(t, fs, p), lowerIno, nlinkOf(t, fs, p))
		}
	}
	for _, p := range []string{"a", "b"} {
		// The handle stays the lower inode's, for the copied name and the other.
		if id, err := fs.Identify(p); err != nil || id.ID.Key() != idA.ID.Key() || id.Ino != lowerIno {
			t.Fatalf("%s after copy-up: ObjectID %x ino %d (%v), want %x %d", p, id.ID.Key(), id.Ino, err, idA.ID.Key(), lowerIno)
		}
	}
	fis, err := fs.ReadDir("/")
	noErr(t, "readdir", err)
	for _, fi := range fis {
		if fi.Name() == "b" && (fi.Size() != 11 || fi.Sys().(*syscall.Stat_t).Ino != lowerIno) {
			t.Fatalf("listed b: size %d ino %d", fi.Size(), fi.Sys().(*syscall.Stat_t).Ino)
		}
	}
	idx, ist, ok := indexEntry(t, ls, "a")
	if !ok {
		t.Fatalf("no index entry %s", idx)
	}
	var ust unix.Stat_t
	noErr(t, "stat u/a", unix.Lstat(ls.path("u", "a"), &ust))
	if ust.Ino != ist.Ino || ust.Nlink != 2 {
		t.Fatalf("u/a inode %d nlink %d, index inode %d", ust.Ino, ust.Nlink, ist.Ino)
	}
	if _, err := os.Lstat(ls.path("u", "b")); !os.IsNotExist(err) {
		t.Fatalf("b copied up too: %v", err)
	}
	if v := xattrOf(t, ls.path("u", "a"), "trusted.overlay.nlink"); v != "U+0" {
		t.Fatalf("nlink xattr %q, want U+0", v)
	}
	if v := hex.EncodeToString([]byte(xattrOf(t, ls.path("u", "a"), "trusted.overlay.origin"))); v != idx {
		t.Fatalf("origin %s, index name %s", v, idx)
	}

	// A link from the other name: b is linked up from the index, e made.
	noErr(t, "link b e", fs.Link("b", "e"))
	for _, p := range []string{"a", "b", "e"} {
		if ino(t, fs, p) != lowerIno || nlinkOf(t, fs, p) != 3 {
			t.Fatalf("%s after link: ino %d nlink %d (want 3)", p, ino(t, fs, p), nlinkOf(t, fs, p))
		}
	}
	noErr(t, "stat u/b", unix.Lstat(ls.path("u", "b"), &ust))
	if ust.Ino != ist.Ino || ust.Nlink != 4 {
		t.Fatalf("u/b inode %d nlink %d", ust.Ino, ust.Nlink)
	}
	if v := xattrOf(t, ls.path("u", "b"), "trusted.overlay.nlink"); v != "U-1" {
		t.Fatalf("nlink xattr %q, want U-1", v)
	}

	// Removing a lower name never copied up: copied up to the index first.
	noErr(t, "unlink c2", fs.Remove("c2"))
	if nlinkOf(t, fs, "d/c") != 1 || readAll(t, fs, "d/c") != "solo\n" {
		t.Fatalf("d/c after c2 removed: nlink %d", nlinkOf(t, fs, "d/c"))
	}
	cidx, cst, ok := indexEntry(t, ls, "d/c")
	if !ok || cst.Nlink != 1 {
		t.Fatalf("index of c: %s %v nlink %d", cidx, ok, cst.Nlink)
	}
	if v := xattrOf(t, ls.path("w", "index/"+cidx), "trusted.overlay.nlink"); v != "U+0" {
		t.Fatalf("c's index nlink xattr %q, want U+0", v)
	}
	if _, err := os.Lstat(ls.path("u", "d/c")); !os.IsNotExist(err) {
		t.Fatalf("d/c copied up: %v", err)
	}

	// A restart keeps all of it.
	fs.Close()
	fs = ls.open()
	if ino(t, fs, "b") != lowerIno || nlinkOf(t, fs, "b") != 3 || nlinkOf(t, fs, "d/c") != 1 {
		t.Fatalf("after restart: b ino %d nlink %d, d/c nlink %d", ino(t, fs, "b"), nlinkOf(t, fs, "b"), nlinkOf(t, fs, "d/c"))
	}

	noErr(t, "rm a", fs.Remove("a"))
	if nlinkOf(t, fs, "b") != 2 {
		t.Fatalf("b after rm a: nlink %d", nlinkOf(t, fs, "b"))
	}
	noErr(t, "rm e", fs.Remove("e"))
	if nlinkOf(t, fs, "b") != 1 {
		t.Fatalf("b after rm e: nlink %d", nlinkOf(t, fs, "b"))
	}
	if _, _, ok := indexEntry(t, ls, "a"); !ok {
		t.Fatal("index entry gone while b remains")
	}
	noErr(t, "rm b", fs.Remove("b"))
	if n, _, ok := indexEntry(t, ls, "a"); ok {
		t.Fatalf("index entry %s left after every name went", n)
	}
	if names(t, fs, "/") != "d" {
		t.Fatalf("root lists %q", names(t, fs, "/"))
	}
}

// TestIndexCoverByRename: renaming onto a lower name of a file with two
// names copies that name up first, so its other name keeps the right count.
func TestIndexCoverByRename(t *testing.T) {
	requireRoot(t)
	ls := newLayerSet(t, 1)
	ls.file("l1", "a", "x")
	noErr(t, "link", os.Link(ls.path("l1", "a"), ls.path("l1", "b")))
	ls.file("u", "n", "new")
	fs := ls.open()
	noErr(t, "rename n a", fs.Rename("n", "a"))
	if nlinkOf(t, fs, "b") != 1 || readAll(t, fs, "a") != "new" || readAll(t, fs, "b") != "x" {
		t.Fatalf("b nlink %d", nlinkOf(t, fs, "b"))
	}
	if _, st, ok := indexEntry(t, ls, "a"); !ok || st.Nlink != 1 {
		t.Fatalf("index of a: %v nlink %d", ok, st.Nlink)
	}
	// Renaming over the last name removes the index entry.
	ls.file("u", "m", "m")
	noErr(t, "rename m b", fs.Rename("m", "b"))
	if n, _, ok := indexEntry(t, ls, "a"); ok {
		t.Fatalf("index entry %s left", n)
	}
}

// TestIndexOff: with index=off a lower file's names come apart on copy-up,
// as in the kernel without index, and nothing is written to WORK/index.
func TestIndexOff(t *testing.T) {
	requireRoot(t)
	ls := newLayerSet(t, 1)
	ls.file("l1", "a", "hello\n")
	noErr(t, "link", os.Link(ls.path("l1", "a"), ls.path("l1", "b")))
	fs := ls.openWith(Options{Index: "off"})
	appendTo(t, fs, "a", "more\n")
	if got := readAll(t, fs, "b"); got != "hello\n" {
		t.Fatalf("b: %q", got)
	}
	if _, err := os.Lstat(ls.path("w", "index")); !os.IsNotExist(err) {
		t.Fatalf("index dir made with index=off: %v", err)
	}
	if _, err := New(Options{Lowers: []string{ls.path("l1", "")}, Upper: ls.path("u", ""), Work: ls.path("w", ""), Index: "maybe"}); err == nil {
		t.Fatal("index=maybe accepted")
	}
}

// TestIndexRefusesOtherLayers: an upper used with index=on refuses other
// lower layers, and a work directory refuses another upper, with one line
// saying why, as the kernel refuses the mount.
func TestIndexRefusesOtherLayers(t *testing.T) {
	requireRoot(t)
	ls := newLayerSet(t, 1)
	ls.file("l1", "a", "x")
	ls.open().Close()
	other := t.TempDir()
	_, err := New(Options{Lowers: []string{other}, Upper: ls.path("u", ""), Work: ls.path("w", ""), XattrPrefix: "trusted.overlay."})
	if err == nil || !strings.Contains(err.Error(), "origin does not match") || strings.Contains(err.Error(), "\n") {
		t.Fatalf("other lower: %v", err)
	}
	// index=off does not look.
	fs, err := New(Options{Lowers: []string{other}, Upper: ls.path("u", ""), Work: ls.path("w", ""), XattrPrefix: "trusted.overlay.", Index: "off"})
	noErr(t, "index=off with other lowers", err)
	fs.Close()
	upper2 := t.TempDir()
	_, err = New(Options{Lowers: []string{ls.path("l1", "")}, Upper: upper2, Work: ls.path("w", ""), XattrPrefix: "trusted.overlay."})
	if err == nil || !strings.Contains(err.Error(), "belongs to another upper") {
		t.Fatalf("other upper: %v", err)
	}
}

// TestIndexConcurrentCopyUps: names of one lower file copied up at once
// (writes through each) end as links of one upper inode, each write kept.
func TestIndexConcurrentCopyUps(t *testing.T) {
	requireRoot(t)
	ls := newLayerSet(t, 1)
	ls.file("l1", "f0", "")
	names := []string{"f0"}
	for i := 1; i < 6; i++ {
		n := "d" + itoa(i%2) + "/f" + itoa(i)
		ls.dir("l1", filepath.Dir(n))
		noErr(t, "link", os.Link(ls.path("l1", "f0"), ls.path("l1", n)))
		names = append(names, n)
	}
	fs := ls.open()
	done := make(chan error)
	for _, n := range names {
		go func() {
			f, err := fs.OpenFile(n, os.O_WRONLY|os.O_APPEND, 0)
			if err == nil {
				_, err = f.Write([]byte(n + "\n"))
				if cerr := f.Close(); err == nil {
					err = cerr
				}
			}
			done <- err
		}()
	}
	for range names {
		noErr(t, "append", <-done)
	}
	want := readAll(t, fs, "f0")
	for _, n := range names {
		if got := readAll(t, fs, n); got != want || nlinkOf(t, fs, n) != uint64(len(names)) || ino(t, fs, n) != ino(t, fs, "f0") {
			t.Fatalf("%s: %q (f0 %q), nlink %d", n, got, want, nlinkOf(t, fs, n))
		}
	}
	if c := strings.Count(want, "\n"); c != len(names) {
		t.Fatalf("%d writes kept of %d: %q", c, len(names), want)
	}
	_, st, ok := indexEntry(t, ls, "f0")
	if !ok || st.Nlink != uint64(len(names)+1) {
		t.Fatalf("index entry: %v nlink %d", ok, st.Nlink)
	}
}

// TestIndexUserxattr: with the user.overlay. prefix (the kernel's
// userxattr, which 6.18 mounts with index=on) the index works alike, its
// records under that prefix.
func TestIndexUserxattr(t *testing.T) {
	requireRoot(t)
	ls := newLayerSet(t, 1)
	ls.file("l1", "a", "x")
	noErr(t, "link", os.Link(ls.path("l1", "a"), ls.path("l1", "b")))
	fs, err := New(Options{Lowers: []string{ls.path("l1", "")}, Upper: ls.path("u", ""), Work: ls.path("w", ""), XattrPrefix: "user.overlay."})
	noErr(t, "new", err)
	defer fs.Close()
	appendTo(t, fs, "b", "y")
	if readAll(t, fs, "a") != "xy" || nlinkOf(t, fs, "a") != 2 || ino(t, fs, "a") != ino(t, fs, "b") {
		t.Fatalf("a: %q nlink %d", readAll(t, fs, "a"), nlinkOf(t, fs, "a"))
	}
	if v := xattrOf(t, ls.path("u", "b"), "user.overlay.nlink"); v != "U+0" {
		t.Fatalf("user.overlay.nlink %q", v)
	}
	if v := xattrOf(t, ls.path("w", "index"), "user.overlay.upper"); len(v) < 21 {
		t.Fatalf("index dir's upper record %q", v)
	}
}

// TestIndexNlinkAfterInterruptedCopyUp: a copy-up of an indexed file records the union's
// link count relative to the lower inode's ("L±N"), which its link into the index and
// its rename to the name do not change, and only then relative to the upper inode's
// ("U±N"). A process killed between the two leaves the lower form, still right, but a
// later link or removal changes the upper inode's count and not the lower one's: unless
// the count is rewritten relative to the upper inode before such a change (the kernel's
// ovl_nlink_start), it stays off by one for good (tests/crash found h2 showing 2 links
// after the other name was removed).
func TestIndexNlinkAfterInterruptedCopyUp(t *testing.T) {
	requireRoot(t)
	ls := newLayerSet(t, 1)
	ls.file("l1", "h1", "h")
	noErr(t, "link", os.Link(ls.path("l1", "h1"), ls.path("l1", "h2")))
	ls.file("l1", "d/x", "x")
	fs := ls.openWith(Options{Index: "on"})
	appendTo(t, fs, "h1", "1") // copy-up through the index
	fs.Close()
	// As a kill between the copy-up's rename and its last step leaves it.
	noErr(t, "lower form", unix.Lsetxattr(ls.path("u", "h1"), "trusted.overlay.nlink", []byte("L+0"), 0))
	fs = ls.openWith(Options{Index: "on"})
	if n := nlinkOf(t, fs, "h2"); n != 2 {
		t.Fatalf("after the interrupted copy-up h2 has %d links, want 2", n)
	}
	noErr(t, "link h1 k", fs.Link("h1", "k"))
	for _, p := range []string{"h1", "h2", "k"} {
		if n := nlinkOf(t, fs, p); n != 3 {
			t.Errorf("after a link %s has %d links, want 3", p, n)
		}
	}
	noErr(t, "remove k", fs.Remove("k"))
	noErr(t, "rename h1 over d/x", fs.Rename("h1", "d/x"))
	noErr(t, "remove d/x", fs.Remove("d/x"))
	if n := nlinkOf(t, fs, "h2"); n != 1 {
		t.Errorf("with one name left h2 has %d links, want 1", n)
	}
	fs.Close()
	fs = ls.openWith(Options{Index: "on"})
	if n := nlinkOf(t, fs, "h2"); n != 1 {
		t.Errorf("after a restart h2 has %d links, want 1", n)
	}
}

// TestIndexCleanedAtStart: as the kernel at mount, a start removes index
// entries whose origin is not their name and orphans (the only link left,
// a union count of zero), keeps live ones, and refuses a name that is no
// origin record.
func TestIndexCleanedAtStart(t *testing.T) {
	requireRoot(t)
	ls := newLayerSet(t, 1)
	for _, n := range []string{"a", "c", "e"} {
		ls.file("l1", n, n)
		noErr(t, "link", os.Link(ls.path("l1", n), ls.path("l1", n+"2")))
	}
	fs := ls.open()
	for _, n := range []string{"a", "c", "e"} {
		appendTo(t, fs, n, "+")
	}
	fs.Close()
	ia, _, _ := indexEntry(t, ls, "a")
	ic, _, _ := indexEntry(t, ls, "c")
	ie, _, _ := indexEntry(t, ls, "e")
	// a: an orphan, as a crash after its last name went would leave it.
	noErr(t, "rm", os.Remove(ls.path("u", "a")))
	noErr(t, "nlink", unix.Lsetxattr(ls.path("w", "index/"+ia), "trusted.overlay.nlink", []byte("U-1"), 0))
	// c: an origin that is not its name.
	noErr(t, "rm", os.Remove(ls.path("u", "c")))
	noErr(t, "origin", unix.Lsetxattr(ls.path("w", "index/"+ic), "trusted.overlay.origin", []byte("bogus"), 0))
	// e stays: its upper copy is there (and its other lower name shows it).
	fs = ls.open()
	for n, want := range map[string]bool{ia: false, ic: false, ie: true} {
		if _, err := os.Lstat(ls.path("w", "index/"+n)); (err == nil) != want {
			t.Errorf("index entry %s kept %v, want %v", n, err == nil, want)
		}
	}
	if readAll(t, fs, "e2") != "e+" {
		t.Fatalf("e2 reads %q", readAll(t, fs, "e2"))
	}
	fs.Close()
	ls.file("w", "index/junk", "")
	if _, err := New(Options{Lowers: []string{ls.path("l1", "")}, Upper: ls.path("u", ""), Work: ls.path("w", ""), XattrPrefix: "trusted.overlay."}); err == nil || !strings.Contains(err.Error(), "junk") {
		t.Fatalf("a junk index entry: %v", err)
	}
}
