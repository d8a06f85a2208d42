package billyunion

import (
	"os"
	"syscall"
	"testing"
)

// TestDirCacheSeesChangesBehindTheUnion: directories resolved once are served from the
// directory cache, and a change made directly in a layer (a directory moved away, a
// directory added in the upper that shadows the lower one, opaque set, a whiteout) is
// seen by the very next lookup, never by a later one only.
func TestDirCacheSeesChangesBehindTheUnion(t *testing.T) {
	requireRoot(t)
	ls := newLayerSet(t, 1)
	ls.file("l1", "a/b/f", "lower f")
	ls.file("l1", "a/b/g", "lower g")
	fs := ls.open()
	defer fs.Close()
	if !fs.dirs.on() {
		if os.Getenv("CI") == "true" {
			t.Fatal("directory cache off: fanotify filesystem marks unavailable")
		}
		t.Skip("directory cache off: fanotify filesystem marks unavailable")
	}
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
