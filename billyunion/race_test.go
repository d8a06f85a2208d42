package billyunion

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestConcurrentMutations runs random namespace changes, writes, copy-ups
// and listings from many goroutines on the same names, then checks that the
// union is consistent with itself and with the kernel overlay mounted over
// the same layers.
func TestConcurrentMutations(t *testing.T) {
	requireRoot(t)
	ls := newLayerSet(t, 2)
	for _, d := range []string{"m", "m/sub", "m/sub/deep"} {
		ls.dir("l1", d)
		ls.dir("l2", d)
	}
	for i, n := range []string{"a", "b", "c", "d", "e"} {
		ls.file("l1", "m/"+n, strings.Repeat(n, 100+i))
		ls.file("l2", "m/sub/"+n, strings.Repeat(n, 200+i))
		ls.file("l2", "m/sub/deep/"+n, n)
	}
	fs := ls.open()
	dirs := []string{"m", "m/sub", "m/sub/deep", ""}
	namesPool := []string{"a", "b", "c", "d", "e", "f", "g", "sub", "deep"}
	allowed := []syscall.Errno{syscall.ENOENT, syscall.EEXIST, syscall.ENOTEMPTY, syscall.ENOTDIR,
		syscall.EISDIR, syscall.EXDEV, syscall.EINVAL, syscall.EPERM}
	var unexpected, succeeded atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			r := rand.New(rand.NewPCG(seed, 7))
			pick := func() string {
				d := dirs[r.IntN(len(dirs))]
				return strings.TrimPrefix(d+"/"+namesPool[r.IntN(len(namesPool))], "/")
			}
			for i := 0; i < 300; i++ {
				var err error
				p := pick()
				switch r.IntN(10) {
				case 0:
					var f interface{ Close() error }
					f, err = fs.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
					if err == nil {
						f.Close()
					}
				case 1:
					err = fs.Unlink(p)
				case 2:
					err = fs.Rename(p, pick())
				case 3:
					err = fs.Mkdir(p, 0o755)
				case 4:
					err = fs.Rmdir(p)
				case 5:
					var f interface {
						Write([]byte) (int, error)
						Close() error
					}
					f, err = fs.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
					if err == nil {
						f.Write([]byte("x"))
						f.Close()
					}
				case 6:
					err = fs.Chmod(p, 0o640)
				case 7:
					err = fs.Link(p, pick())
				default:
					_, err = fs.ReadDir(dirs[r.IntN(len(dirs))])
				}
				if err == nil {
					succeeded.Add(1)
				}
				var e syscall.Errno
				if err != nil && (!errors.As(err, &e) || !slices.Contains(allowed, e)) {
					unexpected.Add(1)
					t.Errorf("unexpected error on %s: %v", p, err)
				}
			}
		}(uint64(g))
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("deadlock: workers did not finish")
	}
	t.Logf("%d of 2400 operations succeeded", succeeded.Load())
	if succeeded.Load() < 600 {
		t.Fatalf("only %d operations succeeded: the test exercised too little", succeeded.Load())
	}
	if left, _ := os.ReadDir(ls.path("w", "work")); len(left) != 0 {
		t.Errorf("work directory not clean: %v", left)
	}
	unionTree := walkUnion(t, fs, "")
	fs.Close()
	mnt := t.TempDir()
	opts := fmt.Sprintf("lowerdir=%s:%s,upperdir=%s,workdir=%s", ls.path("l1", ""), ls.path("l2", ""), ls.path("u", ""), ls.path("w", ""))
	if err := unix.Mount("overlay", mnt, "overlay", 0, opts); err != nil {
		t.Skipf("kernel overlay unavailable for the cross-check: %v", err)
	}
	defer unix.Unmount(mnt, unix.MNT_DETACH)
	kernelTree := walkHost(t, mnt, "")
	if unionTree != kernelTree {
		t.Fatalf("union and kernel overlay disagree after concurrent run\nunion:\n%s\nkernel:\n%s", unionTree, kernelTree)
	}
}

// walkUnion renders the union's tree (names, types, sizes, contents) and
// checks that listings and lookups agree on inode numbers.
func walkUnion(t *testing.T, fs *FS, p string) string {
	fis, err := fs.ReadDir(p)
	if err != nil {
		t.Fatalf("readdir %q: %v", p, err)
	}
	var b strings.Builder
	for _, fi := range fis {
		cp := strings.TrimPrefix(p+"/"+fi.Name(), "/")
		if got := ino(t, fs, cp); got != fi.Sys().(*syscall.Stat_t).Ino {
			t.Errorf("%s: readdir inode %d, lstat %d", cp, fi.Sys().(*syscall.Stat_t).Ino, got)
		}
		fmt.Fprintf(&b, "%s %v %d", cp, fi.Mode(), fi.Size())
		if fi.Mode().IsRegular() {
			fmt.Fprintf(&b, " %q", readAll(t, fs, cp))
		}
		b.WriteString("\n")
		if fi.IsDir() {
			b.WriteString(walkUnion(t, fs, cp))
		}
	}
	return b.String()
}

func walkHost(t *testing.T, root, p string) string {
	ents, err := os.ReadDir(filepath.Join(root, p))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, de := range ents {
		cp := strings.TrimPrefix(p+"/"+de.Name(), "/")
		fi, err := os.Lstat(filepath.Join(root, cp))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "%s %v %d", cp, fi.Mode(), fi.Size())
		if fi.Mode().IsRegular() {
			c, _ := os.ReadFile(filepath.Join(root, cp))
			fmt.Fprintf(&b, " %q", c)
		}
		b.WriteString("\n")
		if fi.IsDir() {
			b.WriteString(walkHost(t, root, cp))
		}
	}
	return b.String()
}

// TestCopyUpAtomicAndOnce: readers racing copy-ups always see a whole file
// (the lower content, never a partial copy), and concurrent copy-ups of one
// object build it once.
func TestCopyUpAtomicAndOnce(t *testing.T) {
	requireRoot(t)
	ls := newLayerSet(t, 1)
	content := strings.Repeat("0123456789abcdef", 1<<14) // 256 KiB
	for i := 0; i < 20; i++ {
		ls.file("l1", "f"+itoa(i), content)
	}
	fs := ls.open()
	var builds atomic.Int64
	fs.copier.SetBeforePlaceHook(func() {
		builds.Add(1)
		time.Sleep(20 * time.Millisecond) // widen the window for sharing and for readers
	})
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		name := "f" + itoa(i)
		for g := 0; g < 4; g++ {
			wg.Add(2)
			go func() {
				defer wg.Done()
				if err := fs.Chmod(name, 0o600); err != nil {
					t.Errorf("chmod %s: %v", name, err)
				}
			}()
			go func() {
				defer wg.Done()
				for k := 0; k < 5; k++ {
					f, err := fs.Open(name)
					if err != nil {
						t.Errorf("open %s: %v", name, err)
						return
					}
					b, err := io.ReadAll(f)
					f.Close()
					if err != nil || string(b) != content {
						t.Errorf("%s: read %d bytes (%v), want the whole %d", name, len(b), err, len(content))
					}
				}
			}()
		}
	}
	wg.Wait()
	if n := builds.Load(); n != 20 {
		t.Errorf("%d copy-ups built for 20 objects (4 concurrent requests each)", n)
	}
	for i := 0; i < 20; i++ {
		fi, err := os.Lstat(ls.path("u", "f"+itoa(i)))
		if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != int64(len(content)) {
			t.Errorf("upper copy of f%d: %v %v", i, fi, err)
		}
	}
}
