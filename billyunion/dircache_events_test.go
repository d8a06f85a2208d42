package billyunion

import (
	"encoding/binary"
	"errors"
	"os"
	"path"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// cachePerEventNoFIDs stands, in tests, for the per-event mode of a kernel that gives
// per-event reports but not objects' handles with them.
const cachePerEventNoFIDs cacheMode = 100

func modeName(mode cacheMode) string {
	if mode == cachePerEventNoFIDs {
		return "per-event-without-fids"
	}
	return mode.String()
}

// forCacheModes runs f once per way the directory cache invalidates: per event (with
// and without objects' handles), and the whole-cache fallback of kernels or filesystems
// without per-event reports.
func forCacheModes(t *testing.T, f func(t *testing.T, mode cacheMode)) {
	for _, mode := range []cacheMode{cachePerEvent, cachePerEventNoFIDs, cacheWhole} {
		t.Run(modeName(mode), func(t *testing.T) { f(t, mode) })
	}
}

// openMode opens the union with its directory cache in mode, skipping (failing in CI)
// where the kernel cannot give it. With churn set, unrelated changes run on the layers'
// filesystem until the test ends (startUnrelatedChurn), in the per-event mode only:
// there they must change nothing, in the whole mode they would keep the cache empty.
func (ls *layerSet) openMode(mode cacheMode, churn bool) *FS {
	ls.t.Helper()
	fs := ls.open()
	fs.dirs.close()
	if mode == cachePerEventNoFIDs {
		fs.dirs = openDirCache(fs.rootPaths, fs.layers, cachePerEvent, false)
	} else {
		fs.dirs = newDirCache(fs.rootPaths, fs.layers, mode)
	}
	requireDirCache(ls.t, fs)
	got := fs.dirs.mode
	if mode == cachePerEventNoFIDs && got == cachePerEvent && !fs.dirs.objectFIDs {
		got = mode
	}
	if got != mode {
		msg := "directory cache mode " + fs.dirs.mode.String() + ", not " + modeName(mode) + ": no per-event fanotify reports"
		if os.Getenv("CI") == "true" {
			ls.t.Fatal(msg)
		}
		ls.t.Skip(msg)
	}
	if churn && mode != cacheWhole {
		startUnrelatedChurn(ls.t, filepath.Dir(ls.root))
	}
	return fs
}

// startUnrelatedChurn keeps changing a directory of its own under parent (creates,
// chmods, renames, removes of files and directories: every kind of event the cache
// reads) until the test ends, about one round a millisecond. It returns the rounds done.
func startUnrelatedChurn(t testing.TB, parent string) *atomic.Int64 {
	t.Helper()
	dir, err := os.MkdirTemp(parent, "churn-")
	if err != nil {
		t.Fatal(err)
	}
	var rounds atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for k := 0; ; k++ {
			select {
			case <-stop:
				return
			default:
			}
			f, g, d := filepath.Join(dir, "f"+itoa(k%16)), filepath.Join(dir, "g"+itoa(k%16)), filepath.Join(dir, "d"+itoa(k%16))
			_ = os.WriteFile(f, nil, 0o644)
			_ = os.Chmod(f, 0o600)
			_ = os.Rename(f, g)
			_ = os.Remove(g)
			_ = os.Mkdir(d, 0o755)
			_ = os.Remove(d)
			rounds.Add(1)
			time.Sleep(time.Millisecond)
		}
	}()
	t.Cleanup(func() {
		close(stop)
		wg.Wait()
		os.RemoveAll(dir)
	})
	return &rounds
}

