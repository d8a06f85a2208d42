package billyunion

import (
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestDirCacheSeesChangesBehindTheUnion: directories resolved once are served from the
// directory cache, and a change made directly in a layer (a directory moved away, a
// directory added in the upper that shadows the lower one, opaque set, a whiteout) is
// seen by the very next lookup, never by a later one only.
func TestDirCacheSeesChangesBehindTheUnion(t *testing.T) { forCacheModes(t, testDirCacheSeesChanges) }

func testDirCacheSeesChanges(t *testing.T, mode cacheMode) {
	requireRoot(t)
	ls := newLayerSet(t, 1)
	ls.file("l1", "a/b/f", "lower f")
	ls.file("l1", "a/b/g", "lower g")
	fs := ls.openMode(mode, true)
	defer fs.Close()
	requireDirCache(t, fs)
	if got := readAll(t, fs, "a/b/f"); got != "lower f" {
		t.Fatalf("a/b/f = %q", got)
	}
	cachedDirs := func() int {
		fs.dirs.mu.Lock()
		defer fs.dirs.mu.Unlock()
		return fs.dirs.entries.Len()
	}
	if _, err := fs.Lstat("a/b/g"); err != nil {
		t.Fatal(err)
	}
	if n := cachedDirs(); n == 0 {
		t.Fatal("no directory cached after resolving a/b twice")
	}

	// The lower's a moves away: a/b/f is gone at once, a2/b/f is there.
	if err := os.Rename(ls.path("l1", "a"), ls.path("l1", "a2")); err != nil {
		t.Fatal(err)
	}
	_, err := fs.Lstat("a/b/f")
	wantErrno(t, "a/b/f after its directory moved in the lower", err, syscall.ENOENT)
	if got := readAll(t, fs, "a2/b/f"); got != "lower f" {
		t.Fatalf("a2/b/f = %q", got)
	}

	// An opaque upper a2/b hides the lower's files at once.
	if _, err := fs.Lstat("a2/b/g"); err != nil {
		t.Fatal(err)
	}
	ls.dir("u", "a2/b")
	ls.xattr("u", "a2/b", fs.x.Opaque(), "y")
	_, err = fs.Lstat("a2/b/g")
	wantErrno(t, "a2/b/g under an opaque upper directory", err, syscall.ENOENT)

	// A whiteout of a2 in the upper hides the whole tree at once.
	if err := os.RemoveAll(ls.path("u", "a2")); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, fs, "a2/b/f"); got != "lower f" {
		t.Fatalf("a2/b/f once the opaque upper is gone = %q", got)
	}
	ls.whiteout("u", "a2")
	_, err = fs.Lstat("a2/b/f")
	wantErrno(t, "a2/b/f under a whiteout of a2", err, syscall.ENOENT)
}

// TestDirCacheReleasesDescriptors: the cache holds a bounded number of descriptors and
// gives them all back when the union closes.
func TestDirCacheReleasesDescriptors(t *testing.T) {
	requireRoot(t)
	countFDs := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Fatal(err)
		}
		return len(ents)
	}
	ls := newLayerSet(t, 2)
	for i := range 3 * defaultDirEntries / 2 {
		ls.file("l1", "d"+itoa(i)+"/x/f", "f")
		ls.dir("l2", "d"+itoa(i)+"/x")
	}
	before := countFDs()
	fs := ls.open()
	for i := range 3 * defaultDirEntries / 2 {
		if _, err := fs.Lstat("d" + itoa(i) + "/x/f"); err != nil {
			t.Fatal(err)
		}
	}
	// Two parts per directory, two directories per path, at most defaultDirEntries kept.
	if open := countFDs() - before; open > 2*defaultDirEntries+64 {
		t.Errorf("%d descriptors open with %d directories cached at most", open, defaultDirEntries)
	}
	fs.Close()
	if leaked := countFDs() - before; leaked > 0 {
		t.Errorf("%d descriptors left open after Close", leaked)
	}
}

// TestRememberedIdentitiesFollowChangesBehindTheUnion: an identity remembered for a layer
// object is forgotten as soon as the layers change. A file replaced behind the union's
// back (its inode number may well be reused by the new file, which ext4 and tmpfs do) gets
// the new file's handle at the next Identify, and an origin record written behind its back
// changes the identity of an upper file at once.
func TestRememberedIdentitiesFollowChangesBehindTheUnion(t *testing.T) {
	forCacheModes(t, testRememberedIdentities)
}

