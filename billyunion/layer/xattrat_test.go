package layer

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Both routes to an attribute (the *xattrat calls and procfs) read the same values, of a
// name and of the directory itself, never follow a symlink, and grow past the first
// buffer.
func TestXattrRoutesAgree(t *testing.T) {
	dir := t.TempDir()
	long := bytes.Repeat([]byte("v"), 1000)
	if err := os.WriteFile(filepath.Join(dir, "f"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("f", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	for _, set := range []struct{ path, value string }{{"f", "file"}, {".", "dir"}} {
		if err := unix.Lsetxattr(filepath.Join(dir, set.path), "user.v", []byte(set.value), 0); err != nil {
			t.Skipf("no user xattrs here: %v", err)
		}
	}
	if err := unix.Lsetxattr(filepath.Join(dir, "f"), "user.long", long, 0); err != nil {
		t.Fatal(err)
	}
	dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dfd)
	if _, err := getxattrat(dfd, "f", "user.v", nil); err == unix.ENOSYS {
		t.Skip("kernel without getxattrat: only the procfs route exists")
	}
	for _, c := range []struct{ name, attr, want string }{
		{"f", "user.v", "file"}, {"", "user.v", "dir"}, {"f", "user.long", string(long)},
		{"link", "user.v", "ENODATA"}, {"missing", "user.v", "ENOENT"},
	} {
		at, errAt := Getxattr(dfd, c.name, c.attr)
		proc, errProc := getxattrProc(dfd, c.name, c.attr)
		got, gotProc := string(at), string(proc)
		if errAt != nil {
			got = unix.ErrnoName(errAt.(unix.Errno))
		}
		if errProc != nil {
			gotProc = unix.ErrnoName(errProc.(unix.Errno))
		}
		if got != c.want || gotProc != c.want {
			t.Errorf("%q %s: getxattrat %.20q, procfs %.20q, want %.20q", c.name, c.attr, got, gotProc, c.want)
		}
	}
	names, err := Listxattr(dfd, "f")
	if err != nil || strings.Join(names, ",") != "user.v,user.long" {
		t.Errorf("Listxattr = %v %v", names, err)
	}
	if err := Setxattr(dfd, "", "user.w", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if v, err := getxattrProc(dfd, "", "user.w"); err != nil || string(v) != "x" {
		t.Errorf("Setxattr of the directory itself: %q %v", v, err)
	}
	if err := Removexattr(dfd, "", "user.w"); err != nil {
		t.Fatal(err)
	}
	if _, err := getxattrProc(dfd, "", "user.w"); err != unix.ENODATA {
		t.Errorf("after Removexattr: %v, want ENODATA", err)
	}
}

func BenchmarkGetxattr(b *testing.B) {
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), nil, 0o644); err != nil {
		b.Fatal(err)
	}
	dfd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(dfd)
	for _, route := range []struct {
		name string
		get  func(int, string, string) ([]byte, error)
	}{{"xattrat", Getxattr}, {"procfs", getxattrProc}} {
		b.Run(route.name, func(b *testing.B) {
			for range b.N {
				if _, err := route.get(dfd, "f", "trusted.overlay.origin"); err != unix.ENODATA {
					b.Fatal(err)
				}
			}
		})
	}
}
