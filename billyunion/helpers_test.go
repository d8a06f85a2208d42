package billyunion

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// layerSet is a temporary union: lowers l1 (top) .. lN, upper u, work w.
type layerSet struct {
	t    *testing.T
	root string
	n    int
}

func newLayerSet(t *testing.T, lowers int) *layerSet {
	t.Helper()
	root := t.TempDir()
	ls := &layerSet{t: t, root: root, n: lowers}
	for _, d := range append(ls.lowerNames(), "u", "w") {
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return ls
}

func (ls *layerSet) lowerNames() []string {
	var names []string
	for i := 1; i <= ls.n; i++ {
		names = append(names, "l"+string(rune('0'+i)))
	}
	return names
}

func (ls *layerSet) path(layerName, p string) string { return filepath.Join(ls.root, layerName, p) }

// file writes a file into a layer, creating parents.
func (ls *layerSet) file(layerName, p, content string) {
	ls.t.Helper()
	full := ls.path(layerName, p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		ls.t.Fatal(err)
	}
	if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
		ls.t.Fatal(err)
	}
}

func (ls *layerSet) dir(layerName, p string) {
	ls.t.Helper()
	if err := os.MkdirAll(ls.path(layerName, p), 0o755); err != nil {
		ls.t.Fatal(err)
	}
}

func (ls *layerSet) whiteout(layerName, p string) {
	ls.t.Helper()
	full := ls.path(layerName, p)
	os.MkdirAll(filepath.Dir(full), 0o755)
	if err := unix.Mknod(full, unix.S_IFCHR, 0); err != nil {
		ls.t.Fatal(err)
	}
}

func (ls *layerSet) xattr(layerName, p, attr, value string) {
	ls.t.Helper()
	if err := unix.Lsetxattr(ls.path(layerName, p), attr, []byte(value), 0); err != nil {
		ls.t.Fatal(err)
	}
}

func (ls *layerSet) symlink(layerName, p, target string) {
	ls.t.Helper()
	full := ls.path(layerName, p)
	os.MkdirAll(filepath.Dir(full), 0o755)
	if err := os.Symlink(target, full); err != nil {
		ls.t.Fatal(err)
	}
}

func (ls *layerSet) open() *FS { ls.t.Helper(); return ls.openWith(Options{}) }

// openWith opens the union with opts, its layers, work dir and prefix filled in.
func (ls *layerSet) openWith(opts Options) *FS {
	ls.t.Helper()
	var lowers []string
	for _, n := range ls.lowerNames() {
		lowers = append(lowers, filepath.Join(ls.root, n))
	}
	opts.Lowers, opts.Upper, opts.Work, opts.XattrPrefix = lowers, ls.path("u", ""), ls.path("w", ""), "trusted.overlay."
	fs, err := New(opts)
	if err != nil {
		ls.t.Fatal(err)
	}
	ls.t.Cleanup(func() { fs.Close() })
	return fs
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (trusted.overlay xattrs, whiteout devices)")
	}
}

func readAll(t *testing.T, fs *FS, p string) string {
	t.Helper()
	f, err := fs.Open(p)
	if err != nil {
		t.Fatalf("open %s: %v", p, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return string(b)
}

func names(t *testing.T, fs *FS, p string) string {
	t.Helper()
	fis, err := fs.ReadDir(p)
	if err != nil {
		t.Fatalf("readdir %s: %v", p, err)
	}
	var n []string
	for _, fi := range fis {
		n = append(n, fi.Name())
	}
	return strings.Join(n, " ")
}

func ino(t *testing.T, fs *FS, p string) uint64 {
	t.Helper()
	fi, err := fs.Lstat(p)
	if err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func wantErrno(t *testing.T, what string, err error, want syscall.Errno) {
	t.Helper()
	var got syscall.Errno
	if !errors.As(err, &got) || got != want {
		t.Fatalf("%s: got %v, want %v", what, err, want)
	}
}

func noErr(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

var time0 = timeUnix(1_600_000_000)

func timeUnix(s int64) time.Time { return time.Unix(s, 0) }

func itoa(i int) string { return strconv.Itoa(i) }