func testRememberedIdentities(t *testing.T, mode cacheMode) {
	requireRoot(t)
	ls := newLayerSet(t, 1)
	ls.file("l1", "d/f", "lower f")
	ls.file("l1", "d/g", "lower g")
	ls.file("u", "d/h", "upper h")
	fs := ls.openMode(mode, true)
	defer fs.Close()
	requireDirCache(t, fs)
	identify := func(p string) Identity {
		t.Helper()
		id, err := fs.Identify(p)
		if err != nil {
			t.Fatalf("Identify(%s): %v", p, err)
		}
		return id
	}
	remembered := func() int {
		fs.dirs.mu.Lock()
		defer fs.dirs.mu.Unlock()
		return fs.dirs.identities.Len()
	}
	first := identify("d/f")
	// In the whole-cache mode, other processes writing to the layers' filesystem empty
	// the memory too (any event does): try a bounded number of times to see it hold an
	// identity.
	for try := 0; remembered() == 0; try++ {
		if try == 1000 {
			t.Fatal("nothing remembered after identifying d/f 1000 times")
		}
		if again := identify("d/f"); !again.ID.Equal(first.ID) || again.Ino != first.Ino {
			t.Fatalf("d/f identified again: %+v, then %+v", first, again)
		}
	}
	for round := range 20 {
		// Replace d/f directly in the lower: remove, then create a new file there.
		if err := os.Remove(ls.path("l1", "d/f")); err != nil {
			t.Fatal(err)
		}
		ls.file("l1", "d/f", "new f "+itoa(round))
		var st syscall.Stat_t
		if err := syscall.Lstat(ls.path("l1", "d/f"), &st); err != nil {
			t.Fatal(err)
		}
		now := identify("d/f")
		if now.ID.Equal(first.ID) {
			t.Fatalf("round %d: the replaced d/f still has the old file's handle", round)
		}
		if _, ino, _ := LayerObject(now.Info); ino != st.Ino {
			t.Fatalf("round %d: d/f identified as layer inode %d, the lower holds %d", round, ino, st.Ino)
		}
		first = now
	}

	// An upper file's identity follows its origin record: point d/h's at d/g.
	h := identify("d/h")
	g := identify("d/g")
	if h.ID.Equal(g.ID) {
		t.Fatal("d/h and d/g share an identity before any origin record")
	}
	noErr(t, "copy d/g up", fs.Chmod("d/g", 0o600)) // its upper copy gets an origin record
	rec := make([]byte, 256)
	n, err := unix.Lgetxattr(ls.path("u", "d/g"), fs.x.Origin(), rec)
	if err != nil {
		t.Fatalf("origin record of the copied-up d/g: %v", err)
	}
	if g2 := identify("d/g"); !g2.ID.Equal(g.ID) {
		t.Fatal("d/g's identity changed on copy-up")
	}
	ls.xattr("u", "d/h", fs.x.Origin(), string(rec[:n]))
	if h2 := identify("d/h"); !h2.ID.Equal(g.ID) {
		t.Fatalf("d/h after its origin record named d/g: %+v, want d/g's %+v", h2.ID, g.ID)
	}
}

// TestListedIdentitiesAreIdentify: the identity (ListedEntries) of every entry of a listing (lower and
// upper files, merged and pure directories, a copied-up file with an origin record)
// equals Identify of its path, whether it comes from the parts the listing's lookup found
// (nothing changed since) or from a lookup again (a change since); and an entry not yet
// identified whose name was given to another file behind the union's back answers ENOENT.
func TestListedIdentitiesAreIdentify(t *testing.T) { forCacheModes(t, testListedIdentities) }

func testListedIdentities(t *testing.T, mode cacheMode) {
	requireRoot(t)
	ls := newLayerSet(t, 1)
	ls.file("l1", "d/lower", "l")
	ls.file("l1", "d/copied", "c")
	ls.file("l1", "d/merged/x", "x")
	ls.file("u", "d/merged/y", "y")
	ls.file("u", "d/upper", "u")
	ls.file("l1", "d/sub/z", "z")
	fs := ls.openMode(mode, true)
	defer fs.Close()
	noErr(t, "copy d/copied up", fs.Chmod("d/copied", 0o600))
	check := func(when string, want int) {
		t.Helper()
		entries, err := fs.ReadDir("d")
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != want {
			t.Fatalf("%s: %d entries in d", when, len(entries))
		}
		// All of them from one ListedEntries, as a READDIRPLUS page identifies its entries.
		page := fs.ListedEntries("d")
		defer page.Close()
		for _, fi := range entries {
			listed, err := page.Identity(fi)
			if err != nil {
				t.Fatalf("%s: EntryIdentity(d/%s): %v", when, fi.Name(), err)
			}
			looked, err := fs.Identify("d/" + fi.Name())
			if err != nil {
				t.Fatal(err)
			}
			if !listed.ID.Equal(looked.ID) || listed.Ino != looked.Ino || listed.Dir != looked.Dir {
				t.Errorf("%s: d/%s listed as %+v, Identify says %+v", when, fi.Name(), listed, looked)
			}
		}
	}
	check("quiet", 5)
	ls.file("l1", "d/unrelated", "a change in the layers") // d's listing is now stale
	check("after a change", 6)
	// A listing none of whose entries was identified yet (an identified entry keeps its
	// identity: the snapshot is of a moment before later changes)...
	ls.file("l1", "d/another", "a")
	entries, err := fs.ReadDir("d")
	if err != nil {
		t.Fatal(err)
	}
	page := fs.ListedEntries("d") // made before the change, used after it
	defer page.Close()
	// ...then d/lower replaced directly in the lower: the entry names a gone object.
	if err := os.Remove(ls.path("l1", "d/lower")); err != nil {
		t.Fatal(err)
	}
	ls.file("l1", "d/lower", "another file")
	for _, fi := range entries {
		if fi.Name() != "lower" {
			continue
		}
		if _, err := page.Identity(fi); err != syscall.ENOENT {
			var st syscall.Stat_t
			_ = syscall.Lstat(ls.path("l1", "d/lower"), &st)
			if _, ino, _ := LayerObject(fi); ino != st.Ino { // the new file may have got the old inode
				t.Errorf("EntryIdentity of a replaced entry: %v, want ENOENT", err)
			}
		}
	}
}

// requireDirCache skips a test of the directory cache where fanotify filesystem marks are
// unavailable, and fails it in CI, which must be able to run it.
func requireDirCache(t *testing.T, fs *FS) {
	t.Helper()
	if fs.dirs.on() {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("directory cache off: fanotify filesystem marks unavailable")
	}
	t.Skip("directory cache off: fanotify filesystem marks unavailable")
}
