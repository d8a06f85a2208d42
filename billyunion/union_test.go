package billyunion

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestLookupRules(t *testing.T) {
	requireRoot(t)
	ls := newLayerSet(t, 3)
	ls.file("l1", "top", "1")
	ls.file("l3", "top", "3")
	ls.dir("l1", "merged/a")
	ls.file("l2", "merged/b", "b")
	ls.file("l3", "merged/c", "c")
	ls.whiteout("l2", "merged/c") // hides l3's c
	ls.file("l1", "fileoverdir", "f")
	ls.file("l2", "fileoverdir/hidden", "h")
	ls.dir("l1", "diroverfile")
	ls.file("l2", "diroverfile", "hidden")
	ls.dir("l2", "opq")
	ls.file("l2", "opq/seen", "s")
	ls.xattr("l2", "opq", "trusted.overlay.opaque", "y")
	ls.file("l3", "opq/unseen", "u")
	ls.dir("l2", "xw")
	ls.xattr("l2", "xw", "trusted.overlay.opaque", "x")
	ls.file("l2", "xw/gone", "")
	ls.xattr("l2", "xw/gone", "trusted.overlay.whiteout", "")
	ls.file("l3", "xw/gone", "lower")
	ls.file("l3", "xw/kept", "k")
	fs := ls.open()

	if got := readAll(t, fs, "top"); got != "1" {
		t.Errorf("top layer should win: %q", got)
	}
	if got := names(t, fs, "merged"); got != "a b" {
		t.Errorf("merged dir: %q", got)
	}
	if fi, err := fs.Lstat("fileoverdir"); err != nil || fi.IsDir() {
		t.Errorf("file above dir: %v %v", fi, err)
	}
	_, err := fs.Lstat("fileoverdir/hidden")
	wantErrno(t, "lookup below a file", err, syscall.ENOTDIR)
	if got := names(t, fs, "diroverfile"); got != "" {
		t.Errorf("dir above file: %q", got)
	}
	if got := names(t, fs, "opq"); got != "seen" {
		t.Errorf("opaque dir: %q", got)
	}
	if got := names(t, fs, "xw"); got != "kept" {
		t.Errorf("xattr whiteout under opaque=x: %q", got)
	}
	if fi, _ := fs.Lstat("merged"); fi.Sys().(*syscall.Stat_t).Nlink != 1 {
		t.Errorf("merged dir nlink should be 1 like the kernel's")
	}
	_, err = fs.Getxattr("opq", "trusted.overlay.opaque")
	wantErrno(t, "private xattr read", err, syscall.ENODATA)
	list, err := fs.Listxattr("opq")
	noErr(t, "listxattr", err)
	for _, a := range list {
		if strings.Contains(a, "overlay.") {
			t.Errorf("private xattr listed: %s", a)
		}
	}
}

func TestInodeStableAcrossCopyUpAndReaddir(t *testing.T) {
	requireRoot(t)
	ls := newLayerSet(t, 2)
	ls.file("l2", "d/f", "lower")
	ls.dir("l1", "d/sub")
	ls.symlink("l2", "d/link", "f")
	fs := ls.open()
	before := map[string]uint64{}
	for _, p := range []string{"d", "d/f", "d/sub", "d/link"} {
		before[p] = ino(t, fs, p)
	}
	noErr(t, "chmod", fs.Chmod("d/f", 0o600))
	noErr(t, "chtimes dir", fs.Chtimes("d/sub", time0, time0))
	noErr(t, "lchown", fs.Lchown("d/link", 1, 1))
	noErr(t, "rename", fs.Rename("d/f", "d/g"))
	before["d/g"] = before["d/f"]
	delete(before, "d/f")
	for p, want := range before {
		if got := ino(t, fs, p); got != want {
			t.Errorf("%s: inode %d after copy-up, was %d", p, got, want)
		}
	}
	fis, err := fs.ReadDir("d")
	noErr(t, "readdir", err)
	for _, fi := range fis {
		if got, want := fi.Sys().(*syscall.Stat_t).Ino, ino(t, fs, "d/"+fi.Name()); got != want {
			t.Errorf("readdir ino %d != lstat ino %d for %s", got, want, fi.Name())
		}
	}
	if _, err := os.Lstat(ls.path("u", "d/g")); err != nil {
		t.Errorf("renamed file should be in upper: %v", err)
	}
}

