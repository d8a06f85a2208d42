package layer

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// fixture is a layer root with a directory outside it:
//
//	base/                  the layer root's parent
//	base/parent-sentinel
//	base/outside/sentinel  carries user.where=outside
//	base/outside/dir/inner
//	base/layer/            the layer root (f, d/g inside)
//
// Tests put hostile objects into the layer and check, with outsideState and
// an inotify watch, that nothing outside it was opened, created or changed.
type fixture struct {
	t    *testing.T
	base string
	root string
	out  string
	l    *Layer
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	base := t.TempDir()
	f := &fixture{t: t, base: base, root: filepath.Join(base, "layer"), out: filepath.Join(base, "outside")}
	f.mkdir(f.root)
	f.mkdir(f.out)
	f.mkdir(filepath.Join(f.out, "dir"))
	f.write(filepath.Join(f.out, "sentinel"), "outside\n")
	f.write(filepath.Join(f.out, "dir", "inner"), "outside inner\n")
	f.write(filepath.Join(base, "parent-sentinel"), "parent\n")
	if err := unix.Lsetxattr(filepath.Join(f.out, "sentinel"), "user.where", []byte("outside"), 0); err != nil {
		t.Skipf("user xattrs unsupported in %s: %v", base, err)
	}
	f.write(filepath.Join(f.root, "f"), "inside\n")
	f.mkdir(filepath.Join(f.root, "d"))
	f.write(filepath.Join(f.root, "d", "g"), "inside g\n")
	l, err := Open(f.root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	f.l = l
	return f
}

func (f *fixture) mkdir(p string) {
	f.t.Helper()
	if err := os.Mkdir(p, 0o755); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) write(p, content string) {
	f.t.Helper()
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) symlink(target, p string) {
	f.t.Helper()
	if err := os.Symlink(target, p); err != nil {
		f.t.Fatal(err)
	}
}

// in names p inside the layer root.
func (f *fixture) in(p string) string { return filepath.Join(f.root, p) }

func lstatPath(t *testing.T, p string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// objState is what a change to an object would show: ctime moves on every
// write, chmod, chown, utimes and xattr change, and content and xattrs are
// compared too.
type objState struct {
	ino, nlink     uint64
	mode, uid, gid uint32
	size           int64
	mtim, ctim     unix.Timespec
	content        string
	xattrs         string
}

// outsideState records every object below base except the layer root's
// subtree, without following symlinks. Reading the files generates inotify
// events, so it is called before a watch starts and after it was checked.
func (f *fixture) outsideState() map[string]objState {
	f.t.Helper()
	m := map[string]objState{}
	err := filepath.WalkDir(f.base, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == f.root {
			return filepath.SkipDir
		}
		st := lstatPath(f.t, p)
		s := objState{ino: st.Ino, nlink: uint64(st.Nlink), mode: st.Mode, uid: st.Uid, gid: st.Gid,
			size: st.Size, mtim: st.Mtim, ctim: st.Ctim}
		if st.Mode&unix.S_IFMT == unix.S_IFREG {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s.content = string(b)
		}
		buf := make([]byte, 4096)
		n, err := unix.Llistxattr(p, buf)
		if err != nil {
			return err
		}
		names := strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00")
		sort.Strings(names)
		for _, name := range names {
			if name == "" {
				continue
			}
			v := make([]byte, 4096)
			vn, err := unix.Lgetxattr(p, name, v)
			if err != nil {
				return err
			}
			s.xattrs += name + "=" + string(v[:vn]) + ";"
		}
		m[p] = s
		return nil
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return m
}

func (f *fixture) checkOutsideUnchanged(before map[string]objState) {
	f.t.Helper()
	after := f.outsideState()
	for p, b := range before {
		a, ok := after[p]
		if !ok {
			f.t.Errorf("outside the layer: %s disappeared", p)
			continue
		}
		if a != b {
			f.t.Errorf("outside the layer: %s changed:\n before %+v\n after  %+v", p, b, a)
		}
	}
	for p := range after {
		if _, ok := before[p]; !ok {
			f.t.Errorf("outside the layer: %s was created", p)
		}
	}
}

// watcher reports every inotify event on base, base/outside and
// base/outside/dir except those about the layer root itself (a child of
// base). Stats and xattr reads make no events; opens, reads, writes,
// creations, removals and attribute changes do.
type watcher struct {
	t     *testing.T
	fd    int
	wds   map[int32]string
	base  string
	layer string
}

func (f *fixture) watchOutside() *watcher {
	f.t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	if err != nil {
		f.t.Fatal(err)
	}
	w := &watcher{t: f.t, fd: fd, wds: map[int32]string{}, base: f.base, layer: filepath.Base(f.root)}
	f.t.Cleanup(func() { unix.Close(fd) })
	for _, p := range []string{f.base, f.out, filepath.Join(f.out, "dir")} {
		wd, err := unix.InotifyAddWatch(fd, p, unix.IN_ALL_EVENTS|unix.IN_DONT_FOLLOW)
		if err != nil {
			f.t.Fatal(err)
		}
		w.wds[int32(wd)] = p
	}
	return w
}

// events drains the queue.
func (w *watcher) events() []string {
	var evs []string
	buf := make([]byte, 64*1024)
	for {
		n, err := unix.Read(w.fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err == unix.EAGAIN {
			return evs
		}
		if err != nil {
			w.t.Fatal(err)
		}
		if n <= 0 {
			return evs
		}
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			nameBytes := buf[off+unix.SizeofInotifyEvent : off+unix.SizeofInotifyEvent+int(ev.Len)]
			name := strings.TrimRight(string(nameBytes), "\x00")
			off += unix.SizeofInotifyEvent + int(ev.Len)
			dir := w.wds[ev.Wd]
			if ev.Mask&unix.IN_Q_OVERFLOW != 0 {
				evs = append(evs, "queue overflow")
				continue
			}
			if ev.Mask&unix.IN_IGNORED != 0 {
				continue
			}
			if dir == w.base && name == w.layer {
				continue // the layer root itself, reopened through its own descriptor
			}
			evs = append(evs, fmt.Sprintf("%s %q mask %#x", dir, name, ev.Mask))
		}
	}
}

// quiet fails the test if anything outside the layer was touched.
func (w *watcher) quiet() {
	w.t.Helper()
	if evs := w.events(); len(evs) > 0 {
		n := len(evs)
		if len(evs) > 20 {
			evs = append(evs[:20], "...")
		}
		w.t.Errorf("objects outside the layer were touched (%d events):\n%s", n, strings.Join(evs, "\n"))
	}
}

func wantErr(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Errorf("%s: got %v, want %v", what, err, want)
	}
}

func closeIf(f *os.File) {
	if f != nil {
		f.Close()
	}
}

func readFD(t *testing.T, f *os.File) string {
	t.Helper()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestOpenRootAndDev(t *testing.T) {
	f := newFixture(t)
	st := lstatPath(t, f.root)
	if f.l.Dev != st.Dev || f.l.Path != f.root {
		t.Fatalf("layer %+v, want dev %d path %s", f.l, st.Dev, f.root)
	}
	rst, err := Fstat(f.l.Root)
	if err != nil || rst.Ino != st.Ino {
		t.Fatalf("root descriptor names ino %d (%v), want %d", rst.Ino, err, st.Ino)
	}
	if _, err := Open(f.in("f")); !errors.Is(err, unix.ENOTDIR) {
		t.Errorf("Open of a file: %v, want ENOTDIR", err)
	}
	if _, err := Open(f.in("missing")); !errors.Is(err, unix.ENOENT) {
		t.Errorf("Open of a missing path: %v, want ENOENT", err)
	}
}

func TestErrno(t *testing.T) {
	for _, c := range []struct {
		in   error
		want error
	}{
		{nil, nil},
		{unix.ENOENT, syscall.ENOENT},
		{fmt.Errorf("wrapped: %w", unix.EEXIST), syscall.EEXIST},
		{&os.PathError{Op: "open", Path: "x", Err: unix.ELOOP}, syscall.ELOOP},
		{ErrReplaced, syscall.EIO},
		{errors.New("no errno"), syscall.EIO},
	} {
		if got := Errno(c.in); got != c.want {
			t.Errorf("Errno(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestIsWhiteoutAndIsDir(t *testing.T) {
	for _, c := range []struct {
		mode      uint32
		rdev      uint64
		wo, isDir bool
	}{
		{unix.S_IFCHR, 0, true, false},
		{unix.S_IFCHR, unix.Mkdev(1, 3), false, false},
		{unix.S_IFBLK, 0, false, false},
		{unix.S_IFREG, 0, false, false},
		{unix.S_IFDIR | 0o755, 0, false, true},
		{unix.S_IFLNK | 0o777, 0, false, false},
	} {
		st := unix.Stat_t{Mode: c.mode, Rdev: c.rdev}
		if IsWhiteout(&st) != c.wo || IsDir(&st) != c.isDir {
			t.Errorf("mode %o rdev %d: whiteout %v dir %v, want %v %v", c.mode, c.rdev, IsWhiteout(&st), IsDir(&st), c.wo, c.isDir)
		}
	}
	// A real whiteout as the kernel overlay makes it.
	f := newFixture(t)
	if err := unix.Mknod(f.in("wo"), unix.S_IFCHR, 0); err != nil {
		t.Skipf("mknod: %v", err)
	}
	st, err := Lstat(f.l.Root, "wo")
	if err != nil || !IsWhiteout(&st) {
		t.Fatalf("whiteout not recognised: %+v %v", st, err)
	}
}

// TestEmptyNameIsTheDirectoryItself: the calls documented to take "" for
// the directory itself act on exactly that directory, not on its parent.
func TestEmptyNameIsTheDirectoryItself(t *testing.T) {
	f := newFixture(t)
	before := f.outsideState()
	w := f.watchOutside()
	dfd, err := OpenDir(f.l.Root, "d")
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dfd)
	names, err := ReadNames(dfd, "")
	if err != nil || strings.Join(names, " ") != "g" {
		t.Errorf("ReadNames(d, \"\") = %v %v, want [g]", names, err)
	}
	if err := Setxattr(dfd, "", "user.self", []byte("d")); err != nil {
		t.Fatal(err)
	}
	if v, err := unix.Lgetxattr(f.in("d"), "user.self", make([]byte, 8)); err != nil || v != 1 {
		t.Errorf("Setxattr(d, \"\") did not reach d: %d %v", v, err)
	}
	if v, err := Getxattr(dfd, "", "user.self"); err != nil || string(v) != "d" {
		t.Errorf("Getxattr(d, \"\") = %q %v", v, err)
	}
	if l, err := Listxattr(dfd, ""); err != nil || !contains(l, "user.self") {
		t.Errorf("Listxattr(d, \"\") = %v %v", l, err)
	}
	if err := Removexattr(dfd, "", "user.self"); err != nil {
		t.Errorf("Removexattr(d, \"\"): %v", err)
	}
	if ok, err := HasXattr(dfd, "", "user.self"); ok || err != nil {
		t.Errorf("HasXattr after removal: %v %v", ok, err)
	}
	ts := unix.Timespec{Sec: 1234567, Nsec: 0}
	if err := SetTimes(dfd, "", ts, ts); err != nil {
		t.Fatal(err)
	}
	if st := lstatPath(t, f.in("d")); st.Mtim != ts {
		t.Errorf("SetTimes(d, \"\") left mtime %v", st.Mtim)
	}
	dst := lstatPath(t, f.in("d"))
	same, err := OpenSame(dfd, "", unix.O_RDONLY|unix.O_DIRECTORY, &dst)
	if err != nil {
		t.Fatalf("OpenSame(d, \"\"): %v", err)
	}
	if st, _ := Fstat(int(same.Fd())); st.Ino != dst.Ino {
		t.Errorf("OpenSame(d, \"\") opened ino %d, want %d", st.Ino, dst.Ino)
	}
	same.Close()
	w.quiet()
	f.checkOutsideUnchanged(before)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestReadNamesNeverListsDotEntries: names read from a layer are fed back
// into these calls (RemoveAll does it itself), so "." and ".." must never
// come out of a listing.
func TestReadNamesNeverListsDotEntries(t *testing.T) {
	f := newFixture(t)
	for _, n := range []string{"...", "..a", ".a", ".", ".."} {
		if n == "." || n == ".." {
			continue
		}
		f.write(f.in(n), n)
	}
	names, err := ReadNames(f.l.Root, "")
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(names)
	if got, want := strings.Join(names, " "), "... ..a .a d f"; got != want {
		t.Fatalf("ReadNames = %q, want %q", got, want)
	}
}

func TestReadlinkLengths(t *testing.T) {
	f := newFixture(t)
	for _, n := range []int{1, 127, 255, 256, 257, 511, 512, 513, 4095} {
		target := strings.Repeat("x", n)
		name := fmt.Sprintf("l%d", n)
		f.symlink(target, f.in(name))
		got, err := Readlink(f.l.Root, name)
		if err != nil || got != target {
			t.Errorf("Readlink of a %d-byte target: %d bytes, %v", n, len(got), err)
		}
	}
	_, err := Readlink(f.l.Root, "f")
	wantErr(t, "Readlink of a regular file", err, unix.EINVAL)
	_, err = Readlink(f.l.Root, "missing")
	wantErr(t, "Readlink of a missing name", err, unix.ENOENT)
}

func TestGetxattrSizes(t *testing.T) {
	f := newFixture(t)
	for _, n := range []int{0, 1, 127, 128, 129, 255, 256, 257, 1000, 3000} {
		v := []byte(strings.Repeat("v", n))
		attr := fmt.Sprintf("user.s%d", n)
		if err := Setxattr(f.l.Root, "f", attr, v); err != nil {
			t.Fatal(err)
		}
		got, err := Getxattr(f.l.Root, "f", attr)
		if err != nil || string(got) != string(v) {
			t.Errorf("Getxattr of a %d-byte value: %d bytes, %v", n, len(got), err)
		}
		if ok, err := HasXattr(f.l.Root, "f", attr); !ok || err != nil {
			t.Errorf("HasXattr(%s) = %v %v", attr, ok, err)
		}
		if n > 255 { // one ext4 block holds all of a file's attributes
			if err := Removexattr(f.l.Root, "f", attr); err != nil {
				t.Fatal(err)
			}
		}
	}
	_, err := Getxattr(f.l.Root, "f", "user.missing")
	wantErr(t, "Getxattr of a missing attribute", err, unix.ENODATA)
	if ok, err := HasXattr(f.l.Root, "f", "user.missing"); ok || err != nil {
		t.Errorf("HasXattr of a missing attribute = %v %v", ok, err)
	}
	if ok, err := HasXattr(f.l.Root, "missing", "user.x"); ok || !errors.Is(err, unix.ENOENT) {
		t.Errorf("HasXattr of a missing name = %v %v, want ENOENT", ok, err)
	}
	list, err := Listxattr(f.l.Root, "f")
	if err != nil || !contains(list, "user.s255") || !contains(list, "user.s0") || contains(list, "user.s256") {
		t.Errorf("Listxattr = %v %v", list, err)
	}
	if err := Removexattr(f.l.Root, "f", "user.s1"); err != nil {
		t.Fatal(err)
	}
	_, err = Getxattr(f.l.Root, "f", "user.s1")
	wantErr(t, "Getxattr after Removexattr", err, unix.ENODATA)
	if list, err := Listxattr(f.l.Root, "d"); err != nil || len(list) != 0 {
		t.Errorf("Listxattr of a bare directory = %v %v", list, err)
	}
}

// TestOpenSameRefusesOtherObjects: anything but the regular file or
// directory looked up is ErrReplaced and is never opened for I/O (a fifo
// would block, a whiteout answers ENXIO).
func TestOpenSameRefusesOtherObjects(t *testing.T) {
	f := newFixture(t)
	want := lstatPath(t, f.in("f"))
	got, err := OpenSame(f.l.Root, "f", unix.O_RDWR, &want)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := got.WriteString("more\n"); err != nil {
		t.Errorf("OpenSame honours its flags: %v", err)
	}
	got.Close()

	// The same name, another file.
	f.write(f.in("f.new"), "new\n")
	if err := os.Rename(f.in("f.new"), f.in("f")); err != nil {
		t.Fatal(err)
	}
	got, err = OpenSame(f.l.Root, "f", unix.O_RDONLY, &want)
	closeIf(got)
	wantErr(t, "OpenSame of a replaced file", err, ErrReplaced)

	// Gone.
	os.Remove(f.in("f"))
	got, err = OpenSame(f.l.Root, "f", unix.O_RDONLY, &want)
	closeIf(got)
	wantErr(t, "OpenSame of a removed file", err, ErrReplaced)

	// A directory where a file was, with the file's type asked for.
	dst := lstatPath(t, f.in("d"))
	fileLike := dst
	fileLike.Mode = unix.S_IFREG | 0o644
	got, err = OpenSame(f.l.Root, "d", unix.O_RDONLY, &fileLike)
	closeIf(got)
	wantErr(t, "OpenSame with the wrong type", err, ErrReplaced)

	// Objects that are never opened even when they match what was looked
	// up. O_NONBLOCK keeps a broken check from hanging the test on the fifo.
	if err := unix.Mkfifo(f.in("fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(f.in("wo"), unix.S_IFCHR, 0); err != nil {
		t.Fatal(err)
	}
	f.symlink("f", f.in("sym"))
	for _, n := range []string{"fifo", "wo", "sym"} {
		st := lstatPath(t, f.in(n))
		got, err := OpenSame(f.l.Root, n, unix.O_RDONLY|unix.O_NONBLOCK, &st)
		closeIf(got)
		wantErr(t, "OpenSame of "+n, err, ErrReplaced)
	}
}

func TestNameTooLong(t *testing.T) {
	f := newFixture(t)
	long := strings.Repeat("n", 256)
	file, err := OpenFile(f.l.Root, long, unix.O_RDWR|unix.O_CREAT, 0o644)
	closeIf(file)
	wantErr(t, "OpenFile of a 256-byte name", err, unix.ENAMETOOLONG)
	ok := strings.Repeat("n", 255)
	file, err = OpenFile(f.l.Root, ok, unix.O_RDWR|unix.O_CREAT, 0o644)
	if err != nil {
		t.Fatalf("OpenFile of a 255-byte name: %v", err)
	}
	file.Close()
}

func TestChmod(t *testing.T) {
	f := newFixture(t)
	if err := Chmod(f.l.Root, "f", 0o600); err != nil {
		t.Fatal(err)
	}
	if st := lstatPath(t, f.in("f")); st.Mode&0o7777 != 0o600 {
		t.Errorf("Chmod left mode %o", st.Mode&0o7777)
	}
	if err := Chmod(f.l.Root, "d", 0o700); err != nil {
		t.Fatal(err)
	}
	if st := lstatPath(t, f.in("d")); st.Mode&0o7777 != 0o700 {
		t.Errorf("Chmod of a directory left mode %o", st.Mode&0o7777)
	}
	wantErr(t, "Chmod of a missing name", Chmod(f.l.Root, "missing", 0o600), unix.ENOENT)
}
