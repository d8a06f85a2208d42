package copyup

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/billyunion/layer"
)

// methodLog is the copier's log handler in tests: it keeps, per copied
// name, the data-copy method the copier reported.
type methodLog struct {
	mu sync.Mutex
	m  map[string]string
}

func (h *methodLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *methodLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *methodLog) WithGroup(string) slog.Handler            { return h }
func (h *methodLog) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "copy-up: data copied" {
		return nil
	}
	var name, method string
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "name":
			name = a.Value.String()
		case "method":
			method = a.Value.String()
		}
		return true
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		h.m = map[string]string{}
	}
	h.m[name] = method
	return nil
}

func (h *methodLog) of(name string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.m[name]
}

func inCI() bool {
	v := strings.ToLower(os.Getenv("CI"))
	return v != "" && v != "0" && v != "false"
}

// requireInCI stops a test whose prerequisite is missing: a failure in CI,
// where nothing may be skipped silently, a skip elsewhere.
func requireInCI(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...) + " (install with: sudo .ci/run --deps-only)"
	if inCI() {
		t.Fatalf("PREREQUISITE MISSING in CI: %s", msg)
	}
	t.Skipf("SKIPPED, PREREQUISITE MISSING: %s", msg)
}

func requireRootInCI(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		requireInCI(t, "needs root (mounts, chown, trusted xattrs)")
	}
}

// mountTmpfs mounts a fresh tmpfs (with options opts) and answers its path.
func mountTmpfs(t *testing.T, opts string) string {
	t.Helper()
	mnt := t.TempDir()
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, opts); err != nil {
		requireInCI(t, "mounting tmpfs: %v", err)
	}
	t.Cleanup(func() { unmount(t, mnt) })
	return mnt
}

func unmount(t *testing.T, mnt string) {
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Errorf("unmounting %s: %v", mnt, err)
		unix.Unmount(mnt, unix.MNT_DETACH)
	}
}

// loopFS makes a filesystem of type fstype ("xfs" with reflink=1, or
// "btrfs") in an image file, mounts it through a loop device and answers
// the mount point; cleanup unmounts it and detaches the device.
func loopFS(t *testing.T, fstype string, size int64) string {
	t.Helper()
	requireRootInCI(t)
	tmp := t.TempDir() // first, so its removal runs after the unmount
	mkfs := map[string][]string{
		"xfs":   {"mkfs.xfs", "-q", "-f", "-m", "reflink=1"},
		"btrfs": {"mkfs.btrfs", "-q", "-f"},
	}[fstype]
	for _, c := range []string{mkfs[0], "losetup"} {
		if _, err := exec.LookPath(c); err != nil {
			requireInCI(t, "command %q not found (packages xfsprogs, btrfs-progs, mount)", c)
		}
	}
	img := filepath.Join(tmp, fstype+".img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, size); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(mkfs[0], append(mkfs[1:], img)...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", mkfs[0], err, out)
	}
	out, err := exec.Command("losetup", "-f", "--show", img).CombinedOutput()
	if err != nil {
		requireInCI(t, "no loop device (losetup -f --show): %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", dev, err, out)
		}
	})
	mnt := filepath.Join(tmp, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(dev, mnt, fstype, 0, ""); err != nil {
		requireInCI(t, "mounting %s (%s): %v", dev, fstype, err)
	}
	t.Cleanup(func() { unmount(t, mnt) })
	return mnt
}

// segment is a run of data in a test file; the rest is holes.
type segment struct{ off, len int64 }

