package billyunion

import (
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// sizeIn returns the size of name as the cached listing of dir shows it.
func sizeIn(t *testing.T, fs *FS, dir, name string) int64 {
	t.Helper()
	fis, err := fs.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, fi := range fis {
		if fi.Name() == name {
			return fi.Size()
		}
	}
	t.Fatalf("%s not listed in %q", name, dir)
	return 0
}

// TestListingsFollowHardLinkedChanges: a write, truncate or chmod through one
// name of a hard-linked file shows in the cached listing of every directory
// holding another name, and a write shows while the file is still open.
func TestListingsFollowHardLinkedChanges(t *testing.T) {
	requireRoot(t)
	ls := newLayerSet(t, 1)
	ls.file("l1", "a/f", "lower")
	ls.dir("l1", "b")
	fs := ls.open()
	if err := fs.Link("a/f", "b/g"); err != nil {
		t.Fatal(err)
	}
	if got := sizeIn(t, fs, "a", "f") + sizeIn(t, fs, "b", "g"); got != 10 {
		t.Fatalf("sizes before writing sum to %d, want 10", got)
	}
	w, err := fs.OpenFile("b/g", os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Write([]byte("+more")); err != nil {
		t.Fatal(err)
	}
	// Still open: an NFS server keeps files open between WRITEs.
	if got := sizeIn(t, fs, "b", "g"); got != 10 {
		t.Errorf("listing of b shows size %d while the writer is open, want 10", got)
	}
	if got := sizeIn(t, fs, "a", "f"); got != 10 {
		t.Errorf("listing of a shows size %d after a write through b/g, want 10", got)
	}
	if err := w.Truncate(2); err != nil {
		t.Fatal(err)
	}
	if got := sizeIn(t, fs, "a", "f"); got != 2 {
		t.Errorf("listing of a shows size %d after a truncate through b/g, want 2", got)
	}
	if err := fs.Chmod("a/f", 0o600); err != nil {
		t.Fatal(err)
	}
	fis, _ := fs.ReadDir("b")
	if len(fis) != 1 || fis[0].Mode().Perm() != 0o600 {
		t.Errorf("listing of b after chmod through a/f: %v", fis)
	}
	// Unlinking one name changes the other's link count.
	if err := fs.Remove("a/f"); err != nil {
		t.Fatal(err)
	}
	fis, _ = fs.ReadDir("b")
	if len(fis) != 1 || fis[0].Sys().(*syscall.Stat_t).Nlink != 1 {
		t.Errorf("listing of b after removing a/f: nlink %d, want 1", fis[0].Sys().(*syscall.Stat_t).Nlink)
	}
}

// TestOpenChecksTheObjectItLookedUp: when the name changes between the lookup
// and the open, OpenFile looks up again instead of opening whatever is there
// now: a whiteout left by a concurrent unlink gives ENOENT (not ENXIO from
// opening the whiteout device), and a fifo renamed onto the name is refused
// instead of blocking the open forever.
func TestOpenChecksTheObjectItLookedUp(t *testing.T) {
	requireRoot(t)
	ls := newLayerSet(t, 1)
	ls.file("l1", "gone", "lower")
	ls.file("l1", "fifo", "lower")
	ls.file("l1", "created", "lower")
	fs := ls.open()

	var interfere func()
	fs.beforeOpen = func(string) {
		if f := interfere; f != nil {
			interfere = nil
			f()
		}
	}
	for _, writing := range []bool{false, true} {
		flag := os.O_RDONLY
		if writing {
			flag = os.O_WRONLY
		}
		// Copy up first so the write path finds an upper file.
		if err := fs.Chmod("gone", 0o644); err != nil && err != syscall.ENOENT {
			t.Fatal(err)
		}
		interfere = func() {
			if err := fs.Unlink("gone"); err != nil {
				t.Errorf("unlink: %v", err)
			}
		}
		if _, err := fs.OpenFile("gone", flag, 0); err != syscall.ENOENT {
			t.Errorf("open (writing %v) of a name unlinked after its lookup: %v, want ENOENT", writing, err)
		}
		os.Remove(ls.path("u", "gone")) // the whiteout
		ls.file("u", "gone", "again")   // for the next round
	}

	if err := fs.Chmod("fifo", 0o644); err != nil {
		t.Fatal(err)
	}
	interfere = func() {
		tmp := ls.path("u", "fifo.tmp")
		if err := unix.Mkfifo(tmp, 0o644); err != nil {
			t.Error(err)
		}
		if err := os.Rename(tmp, ls.path("u", "fifo")); err != nil {
			t.Error(err)
		}
	}
	done := make(chan error, 1)
	go func() {
		f, err := fs.OpenFile("fifo", os.O_RDONLY, 0)
		if err == nil {
			f.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != syscall.EINVAL {
			t.Errorf("open of a name replaced by a fifo: %v, want EINVAL", err)
		}
	case <-time.After(10 * time.Second):
		// Unblock the stuck open so the test can end.
		if w, err := os.OpenFile(ls.path("u", "fifo"), os.O_WRONLY, 0); err == nil {
			w.Close()
		}
		t.Fatal("open of a name replaced by a fifo blocked")
	}

	// O_CREATE on a name removed between the create's EEXIST and the
	// open creates the file rather than answering ENOENT.
	interfere = func() {
		if err := fs.Unlink("created"); err != nil {
			t.Errorf("unlink: %v", err)
		}
	}
	f, err := fs.OpenFile("created", os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatalf("O_CREATE racing an unlink: %v", err)
	}
	f.Close()
	if fi, err := fs.Lstat("created"); err != nil || fi.Size() != 0 {
		t.Errorf("after O_CREATE racing an unlink: %v, %v (want a new empty file)", fi, err)
	}
}
