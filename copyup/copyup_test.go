package copyup

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/billyunion/layer"
)

var x = Xattrs{Prefix: "trusted.overlay."}

type fixture struct {
	lower, upper *layer.Layer
	work         *WorkDir
	copier       *Copier
	root         string
	// lowerDir and upperDir are the layers' paths.
	lowerDir, upperDir string
	methods            *methodLog
}

// newFixture builds lower, upper and work in a fresh temporary directory.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (chown, trusted xattrs)")
	}
	root := t.TempDir()
	return newFixtureAt(t, root, root)
}

// newFixtureAt builds the lower under lowerRoot, and the upper and work
// under upperRoot (on one filesystem, as the union requires).
func newFixtureAt(t *testing.T, lowerRoot, upperRoot string) *fixture {
	t.Helper()
	os.Mkdir(filepath.Join(lowerRoot, "lower"), 0o755)
	for _, d := range []string{"upper", "work"} {
		os.Mkdir(filepath.Join(upperRoot, d), 0o755)
	}
	f := &fixture{root: lowerRoot, methods: &methodLog{},
		lowerDir: filepath.Join(lowerRoot, "lower"), upperDir: filepath.Join(upperRoot, "upper")}
	var err error
	if f.lower, err = layer.Open(filepath.Join(lowerRoot, "lower")); err != nil {
		t.Fatal(err)
	}
	if f.upper, err = layer.Open(filepath.Join(upperRoot, "upper")); err != nil {
		t.Fatal(err)
	}
	if f.work, err = OpenWorkDir(filepath.Join(upperRoot, "work")); err != nil {
		t.Fatal(err)
	}
	f.copier = NewCopier(f.work, x, slog.New(f.methods))
	t.Cleanup(func() { f.lower.Close(); f.upper.Close(); f.work.Close() })
	return f
}

func (f *fixture) copy(t *testing.T, name string) error {
	t.Helper()
	st, err := layer.Lstat(f.lower.Root, name)
	if err != nil {
		t.Fatal(err)
	}
	return f.copier.Do(name, Source{Dir: f.lower.Root, Name: name, Stat: st}, func() error {
		if _, err := layer.Lstat(f.upper.Root, name); err == nil {
			return ErrChanged
		}
		return nil
	}, func(tmp string) error {
		return f.copier.Place(tmp, f.upper.Root, name)
	})
}