// newQuietLayerSet is newLayerSet on tmpfs (/dev/shm), whose events are the test's own:
// the root filesystem of a shared machine can queue events faster than a test reads
// them, and an overflow empties the cache (skipped where there is no /dev/shm).
func newQuietLayerSet(t *testing.T, lowers int) *layerSet {
	t.Helper()
	root, err := os.MkdirTemp("/dev/shm", "ovlnfs-test-")
	if err != nil {
		t.Skip("no /dev/shm:", err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	ls := &layerSet{t: t, root: filepath.Join(root, "layers"), n: lowers}
	for _, d := range append(ls.lowerNames(), "u", "w") {
		ls.dir(d, "")
	}
	return ls
}

// waitEvents waits until the cache has read at least n more events than it had.
func waitEvents(t *testing.T, fs *FS, n uint64) {
	t.Helper()
	start := fs.DirCacheStats().Events
	for deadline := time.Now().Add(10 * time.Second); fs.DirCacheStats().Events < start+n; {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d events read in 10 s", n)
		}
		fs.dirs.generation()
		time.Sleep(5 * time.Millisecond)
	}
}

// TestDirCacheUnrelatedChurnInvalidatesNothing: changes elsewhere on the layers'
// filesystem leave the per-event cache's directories and identities in place (lookups
// hit, nothing is dropped or purged), and empty the whole-cache fallback's again and
// again, as they always did there.
func TestDirCacheUnrelatedChurnInvalidatesNothing(t *testing.T) {
	requireRoot(t)
	forCacheModes(t, func(t *testing.T, mode cacheMode) {
		ls := newQuietLayerSet(t, 1)
		ls.file("l1", "a/b/c/f", "f")
		ls.file("u", "a/b/c/g", "g")
		fs := ls.openMode(mode, false)
		startUnrelatedChurn(t, filepath.Dir(ls.root))
		waitEvents(t, fs, 200)
		if _, err := fs.Lstat("a/b/c/f"); err != nil {
			t.Fatal(err)
		}
		if _, err := fs.Identify("a/b/c/g"); err != nil {
			t.Fatal(err)
		}
		// At least 2,000 rounds, and on until 300 events were read meanwhile (or 10 s).
		n := uint64(0)
		before := fs.DirCacheStats()
		for deadline := time.Now().Add(10 * time.Second); n < 2000 || fs.DirCacheStats().Events < before.Events+300 && time.Now().Before(deadline); n++ {
			if _, err := fs.Lstat("a/b/c/f"); err != nil {
				t.Fatal(err)
			}
			if _, err := fs.Identify("a/b/c/g"); err != nil {
				t.Fatal(err)
			}
		}
		after := fs.DirCacheStats()
		t.Logf("%s: %d events read during %d lookups and identifies; %d purges, %d directories and %d identities dropped; %d hits, %d identity hits",
			modeName(mode), after.Events-before.Events, n, after.Purges-before.Purges, after.DirsInvalidated-before.DirsInvalidated,
			after.IdentitiesInvalidated-before.IdentitiesInvalidated, after.Hits-before.Hits, after.IdentityHits-before.IdentityHits)
		if after.Events == before.Events {
			t.Fatal("no event read while the churn ran")
		}
		if mode == cacheWhole {
			if after.Purges == before.Purges {
				t.Fatal("the whole-cache mode did not empty the cache at events")
			}
			return
		}
		if after.Purges != before.Purges || after.DirsInvalidated != before.DirsInvalidated || after.IdentitiesInvalidated != before.IdentitiesInvalidated {
			t.Fatalf("unrelated events invalidated the cache: %+v, then %+v", before, after)
		}
		// Each Lstat and each Identify finds a/b/c cached; each Identify remembers g.
		if hits := after.Hits - before.Hits; hits < 2*n {
			t.Fatalf("%d directory hits in %d lookups", hits, 2*n)
		}
		if hits := after.IdentityHits - before.IdentityHits; hits < n {
			t.Fatalf("%d identity hits in %d identifies", hits, n)
		}
	})
}

// TestDirCacheFollowsChangesBehindTheUnionUnderChurn: with unrelated churn on the same
// filesystem, every kind of change made in the layers behind the union's back, or
// through it, is seen by the very next lookup: an ancestor of cached directories
// renamed or removed, a cached directory replaced by another, its mode changed, an
// entry added to it, a copy-up of a file and of a directory, a rename through the
// union, a file replaced under a remembered identity.
func TestDirCacheFollowsChangesBehindTheUnionUnderChurn(t *testing.T) {
	requireRoot(t)
	forCacheModes(t, func(t *testing.T, mode cacheMode) {
		ls := newLayerSet(t, 2)
		ls.file("l1", "x/y/z/w/f", "f")
		ls.dir("l2", "x/y/z")
		ls.file("l1", "r/s/t/f", "f")
		ls.file("l1", "q/sub/f", "old")
		ls.file("l1", "p/q/f", "f")
		fs := ls.openMode(mode, false)
		startUnrelatedChurn(t, filepath.Dir(ls.root))
		warm := func(p string) Identity {
			t.Helper()
			var id Identity
			for range 3 {
				var err error
				if id, err = fs.Identify(p); err != nil {
					t.Fatalf("Identify(%s): %v", p, err)
				}
			}
			return id
		}
		gone := func(what, p string) {
			t.Helper()
			_, err := fs.Lstat(p)
			wantErrno(t, what+": "+p, err, syscall.ENOENT)
			_, err = fs.Identify(p)
			wantErrno(t, what+": Identify "+p, err, syscall.ENOENT)
		}

		// An ancestor of cached directories renamed in the top lower: the lower part
		// of x/y/z (in l2) stays, the rest moves with x.
		f := warm("x/y/z/w/f")
		warm("x/y/z/w")
		if err := os.Rename(ls.path("l1", "x"), ls.path("l1", "x2")); err != nil {
			t.Fatal(err)
		}
		gone("x renamed in the lower", "x/y/z/w/f")
		gone("x renamed in the lower", "x/y/z/w")
		if _, err := fs.Lstat("x/y/z"); err != nil {
			t.Fatalf("x/y/z, still in l2: %v", err)
		}
		if f2 := warm("x2/y/z/w/f"); !f2.ID.Equal(f.ID) {
			t.Fatal("x2/y/z/w/f is not the object x/y/z/w/f was")
		}

		// A directory with cached descendants removed.
		warm("r/s/t/f")
		if err := os.RemoveAll(ls.path("l1", "r/s")); err != nil {
			t.Fatal(err)
		}
		gone("r/s removed in the lower", "r/s/t/f")
		gone("r/s removed in the lower", "r/s/t")
		gone("r/s removed in the lower", "r/s")

		// A cached directory replaced by another of the same name.
		sub := warm("q/sub")
		warm("q/sub/f")
		if err := os.RemoveAll(ls.path("l1", "q/sub")); err != nil {
			t.Fatal(err)
		}
		ls.file("l1", "q/sub/f", "new")
		if got := readAll(t, fs, "q/sub/f"); got != "new" {
			t.Fatalf("q/sub/f after q/sub was replaced = %q", got)
		}
		if now := warm("q/sub"); now.ID.Equal(sub.ID) {
			t.Fatal("the replaced q/sub kept the old directory's handle")
		}

		// A cached directory's own attributes, and an entry added to it: what Identify
		// reports of it is the disk's.
		warm("p/q/f")
		warm("p/q")
		if err := os.Chmod(ls.path("l1", "p/q"), 0o700); err != nil {
			t.Fatal(err)
		}
		if id := warm("p/q"); id.Info.Mode().Perm() != 0o700 {
			t.Fatalf("p/q's mode after a chmod in the lower: %v", id.Info.Mode())
		}
		if err := os.Mkdir(ls.path("l1", "p/q/new"), 0o755); err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Lstat(ls.path("l1", "p/q"), &st); err != nil {
			t.Fatal(err)
		}
		id, err := fs.Identify("p/q")
		if err != nil {
			t.Fatal(err)
		}
		if got := id.Info.Sys().(*syscall.Stat_t); got.Nlink != uint64(st.Nlink) || got.Mtim != syscall.Timespec(st.Mtim) {
			t.Fatalf("p/q after a mkdir in it: nlink %d mtime %v, the lower has %d %v", got.Nlink, got.Mtim, st.Nlink, st.Mtim)
		}
		if got := names(t, fs, "p/q"); got != "f new" {
			t.Fatalf("p/q lists %q", got)
		}

		// Copy-up of a file and of a directory through the union keeps identities and
		// what is below.
		pf := warm("p/q/f")
		noErr(t, "chmod p/q/f", fs.Chmod("p/q/f", 0o600))
		if now := warm("p/q/f"); !now.ID.Equal(pf.ID) || now.Info.Mode().Perm() != 0o600 {
			t.Fatalf("p/q/f after its copy-up: %+v, was %+v", now, pf)
		}
		y := warm("x2/y")
		noErr(t, "chmod x2/y", fs.Chmod("x2/y", 0o750))
		if now := warm("x2/y"); !now.ID.Equal(y.ID) || now.Info.Mode().Perm() != 0o750 {
			t.Fatalf("x2/y after its copy-up: %+v, was %+v", now, y)
		}
		if got := readAll(t, fs, "x2/y/z/w/f"); got != "f" {
			t.Fatalf("x2/y/z/w/f below the copied-up x2/y = %q", got)
		}

		// A rename through the union.
		noErr(t, "rename x2/y moved", fs.Rename("x2/y", "moved"))
		gone("x2/y renamed", "x2/y/z/w/f")
		if now := warm("moved/z/w/f"); !now.ID.Equal(f.ID) {
			t.Fatal("moved/z/w/f is not the object x/y/z/w/f was")
		}

		// A file replaced under its remembered identity, behind the union's back.
		old := warm("moved/z/w/f")
		target := ls.path("l1", "x2/y/z/w/f")
		if err := os.Remove(target); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(target, []byte("other"), 0o644); err != nil {
			t.Fatal(err)
		}
		now := warm("moved/z/w/f")
		if _, ino, _ := LayerObject(now.Info); now.ID.Equal(old.ID) {
			t.Fatalf("moved/z/w/f replaced in the lower kept the old handle (layer inode %d)", ino)
		}
		if got := readAll(t, fs, "moved/z/w/f"); got != "other" {
			t.Fatalf("moved/z/w/f = %q", got)
		}
	})
}

// TestDirCacheOverflowPurges: past the kernel's queue bound the cache gets an overflow
// event instead of the changes, and empties itself: nothing stale survives.
func TestDirCacheOverflowPurges(t *testing.T) {
	requireRoot(t)
	// On tmpfs, where 17,000 changes take a fraction of a second.
	ls := newQuietLayerSet(t, 1)
	root := filepath.Dir(ls.root)
	ls.file("l1", "a/b/f", "f")
	fs := ls.openMode(cachePerEvent, false)
	if _, err := fs.Lstat("a/b/f"); err != nil {
		t.Fatal(err)
	}
	if s := fs.DirCacheStats(); s.Dirs == 0 {
		t.Fatal("nothing cached")
	}
	before := fs.DirCacheStats()
	// More events than the default queue bound (16384) with nothing reading them (each
	// a new name: the kernel merges events naming the same entry), then a change that
	// matters.
	dir := filepath.Join(root, "other")
	ls.dir("..", "other")
	for i := range 17000 {
		if err := os.Mkdir(filepath.Join(dir, itoa(i)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Rename(ls.path("l1", "a/b"), ls.path("l1", "a/c")); err != nil {
		t.Fatal(err)
	}
	_, err := fs.Lstat("a/b/f")
	wantErrno(t, "a/b/f after a/b moved", err, syscall.ENOENT)
	if after := fs.DirCacheStats(); after.Purges == before.Purges {
		t.Fatalf("no purge after 17,000 unread events: %+v", after)
	}
	if got := readAll(t, fs, "a/c/f"); got != "f" {
		t.Fatalf("a/c/f = %q", got)
	}
}

// TestParseEvents: the reader of fanotify's records names the entry of a well-formed
// event and answers "everything" for what it cannot read: a short or inconsistent
// buffer, an overflow, an event without a name record.
func TestParseEvents(t *testing.T) {
	event := func(mask uint64, recs ...[]byte) []byte {
		var body []byte
		for _, r := range recs {
			body = append(body, r...)
		}
		b := binary.NativeEndian.AppendUint32(nil, uint32(metaLen+len(body)))
		b = append(b, metaVersion, 0)
		b = binary.NativeEndian.AppendUint16(b, metaLen)
		b = binary.NativeEndian.AppendUint64(b, mask)
		b = binary.NativeEndian.AppendUint32(b, ^uint32(0)) // FAN_NOFD
		b = binary.NativeEndian.AppendUint32(b, 1)
		return append(b, body...)
	}
	record := func(typ byte, fsid [8]byte, htype int32, handle []byte, name string) []byte {
		body := append(fsid[:], binary.NativeEndian.AppendUint32(nil, uint32(len(handle)))...)
		body = binary.NativeEndian.AppendUint32(body, uint32(htype))
		body = append(append(body, handle...), name...)
		if name != "" {
			body = append(body, 0)
		}
		for (infoHeaderLen+len(body))%4 != 0 {
			body = append(body, 0)
		}
		h := []byte{typ, 0}
		h = binary.NativeEndian.AppendUint16(h, uint16(infoHeaderLen+len(body)))
		return append(h, body...)
	}
	fsid := [8]byte{1, 2, 3, 4, 5, 6, 7, 8}
	handle := []byte{9, 9, 9, 9, 8, 8, 8, 8}
	good := event(unix.FAN_CREATE, record(unix.FAN_EVENT_INFO_TYPE_DFID_NAME, fsid, 1, handle, "name"))
	want := evKey{dir: fileKey(fsid, 1, handle), name: "name"}
	parse := func(b []byte) []fanEvent {
		var got []fanEvent
		parseEvents(b, func(ev fanEvent) { got = append(got, ev) })
		return got
	}
	if got := parse(append(append([]byte(nil), good...), good...)); len(got) != 2 || got[0].all || got[0].key != want || got[1].key != want {
		t.Fatalf("two events parsed as %+v, want %+v twice", got, want)
	}
	self := []byte{7, 7, 7, 7}
	both := event(unix.FAN_ATTRIB, record(unix.FAN_EVENT_INFO_TYPE_DFID_NAME, fsid, 1, handle, "name"), record(unix.FAN_EVENT_INFO_TYPE_FID, fsid, 1, self, ""))
	if got := parse(both); len(got) != 1 || got[0].all || got[0].key != want || got[0].self != fileKey(fsid, 1, self) {
		t.Fatalf("an event with a name and an object record parsed as %+v", got)
	}
	if got := parse(event(unix.FAN_DELETE_SELF, record(unix.FAN_EVENT_INFO_TYPE_FID, fsid, 1, self, ""))); len(got) != 1 || got[0].all || got[0].key != (evKey{dir: fileKey(fsid, 1, self), name: selfName}) {
		t.Fatalf("an event with an object record alone parsed as %+v", got)
	}
	bad := map[string][]byte{
		"short":        good[:10],
		"length past":  append(binary.NativeEndian.AppendUint32(nil, 1000), good[4:]...),
		"overflow":     event(unix.FAN_Q_OVERFLOW),
		"no record":    event(unix.FAN_CREATE),
		"dfid only":    event(unix.FAN_CREATE, record(unix.FAN_EVENT_INFO_TYPE_DFID, fsid, 1, handle, "")),
		"no name":      event(unix.FAN_CREATE, record(unix.FAN_EVENT_INFO_TYPE_DFID_NAME, fsid, 1, handle, "")),
		"handle past":  event(unix.FAN_CREATE, append(record(unix.FAN_EVENT_INFO_TYPE_DFID_NAME, fsid, 1, handle, "n")[:12], 0xff, 0xff, 0, 0)),
		"bad version":  append(append([]byte(nil), good[:4]...), append([]byte{9}, good[5:]...)...),
		"record short": event(unix.FAN_CREATE, []byte{2, 0, 2, 0}),
	}
	for what, b := range bad {
		got := parse(b)
		if len(got) == 0 || !got[len(got)-1].all {
			t.Errorf("%s: parsed as %+v, want an event invalidating everything", what, got)
		}
	}
}

// TestDirCacheSeesRedirectTargetAppear: a cached directory whose upper part redirects
// to a name no lower layer holds merges with a directory created at that name behind
// the union's back (the event names the redirect's target, not the union name).
func TestDirCacheSeesRedirectTargetAppear(t *testing.T) {
	requireRoot(t)
	forCacheModes(t, func(t *testing.T, mode cacheMode) {
		ls := newLayerSet(t, 1)
		ls.file("u", "a/moved/up", "u")
		ls.dir("l1", "a")
		ls.xattr("u", "a/moved", "trusted.overlay.redirect", "orig")
		fs := ls.openMode(mode, true)
		for range 3 {
			if got := names(t, fs, "a/moved"); got != "up" {
				t.Fatalf("a/moved lists %q", got)
			}
			if _, err := fs.Lstat("a/moved/up"); err != nil {
				t.Fatal(err)
			}
		}
		ls.file("l1", "a/orig/low", "l")
		if got := readAll(t, fs, "a/moved/low"); got != "l" {
			t.Fatalf("a/moved/low = %q", got)
		}
		if got := names(t, fs, "a/moved"); got != "low up" {
			t.Fatalf("a/moved lists %q once the redirect's target exists", got)
		}
	})
}

// TestRememberedIdentityOfHardLinkedUpperFile: an upper file with two names whose origin
// record is written behind the union's back through the other name (the event names
// that link, not the one it was identified by) gets the new identity at once: the cache
// watches an upper file by its own handle too.
func TestRememberedIdentityOfHardLinkedUpperFile(t *testing.T) {
	requireRoot(t)
	// Not per event without objects' handles, where such a change is not seen
	// (docs/semantics.md).
	for _, mode := range []cacheMode{cachePerEvent, cacheWhole} {
		t.Run(modeName(mode), func(t *testing.T) { testHardLinkedUpperIdentity(t, mode) })
	}
}

func testHardLinkedUpperIdentity(t *testing.T, mode cacheMode) {
	ls := newLayerSet(t, 1)
	ls.file("l1", "d/g", "lower g")
	ls.file("u", "d/h", "upper h")
	ls.dir("u", "e")
	if err := os.Link(ls.path("u", "d/h"), ls.path("u", "e/h2")); err != nil {
		t.Fatal(err)
	}
	fs := ls.openMode(mode, true)
	if fs.dirs.mode == cachePerEvent && !fs.dirs.objectFIDs {
		msg := "the kernel gives per-event reports without objects' handles (FAN_REPORT_FID)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	identify := func(p string) Identity {
		t.Helper()
		var id Identity
		for range 3 {
			var err error
			if id, err = fs.Identify(p); err != nil {
				t.Fatalf("Identify(%s): %v", p, err)
			}
		}
		return id
	}
	noErr(t, "copy d/g up", fs.Chmod("d/g", 0o600))
	g := identify("d/g")
	h := identify("d/h")
	if h.ID.Equal(g.ID) {
		t.Fatal("d/h and d/g share an identity before any origin record")
	}
	rec := make([]byte, 256)
	n, err := unix.Lgetxattr(ls.path("u", "d/g"), fs.x.Origin(), rec)
	if err != nil {
		t.Fatalf("origin record of the copied-up d/g: %v", err)
	}
	ls.xattr("u", "e/h2", fs.x.Origin(), string(rec[:n]))
	if h2 := identify("d/h"); !h2.ID.Equal(g.ID) {
		t.Fatalf("d/h after its origin record named d/g (written through e/h2): %+v, want d/g's %+v", h2.ID, g.ID)
	}
}

// TestIdentifySeesUpperNamesAppear: a lower name identified again and again (which the
// directory cache remembers as absent from the upper part, sparing the upper's stat)
// shows the upper object or whiteout made there behind the union's back at once, at the
// root and in a directory with an upper part.
func TestIdentifySeesUpperNamesAppear(t *testing.T) {
	requireRoot(t)
	forCacheModes(t, func(t *testing.T, mode cacheMode) {
		ls := newLayerSet(t, 1)
		for _, p := range []string{"f", "w", "d/f", "d/w"} {
			ls.file("l1", p, "low")
		}
		ls.dir("u", "d")
		fs := ls.openMode(mode, true)
		before := map[string]Identity{}
		for range 3 {
			for _, p := range []string{"f", "w", "d/f", "d/w"} {
				id, err := fs.Identify(p)
				if err != nil {
					t.Fatalf("Identify(%s): %v", p, err)
				}
				before[p] = id
			}
		}
		ls.file("u", "f", "upper")
		ls.file("u", "d/f", "upper")
		ls.whiteout("u", "w")
		ls.whiteout("u", "d/w")
		for _, p := range []string{"f", "d/f"} {
			id, err := fs.Identify(p)
			if err != nil {
				t.Fatalf("Identify(%s) after an upper copy appeared: %v", p, err)
			}
			if id.ID.Equal(before[p].ID) || id.Info.Size() != int64(len("upper")) {
				t.Errorf("Identify(%s) after an upper copy appeared: size %d, same object %v; want the upper's",
					p, id.Info.Size(), id.ID.Equal(before[p].ID))
			}
		}
		for _, p := range []string{"w", "d/w"} {
			if _, err := fs.Identify(p); !errors.Is(err, syscall.ENOENT) {
				t.Errorf("Identify(%s) after an upper whiteout appeared: %v, want ENOENT", p, err)
			}
		}
	})
}

// TestIdentifyInDirectoryAttrsFollowChanges: the directory attributes IdentifyIn gives
// (what LOOKUP answers for the directory), taken from the cache while exact, are the
// disk's after an entry is made in the directory and after its mode changes behind the
// union's back: for a lower directory seen through the shared lowers, for one with an
// upper part, and for the root.
func TestIdentifyInDirectoryAttrsFollowChanges(t *testing.T) {
	requireRoot(t)
	forCacheModes(t, func(t *testing.T, mode cacheMode) {
		ls := newLayerSet(t, 1)
		ls.file("l1", "low/sub/f", "l")
		ls.file("u", "up/sub/g", "u")
		fs := ls.openMode(mode, true)
		check := func(dir, layerName, when string) {
			t.Helper()
			for range 3 {
				parent, _, err := fs.IdentifyIn(dir, "f")
				if err != nil && !errors.Is(err, syscall.ENOENT) {
					t.Fatalf("IdentifyIn(%s) %s: %v", dir, when, err)
				}
				var want syscall.Stat_t
				if err := syscall.Lstat(ls.path(layerName, dir), &want); err != nil {
					t.Fatal(err)
				}
				got, _ := StatOf(parent.Info)
				if got.Mode != want.Mode || got.Mtim != want.Mtim || got.Ctim != want.Ctim || got.Size != want.Size {
					t.Fatalf("IdentifyIn(%s) %s: mode %o mtime %v ctime %v size %d, the layer has %o %v %v %d",
						dir, when, got.Mode, got.Mtim, got.Ctim, got.Size, want.Mode, want.Mtim, want.Ctim, want.Size)
				}
			}
		}
		for _, c := range []struct{ dir, layer string }{{"low/sub", "l1"}, {"up/sub", "u"}, {"", "u"}} {
			check(c.dir, c.layer, "at first")
			ls.file(c.layer, path.Join(c.dir, "new"), "n")
			check(c.dir, c.layer, "after an entry was made in it")
			if err := os.Chmod(ls.path(c.layer, c.dir), 0o700); err != nil {
				t.Fatal(err)
			}
			check(c.dir, c.layer, "after its mode changed")
		}
	})
}