func TestInodesUniqueAcrossFilesystems(t *testing.T) {
	requireRoot(t)
	ls := newLayerSet(t, 2)
	// l2 on its own tmpfs: its inode numbers overlap ext4's freely.
	if err := unix.Mount("tmpfs", ls.path("l2", ""), "tmpfs", 0, "size=16m"); err != nil {
		t.Skipf("cannot mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(ls.path("l2", ""), unix.MNT_DETACH) })
	for i := 0; i < 50; i++ {
		ls.file("l2", "t"+itoa(i), "x")
		ls.file("l1", "e"+itoa(i), "y")
	}
	fs := ls.open()
	seen := map[uint64]string{}
	fis, err := fs.ReadDir("/")
	noErr(t, "readdir", err)
	for _, fi := range fis {
		n := fi.Sys().(*syscall.Stat_t).Ino
		if other, dup := seen[n]; dup {
			t.Fatalf("inode %d shared by %s and %s", n, other, fi.Name())
		}
		seen[n] = fi.Name()
	}
	before := ino(t, fs, "t7")
	w, err := fs.OpenFile("t7", os.O_WRONLY|os.O_APPEND, 0)
	noErr(t, "open for write", err)
	w.Write([]byte("more"))
	w.Close()
	if after := ino(t, fs, "t7"); after != before {
		t.Errorf("copy-up across filesystems changed inode %d -> %d", before, after)
	}
}

func TestWhiteoutsAndOpaqueOnDisk(t *testing.T) {
	requireRoot(t)
	ls := newLayerSet(t, 1)
	ls.file("l1", "dir/a", "a")
	ls.file("l1", "dir/b", "b")
	ls.file("l1", "file", "f")
	fs := ls.open()
	noErr(t, "unlink", fs.Unlink("file"))
	st, err := os.Lstat(ls.path("u", "file"))
	noErr(t, "whiteout present", err)
	if st.Mode()&os.ModeCharDevice == 0 {
		t.Fatalf("not a whiteout: %v", st.Mode())
	}
	wantErrno(t, "rmdir non-empty", fs.Rmdir("dir"), syscall.ENOTEMPTY)
	noErr(t, "unlink a", fs.Unlink("dir/a"))
	noErr(t, "unlink b", fs.Unlink("dir/b"))
	noErr(t, "rmdir of a dir whose lower entries are all whited out", fs.Rmdir("dir"))
	noErr(t, "mkdir again", fs.Mkdir("dir", 0o755))
	v, err := unix.Getxattr(ls.path("u", "dir"), "trusted.overlay.opaque", make([]byte, 8))
	if err != nil || v != 1 {
		t.Fatalf("re-created dir should be opaque: %v", err)
	}
	if got := names(t, fs, "dir"); got != "" {
		t.Fatalf("opaque dir shows %q", got)
	}
	left, _ := os.ReadDir(ls.path("w", "work"))
	if len(left) != 0 {
		t.Fatalf("work dir not clean: %v", left)
	}
	noErr(t, "rename of a pure upper (opaque) dir", fs.Rename("dir", "dir2"))
	ls2 := newLayerSet(t, 1)
	ls2.file("l1", "low/x", "x")
	wantErrno(t, "rename of a lower dir without redirects", ls2.openWith(Options{RedirectDir: "follow"}).Rename("low", "low2"), syscall.EXDEV)
}

func TestBadNamesChangeNothing(t *testing.T) {
	requireRoot(t)
	ls := newLayerSet(t, 1)
	ls.file("l1", "f", "f")
	fs := ls.open()
	long := strings.Repeat("n", 256)
	for _, c := range []struct {
		p    string
		want syscall.Errno
	}{
		{"..", syscall.EINVAL}, {"a/..", syscall.EINVAL}, {"../x", syscall.EINVAL},
		{"x/../../etc", syscall.EINVAL}, {long, syscall.ENAMETOOLONG}, {"a\x00b", syscall.EINVAL},
		{"", syscall.EEXIST}, {".", syscall.EINVAL},
	} {
		wantErrno(t, "mkdir "+c.p, fs.Mkdir(c.p, 0o755), c.want)
	}
	for _, n := range []string{"", ".", "..", "a/b", "a\x00", long} {
		if ValidName(n) == nil {
			t.Errorf("ValidName(%q) accepted", n)
		}
	}
	entries, _ := os.ReadDir(ls.path("u", ""))
	if len(entries) != 0 {
		t.Fatalf("bad names changed the upper: %v", entries)
	}
}

func TestEscapeAttempts(t *testing.T) {
	requireRoot(t)
	ls := newLayerSet(t, 1)
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o600)
	ls.symlink("l1", "root", "/")
	ls.symlink("l1", "up", "../../..")
	ls.symlink("l1", "out", outside)
	ls.symlink("l1", "sec", filepath.Join(outside, "secret"))
	fs := ls.open()
	for _, p := range []string{"root/etc/passwd", "up/etc", "out/secret"} {
		_, err := fs.Lstat(p)
		wantErrno(t, "walk through symlink "+p, err, syscall.ENOTDIR)
		_, err = fs.Open(p)
		wantErrno(t, "open through symlink "+p, err, syscall.ENOTDIR)
		wantErrno(t, "create through symlink "+p, fs.Mkdir(p+"x", 0o755), syscall.ENOTDIR)
	}
	_, err := fs.Open("sec")
	wantErrno(t, "open symlink", err, syscall.ELOOP)
	_, err = fs.OpenFile("sec", os.O_WRONLY|os.O_TRUNC, 0)
	wantErrno(t, "open symlink for write", err, syscall.ELOOP)
	wantErrno(t, "chmod symlink", fs.Chmod("sec", 0o777), syscall.EOPNOTSUPP)
	noErr(t, "lchown symlink", fs.Lchown("sec", 1234, 1234))
	noErr(t, "chtimes symlink", fs.Chtimes("out", time0, time0))
	st, _ := os.Stat(filepath.Join(outside, "secret"))
	if st.Mode().Perm() != 0o600 || st.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Fatalf("object outside the layer was changed: %v", st)
	}
	if target, err := fs.Readlink("root"); err != nil || target != "/" {
		t.Fatalf("symlink returned as symlink: %q %v", target, err)
	}
	b, _ := os.ReadFile(filepath.Join(outside, "secret"))
	if string(b) != "secret" {
		t.Fatal("outside file modified")
	}
	_, err = fs.ReadDir("root")
	wantErrno(t, "readdir symlink", err, syscall.ENOTDIR)
}

func TestUpperUUIDLikeTheKernel(t *testing.T) {
	requireRoot(t)
	fresh := newLayerSet(t, 1)
	fresh.open()
	if v, err := unix.Getxattr(fresh.path("u", ""), "trusted.overlay.uuid", make([]byte, 32)); err != nil || v != 16 {
		t.Fatalf("fresh upper root should get a 16-byte uuid: %d %v", v, err)
	}
	used := newLayerSet(t, 1)
	used.xattr("u", "", "trusted.overlay.impure", "y")
	used.open()
	if _, err := unix.Getxattr(used.path("u", ""), "trusted.overlay.uuid", make([]byte, 32)); err != unix.ENODATA {
		t.Fatalf("an upper used before without a uuid must stay without: %v", err)
	}
}