func TestCopyPreservesEverything(t *testing.T) {
	f := newFixture(t)
	lp := func(n string) string { return filepath.Join(f.root, "lower", n) }
	os.WriteFile(lp("file"), bytes.Repeat([]byte("data"), 10000), 0o640)
	os.Chmod(lp("file"), 0o4751)
	os.Mkdir(lp("dir"), 0o710)
	os.Symlink("../somewhere", lp("link"))
	unix.Mkfifo(lp("fifo"), 0o620)
	mtime := time.Unix(1_500_000_000, 123456789)
	for _, n := range []string{"file", "dir", "fifo", "link"} {
		// trusted.*, not user.*: Linux allows user xattrs on files and
		// directories only.
		unix.Lsetxattr(lp(n), "trusted.note", []byte("kept-"+n), 0)
		unix.Lsetxattr(lp(n), "trusted.overlay.opaque", []byte("y"), 0) // private: not copied
	}
	for _, n := range []string{"file", "dir", "fifo"} {
		os.Lchown(lp(n), 1234, 5678)
		os.Chtimes(lp(n), mtime, mtime)
	}
	os.Lchown(lp("link"), 1234, 5678)
	unix.Lutimes(lp("link"), []unix.Timeval{unix.NsecToTimeval(mtime.UnixNano()), unix.NsecToTimeval(mtime.UnixNano())})
	os.Chmod(lp("file"), 0o4751) // chown cleared setuid

	upperParentBefore, _ := layer.Fstat(f.upper.Root)
	time.Sleep(10 * time.Millisecond)
	for _, n := range []string{"file", "dir", "link", "fifo"} {
		if err := f.copy(t, n); err != nil {
			t.Fatalf("copy %s: %v", n, err)
		}
		src, _ := layer.Lstat(f.lower.Root, n)
		dst, err := layer.Lstat(f.upper.Root, n)
		if err != nil {
			t.Fatalf("%s not in upper: %v", n, err)
		}
		if src.Mode != dst.Mode || src.Uid != dst.Uid || src.Gid != dst.Gid || src.Mtim != dst.Mtim || src.Size != dst.Size {
			t.Errorf("%s: lower %o %d:%d %v %d, upper %o %d:%d %v %d", n, src.Mode, src.Uid, src.Gid, src.Mtim, src.Size, dst.Mode, dst.Uid, dst.Gid, dst.Mtim, dst.Size)
		}
		origin, err := layer.Getxattr(f.upper.Root, n, x.Origin())
		if err != nil {
			t.Errorf("%s: no origin: %v", n, err)
		}
		want, _ := layer.EncodeOrigin(f.lower.Root, n, [16]byte{})
		if !bytes.Equal(origin, want) || len(origin) < 22 || origin[1] != 0xfb {
			t.Errorf("%s: origin %x, want %x", n, origin, want)
		}
		{
			if v, err := layer.Getxattr(f.upper.Root, n, "trusted.note"); err != nil || string(v) != "kept-"+n {
				t.Errorf("%s: user xattr %q %v", n, v, err)
			}
			if _, err := layer.Getxattr(f.upper.Root, n, x.Opaque()); err != unix.ENODATA {
				t.Errorf("%s: private xattr copied: %v", n, err)
			}
		}
	}
	a, _ := os.ReadFile(lp("file"))
	b, _ := os.ReadFile(filepath.Join(f.root, "upper", "file"))
	if !bytes.Equal(a, b) {
		t.Error("content differs")
	}
	if tgt, _ := os.Readlink(filepath.Join(f.root, "upper", "link")); tgt != "../somewhere" {
		t.Errorf("symlink target %q", tgt)
	}
	after, _ := layer.Fstat(f.upper.Root)
	if after.Mtim != upperParentBefore.Mtim {
		t.Error("copy-up changed the parent's mtime")
	}
	if v, err := layer.Getxattr(f.upper.Root, "", x.Impure()); err != nil || string(v) != "y" {
		t.Errorf("parent not marked impure: %q %v", v, err)
	}
	if names, _ := f.work.Names(); len(names) != 0 {
		t.Errorf("work dir not clean: %v", names)
	}
}

func TestConcurrentCopiesRunOnce(t *testing.T) {
	f := newFixture(t)
	os.WriteFile(filepath.Join(f.root, "lower", "big"), bytes.Repeat([]byte("z"), 1<<20), 0o644)
	var builds atomic.Int64
	f.copier.SetBeforePlaceHook(func() { builds.Add(1); time.Sleep(30 * time.Millisecond) })
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f.copy(t, "big"); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if builds.Load() != 1 {
		t.Fatalf("%d builds for one object", builds.Load())
	}
}

func TestFailedPlaceLeavesNothing(t *testing.T) {
	f := newFixture(t)
	os.WriteFile(filepath.Join(f.root, "lower", "f"), []byte("x"), 0o644)
	st, _ := layer.Lstat(f.lower.Root, "f")
	err := f.copier.Do("f", Source{Dir: f.lower.Root, Name: "f", Stat: st}, func() error { return nil }, func(string) error { return ErrChanged })
	if !errors.Is(err, ErrChanged) {
		t.Fatalf("got %v", err)
	}
	if names, _ := f.work.Names(); len(names) != 0 {
		t.Fatalf("temporary left behind: %v", names)
	}
	if _, err := layer.Lstat(f.upper.Root, "f"); err != unix.ENOENT {
		t.Fatalf("upper changed: %v", err)
	}
}

func TestWorkDirLeftoversRemovedAtOpen(t *testing.T) {
	f := newFixture(t)
	os.MkdirAll(filepath.Join(f.root, "work", "work", "#stale", "sub"), 0o755)
	os.WriteFile(filepath.Join(f.root, "work", "work", "#half"), []byte("partial"), 0o644)
	w, err := OpenWorkDir(filepath.Join(f.root, "work"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if names, _ := w.Names(); len(names) != 0 {
		t.Fatalf("leftovers kept: %v", names)
	}
}