// writeSparse writes name in the fixture's lower: size bytes, data (not
// zeros, and different in every 4 KiB block) only in segs.
func (f *fixture) writeSparse(t *testing.T, name string, size int64, segs ...segment) {
	t.Helper()
	fl, err := os.OpenFile(filepath.Join(f.lowerDir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer fl.Close()
	pattern := make([]byte, 1<<20)
	x := uint64(0x9e3779b97f4a7c15)
	for i := 0; i+8 <= len(pattern); i += 8 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		binary.LittleEndian.PutUint64(pattern[i:], x|1)
	}
	buf := make([]byte, len(pattern))
	for _, s := range segs {
		for off := s.off; off < s.off+s.len; {
			n := min(int64(len(buf)), s.off+s.len-off)
			copy(buf, pattern)
			for i := int64(0); i+8 <= n; i += 4096 {
				binary.LittleEndian.PutUint64(buf[i:], uint64(off+i)|1<<63) // where it belongs
			}
			if _, err := fl.WriteAt(buf[:n], off); err != nil {
				t.Fatal(err)
			}
			off += n
		}
	}
	if err := fl.Truncate(size); err != nil {
		t.Fatal(err)
	}
}

// syncLower fsyncs name in the lower, as a lower's files long written are:
// a clone of dirty data would first write it out.
func (f *fixture) syncLower(t *testing.T, name string) {
	t.Helper()
	fl, err := os.Open(filepath.Join(f.lowerDir, name))
	if err != nil {
		t.Fatal(err)
	}
	defer fl.Close()
	if err := fl.Sync(); err != nil {
		t.Fatal(err)
	}
}

// sameContent fails t unless the lower and upper name hold the same bytes.
func (f *fixture) sameContent(t *testing.T, name string) { f.sameContentEvery(t, name, 0) }

// sameContentEvery compares 1 MiB of every stride bytes, and the end (all
// of it with stride 0).
func (f *fixture) sameContentEvery(t *testing.T, name string, stride int64) {
	t.Helper()
	la, err := os.Open(filepath.Join(f.lowerDir, name))
	if err != nil {
		t.Fatal(err)
	}
	defer la.Close()
	ua, err := os.Open(filepath.Join(f.upperDir, name))
	if err != nil {
		t.Fatal(err)
	}
	defer ua.Close()
	sa, err := la.Stat()
	if err != nil {
		t.Fatal(err)
	}
	sb, err := ua.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if sb.Size() != sa.Size() {
		t.Fatalf("%s: %d bytes in the lower, %d in the copy", name, sa.Size(), sb.Size())
	}
	const chunk = 1 << 20
	step := int64(chunk)
	if stride > 0 {
		step = stride
	}
	ba, bb := make([]byte, chunk), make([]byte, chunk)
	for off := int64(0); ; off += step {
		if off >= sa.Size() {
			if stride == 0 || sa.Size() <= chunk {
				return
			}
			off = sa.Size() - chunk // the end too
		}
		na, ea := la.ReadAt(ba, off)
		nb, eb := ua.ReadAt(bb, off)
		if (ea != nil && ea != io.EOF) || (eb != nil && eb != io.EOF) {
			t.Fatalf("%s: reading at %d: %v, %v", name, off, ea, eb)
		}
		if na != nb || !bytes.Equal(ba[:na], bb[:nb]) {
			t.Fatalf("%s: content differs in the 1 MiB from offset %d (%d and %d bytes read)", name, off, na, nb)
		}
		if off+chunk >= sa.Size() {
			return
		}
	}
}

// dataMap lists the data extents of path as SEEK_DATA/SEEK_HOLE see them.
func dataMap(t *testing.T, path string) []segment {
	t.Helper()
	fd, err := unix.Open(path, unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	var m []segment
	for pos := int64(0); pos < st.Size; {
		d, err := unix.Seek(fd, pos, unix.SEEK_DATA)
		if err == unix.ENXIO {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		h, err := unix.Seek(fd, d, unix.SEEK_HOLE)
		if err != nil {
			t.Fatal(err)
		}
		m = append(m, segment{d, h - d})
		pos = h
	}
	return m
}

// within reports whether every run of inner lies inside a run of outer.
func within(inner, outer []segment) bool {
	for _, i := range inner {
		ok := false
		for _, o := range outer {
			if i.off >= o.off && i.off+i.len <= o.off+o.len {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// sameSparseness fails t unless the copy of name has at least the holes
// of the source and takes no more room. (The copy may have more: XFS
// preallocates unwritten extents, which SEEK_DATA counts as data but
// copying, or cloning, leaves out.)
func (f *fixture) sameSparseness(t *testing.T, name string) {
	t.Helper()
	src, dst := filepath.Join(f.lowerDir, name), filepath.Join(f.upperDir, name)
	sm, dm := dataMap(t, src), dataMap(t, dst)
	if !within(dm, sm) {
		t.Errorf("%s: data extents %v in the lower, %v in the copy", name, sm, dm)
	}
	var ss, ds unix.Stat_t
	if err := unix.Stat(src, &ss); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(dst, &ds); err != nil {
		t.Fatal(err)
	}
	if ds.Size != ss.Size || ds.Blocks > ss.Blocks+128 {
		t.Errorf("%s: lower %d bytes in %d blocks, copy %d bytes in %d blocks", name, ss.Size, ss.Blocks, ds.Size, ds.Blocks)
	}
}

// sparseCases are files every method must copy exactly.
var sparseCases = []struct {
	name string
	size int64
	segs []segment
}{
	{"empty", 0, nil},
	{"small", 5, []segment{{0, 5}}},
	{"dense-unaligned", 3<<20 + 17, []segment{{0, 3<<20 + 17}}},
	{"sparse", 64 << 20, []segment{{0, 64 << 10}, {3 << 20, 100<<10 + 3}, {40 << 20, 2 << 20}}},
	{"leading-hole", 16 << 20, []segment{{8 << 20, 4096}}},
	{"only-holes", 32 << 20, nil},
}

// copyAll copies every sparse case up and checks content, holes and the
// method the copier reports.
func (f *fixture) copyAll(t *testing.T, want Method) {
	t.Helper()
	for _, c := range sparseCases {
		f.writeSparse(t, c.name, c.size, c.segs...)
	}
	for _, c := range sparseCases {
		if err := f.copy(t, c.name); err != nil {
			t.Fatal(err)
		}
		f.sameContent(t, c.name)
		f.sameSparseness(t, c.name)
		want := want
		if c.segs == nil && want != MethodClone {
			want = MethodNoData
		}
		if got := f.methods.of(c.name); got != want.String() {
			t.Errorf("%s copied with %q, want %q", c.name, got, want)
		}
	}
}

// reflinks reports whether dir's filesystem clones files.
func reflinks(t *testing.T, dir string) bool {
	t.Helper()
	a, err := os.CreateTemp(dir, "probe")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(a.Name())
	defer a.Close()
	a.Write(make([]byte, 4096))
	b, err := os.CreateTemp(dir, "probe")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(b.Name())
	defer b.Close()
	return unix.IoctlFileClone(int(b.Fd()), int(a.Fd())) == nil
}

// TestCopyUpSameFilesystem copies up within the test's temporary
// directory (ext4 here: no reflinks, so copy_file_range) and within a
// tmpfs (copy_file_range too), each method forced in turn as well.
func TestCopyUpSameFilesystem(t *testing.T) {
	requireRootInCI(t)
	tmp := t.TempDir()
	def := MethodCopyRange
	if reflinks(t, tmp) {
		def = MethodClone
	}
	for _, c := range []struct {
		name  string
		root  func(t *testing.T) string
		first Method
		want  Method
		chunk int64
	}{
		{"tempdir", func(t *testing.T) string { return t.TempDir() }, MethodClone, def, 0},
		{"tempdir-copy_file_range", func(t *testing.T) string { return t.TempDir() }, MethodCopyRange, MethodCopyRange, 0},
		{"tempdir-copy_file_range-calls-of-61k", func(t *testing.T) string { return t.TempDir() }, MethodCopyRange, MethodCopyRange, 61<<10 + 7},
		{"tempdir-read-write", func(t *testing.T) string { return t.TempDir() }, MethodReadWrite, MethodReadWrite, 0},
		{"tmpfs", func(t *testing.T) string { return mountTmpfs(t, "") }, MethodClone, MethodCopyRange, 0},
		{"tmpfs-read-write", func(t *testing.T) string { return mountTmpfs(t, "") }, MethodReadWrite, MethodReadWrite, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			root := c.root(t)
			f := newFixtureAt(t, root, root)
			f.copier.first, f.copier.rangeChunk = c.first, c.chunk
			f.copyAll(t, c.want)
		})
	}
}

// TestCopyUpAcrossFilesystems has the lower on the temporary directory's
// filesystem and the upper on a tmpfs: FICLONE and copy_file_range both
// answer EXDEV, and the read/write copy does the work.
func TestCopyUpAcrossFilesystems(t *testing.T) {
	requireRootInCI(t)
	f := newFixtureAt(t, t.TempDir(), mountTmpfs(t, ""))
	f.copyAll(t, MethodReadWrite)
}

// TestCopyUpErrorsAreErrnos fills a small upper: the copy-up fails with
// ENOSPC as a syscall.Errno, and leaves nothing behind.
func TestCopyUpErrorsAreErrnos(t *testing.T) {
	requireRootInCI(t)
	for _, first := range []Method{MethodClone, MethodReadWrite} {
		t.Run(first.String(), func(t *testing.T) {
			root := mountTmpfs(t, "size=2m")
			f := newFixtureAt(t, root, root)
			f.copier.first = first
			// Dense, so both methods write it all; the lower is on the same
			// tmpfs, so the lower and the copy cannot both fit.
			f.writeSparse(t, "big", 1536<<10, segment{0, 1536 << 10})
			err := f.copy(t, "big")
			var errno syscall.Errno
			if !errors.Is(err, unix.ENOSPC) || !errors.As(err, &errno) {
				t.Fatalf("copy-up into a full upper: %v (%T), want ENOSPC", err, err)
			}
			if names, _ := f.work.Names(); len(names) != 0 {
				t.Errorf("work dir not clean: %v", names)
			}
			if _, err := layer.Lstat(f.upper.Root, "big"); err != unix.ENOENT {
				t.Errorf("upper has the failed copy: %v", err)
			}
		})
	}
}

// TestCopyUpClonesOnReflinkFilesystems copies up a 1 GiB file on
// loop-mounted XFS (reflink=1) and btrfs images: the copy is a clone
// (every extent shared with the lower, so no data moved) and costs
// milliseconds. A copy forced through read/write, which must not share,
// shows the extent check tells the difference. Sparse files stay sparse.
func TestCopyUpClonesOnReflinkFilesystems(t *testing.T) {
	for _, fstype := range []string{"xfs", "btrfs"} {
		t.Run(fstype, func(t *testing.T) {
			mnt := loopFS(t, fstype, 3<<30)
			f := newFixtureAt(t, mnt, mnt)
			const big = 1 << 30
			f.writeSparse(t, "big", big, segment{0, big})
			f.syncLower(t, "big")
			f.writeSparse(t, "copied", 8<<20, segment{0, 8 << 20})

			start := time.Now()
			if err := f.copy(t, "big"); err != nil {
				t.Fatal(err)
			}
			took := time.Since(start)
			t.Logf("%s: 1 GiB copy-up took %v (%s)", fstype, took, f.methods.of("big"))
			if got := f.methods.of("big"); got != MethodClone.String() {
				t.Errorf("copied with %q, want FICLONE", got)
			}
			f.sharesAll(t, "big", true)
			f.sameContentEvery(t, "big", 32<<20)
			if took > 2*time.Second {
				t.Errorf("1 GiB clone took %v: data was copied", took)
			}

			f.copier.first = MethodReadWrite
			if err := f.copy(t, "copied"); err != nil {
				t.Fatal(err)
			}
			f.sharesAll(t, "copied", false)
			f.sameContent(t, "copied")

			f.copier.first = MethodClone
			f.copyAll(t, MethodClone)
			f.sharesAll(t, "sparse", true)
		})
	}
}

// extents answers path's extent map.
func extents(t *testing.T, path string) []Extent {
	t.Helper()
	all, err := Extents(path)
	if err != nil {
		t.Fatal(err)
	}
	return all
}

// sharesAll checks that the copy of name shares every extent with the
// lower (the same physical blocks at the same offsets, with the shared
// flag), or, with want false, none.
func (f *fixture) sharesAll(t *testing.T, name string, want bool) {
	t.Helper()
	src := extents(t, filepath.Join(f.lowerDir, name))
	dst := extents(t, filepath.Join(f.upperDir, name))
	if len(dst) == 0 {
		t.Fatalf("%s: the copy has no extents", name)
	}
	shared, same := 0, 0
	for _, e := range dst {
		if e.Shared {
			shared++
		}
		for _, s := range src {
			if e.Logical >= s.Logical && e.Logical+e.Length <= s.Logical+s.Length && e.Physical == s.Physical+(e.Logical-s.Logical) {
				same++
				break
			}
		}
	}
	switch {
	case want && (shared != len(dst) || same != len(dst)):
		t.Errorf("%s: of the copy's %d extents %d are shared and %d are the lower's blocks; lower %v, copy %v", name, len(dst), shared, same, src, dst)
	case !want && (shared != 0 || same != 0):
		t.Errorf("%s: forced data copy shares %d of %d extents with the lower (%d at the lower's blocks)", name, shared, len(dst), same)
	}
}
