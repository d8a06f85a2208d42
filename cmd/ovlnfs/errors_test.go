package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// NFS calls over the raw RPC client, for checking statuses the kernel client turns into
// messages (or never sends).

func dirop(dir []byte, name string) []byte {
	return append(opaqueArg(dir), opaqueArg([]byte(name))...)
}

// sattrMode is a sattr3 setting the mode only.
func sattrMode(mode uint32) []byte {
	var w xdrWriter
	w.uint32(1)
	w.uint32(mode)
	for range 5 {
		w.uint32(0)
	}
	return w.buf
}

func sattrNone() []byte { return make([]byte, 24) }

// nfsCall sends an NFSv3 call and returns its status and a reader after it.
func (c *rpcClient) nfsCall(proc uint32, args []byte) (uint32, *xdrReader) {
	c.t.Helper()
	r := accepted(c.t, c.call(progNFS, nfsVersion, proc, args), acceptSuccess)
	st := r.uint32()
	if r.err != nil {
		c.t.Fatalf("%s: reply without status", procName(progNFS, proc))
	}
	return st, r
}

// newHandle reads post_op_fh3 of a successful CREATE/MKDIR/SYMLINK/MKNOD.
func newHandle(t testing.TB, r *xdrReader) []byte {
	t.Helper()
	if r.uint32() != 1 {
		t.Fatal("no handle in the reply")
	}
	return append([]byte(nil), r.opaque()...)
}

func (c *rpcClient) mkdir(dir []byte, name string) []byte {
	c.t.Helper()
	st, r := c.nfsCall(procMkdir, append(dirop(dir, name), sattrMode(0o755)...))
	if st != 0 {
		c.t.Fatalf("MKDIR %s: status %d", name, st)
	}
	return newHandle(c.t, r)
}

func createArgs(dir []byte, name string, how uint32, rest []byte) []byte {
	var w xdrWriter
	w.buf = dirop(dir, name)
	w.uint32(how)
	return append(w.buf, rest...)
}

func (c *rpcClient) create(dir []byte, name string) []byte {
	c.t.Helper()
	st, r := c.nfsCall(procCreate, createArgs(dir, name, createGuarded, sattrMode(0o644)))
	if st != 0 {
		c.t.Fatalf("CREATE %s: status %d", name, st)
	}
	return newHandle(c.t, r)
}

func writeArgs(fh []byte, off uint64, data []byte, stable uint32) []byte {
	var w xdrWriter
	w.opaque(fh)
	w.uint64(off)
	w.uint32(uint32(len(data)))
	w.uint32(stable)
	w.opaque(data)
	return w.buf
}

// TestErrorStatuses checks that every failure reaches the client as the NFS3ERR_* of its
// errno, for the procedures the front end answers and for those go-nfs answers.
func TestErrorStatuses(t *testing.T) {
	srv := startTestServer(t, map[string]string{"file.txt": "lower file\n", "dir/x": "x\n"})
	c := dialRPC(t, srv.addr)
	root := c.mountRoot()
	file := c.lookup(root, "file.txt")
	long := strings.Repeat("n", 256)

	a := c.mkdir(root, "a")
	b := c.mkdir(root, "b")
	c.create(b, "c")
	c.mkdir(root, "empty")

	var renameArgs = func(fromDir []byte, from string, toDir []byte, to string) []byte {
		return append(dirop(fromDir, from), dirop(toDir, to)...)
	}
	var linkArgs = func(f, dir []byte, name string) []byte { return append(opaqueArg(f), dirop(dir, name)...) }
	var sizeArgs = func(fh []byte, size uint64) []byte {
		var w xdrWriter
		w.opaque(fh)
		for range 3 {
			w.uint32(0)
		}
		w.uint32(1)
		w.uint64(size)
		w.uint32(0)
		w.uint32(0)
		w.uint32(0) // no guard
		return w.buf
	}
	var mknodArgs = func(dir []byte, name string, ftype, major, minor uint32) []byte {
		var w xdrWriter
		w.buf = dirop(dir, name)
		w.uint32(ftype)
		w.buf = append(w.buf, sattrMode(0o644)...)
		if ftype == nf3Chr || ftype == nf3Blk {
			w.uint32(major)
			w.uint32(minor)
		}
		return w.buf
	}
	_ = a

	cases := []struct {
		name string
		proc uint32
		args []byte
		want uint32
	}{
		{"RMDIR of a file", procRmdir, dirop(root, "file.txt"), 20},
		{"RMDIR of a non-empty dir", procRmdir, dirop(root, "b"), 66},
		{"RMDIR of a merged lower dir", procRmdir, dirop(root, "dir"), 66},
		{"RMDIR of a missing name", procRmdir, dirop(root, "nope"), 2},
		{"REMOVE of a dir", procRemove, dirop(root, "empty"), 21},
		{"REMOVE of a missing name", procRemove, dirop(root, "nope"), 2},
		{"MKDIR on a file", procMkdir, append(dirop(root, "file.txt"), sattrMode(0o755)...), 17},
		{"MKDIR on a dir", procMkdir, append(dirop(root, "a"), sattrMode(0o755)...), 17},
		{"MKDIR name of 256 bytes", procMkdir, append(dirop(root, long), sattrMode(0o755)...), 63},
		{"MKDIR in a file", procMkdir, append(dirop(file, "x"), sattrMode(0o755)...), 20},
		{"CREATE GUARDED on a file", procCreate, createArgs(root, "file.txt", createGuarded, sattrMode(0o644)), 17},
		{"CREATE name of 256 bytes", procCreate, createArgs(root, long, createUnchecked, sattrMode(0o644)), 63},
		{"CREATE UNCHECKED on a dir", procCreate, createArgs(root, "a", createUnchecked, sattrMode(0o644)), 17},
		{"SYMLINK on a file", procSymlink, append(append(dirop(root, "file.txt"), sattrNone()...), opaqueArg([]byte("t"))...), 17},
		{"MKNOD whiteout-like 0/0 char device", procMknod, mknodArgs(root, "dev", nf3Chr, 0, 0), 1},
		{"MKNOD of a directory type", procMknod, mknodArgs(root, "dev", nf3Dir, 0, 0), 10007},
		{"RENAME dir onto non-empty dir", procRename, renameArgs(root, "empty", root, "b"), 66},
		{"RENAME dir onto file", procRename, renameArgs(root, "empty", root, "file.txt"), 20},
		{"RENAME file onto dir", procRename, renameArgs(root, "file.txt", root, "empty"), 21},
		{"RENAME of a lower dir (EXDEV)", procRename, renameArgs(root, "dir", root, "dir2"), 18},
		{"RENAME dir into itself", procRename, renameArgs(root, "b", b, "inside"), 22},
		{"RENAME missing", procRename, renameArgs(root, "nope", root, "nope2"), 2},
		{"LINK onto existing", procLink, linkArgs(file, root, "a"), 17},
		{"LINK of a dir", procLink, linkArgs(a, root, "alink"), 1},
		{"LOOKUP missing", procLookup, dirop(root, "nope"), 2},
		{"LOOKUP in a file", procLookup, dirop(file, "x"), 20},
		{"LOOKUP name of 256 bytes", procLookup, dirop(root, long), 63},
		{"GETATTR of a bogus handle", procGetattr, opaqueArg(bytes.Repeat([]byte{7}, 32)), 70},
		{"SETATTR size of a dir", procSetattr, sizeArgs(a, 0), 21},
		// RFC 1813 lists INVAL, not ISDIR, among WRITE's errors.
		{"WRITE to a dir", procWrite, writeArgs(a, 0, []byte("x"), 2), 22},
	}
	for _, tc := range cases {
		if st, _ := c.nfsCall(tc.proc, tc.args); st != tc.want {
			t.Errorf("%s: status %d, want %d", tc.name, st, tc.want)
		}
	}
}

// TestErrorStatusesReadOnly: a read-only export answers ROFS for every change.
func TestErrorStatusesReadOnly(t *testing.T) {
	srv := startTestServer(t, map[string]string{"file.txt": "lower file\n"}, "--read-only")
	c := dialRPC(t, srv.addr)
	root := c.mountRoot()
	file := c.lookup(root, "file.txt")
	for _, tc := range []struct {
		name string
		proc uint32
		args []byte
	}{
		{"MKDIR", procMkdir, append(dirop(root, "d"), sattrMode(0o755)...)},
		{"CREATE", procCreate, createArgs(root, "f", createUnchecked, sattrMode(0o644))},
		{"REMOVE", procRemove, dirop(root, "file.txt")},
		{"SETATTR", procSetattr, append(append(opaqueArg(file), sattrMode(0o600)...), 0, 0, 0, 0)},
		{"WRITE", procWrite, writeArgs(file, 0, []byte("x"), 2)},
	} {
		if st, _ := c.nfsCall(tc.proc, tc.args); st != 30 {
			t.Errorf("%s on a read-only export: status %d, want 30 (ROFS)", tc.name, st)
		}
	}
}

// TestErrorStatusesNoSpace: an upper on a full filesystem answers NOSPC, also when the
// space runs out while copying a lower file up for a WRITE (a go-nfs procedure whose
// status the front end repairs).
func TestErrorStatusesNoSpace(t *testing.T) {
	if os.Geteuid() != 0 {
		requireInCI(t, "mounting a tmpfs needs root")
	}
	srv := startTestServerWith(t, func(l *layout) {
		// upper and work on a 1 MiB tmpfs with few inodes; the lower file is bigger.
		tmp := filepath.Join(l.root, "small")
		if err := os.MkdirAll(tmp, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount("tmpfs", tmp, "tmpfs", 0, "size=1m,nr_inodes=16"); err != nil {
			t.Fatalf("mount tmpfs: %v", err)
		}
		t.Cleanup(func() {
			if err := unix.Unmount(tmp, unix.MNT_DETACH); err != nil {
				t.Errorf("umount %s: %v", tmp, err)
			}
		})
		l.upper, l.work = filepath.Join(tmp, "upper"), filepath.Join(tmp, "work")
		if err := os.MkdirAll(l.l1, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(l.l1, "big"), bytes.Repeat([]byte("b"), 2<<20), 0o644); err != nil {
			t.Fatal(err)
		}
	}, nil)
	c := dialRPC(t, srv.addr)
	root := c.mountRoot()
	big := c.lookup(root, "big")
	if st, _ := c.nfsCall(procWrite, writeArgs(big, 0, []byte("x"), 2)); st != 28 {
		t.Errorf("WRITE needing a copy-up into a full upper: status %d, want 28 (NOSPC)", st)
	}
	f := c.create(root, "f")
	if st, _ := c.nfsCall(procWrite, writeArgs(f, 0, bytes.Repeat([]byte("w"), 1<<20+4096), 2)); st != 28 {
		t.Errorf("WRITE of more than the upper holds: status %d, want 28 (NOSPC)", st)
	}
	var st uint32
	for i := range 32 {
		st, _ = c.nfsCall(procMkdir, append(dirop(root, "d"+itoa(uint32(i))), sattrMode(0o755)...))
		if st != 0 {
			break
		}
	}
	if st != 28 {
		t.Errorf("MKDIR with no inodes left: status %d, want 28 (NOSPC)", st)
	}
}

// requireInCI skips outside CI and fails in it, as the project's other tests do.
func requireInCI(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("prerequisite missing in CI: %s", why)
	}
	t.Skipf("prerequisite missing: %s", why)
}

// TestNFSStatusOf is the errno → status table of RFC 1813 section 2.6.
func TestNFSStatusOf(t *testing.T) {
	for errno, want := range map[syscall.Errno]uint32{
		syscall.EPERM: 1, syscall.ENOENT: 2, syscall.EIO: 5, syscall.ENXIO: 6, syscall.EACCES: 13,
		syscall.EEXIST: 17, syscall.EXDEV: 18, syscall.ENODEV: 19, syscall.ENOTDIR: 20,
		syscall.EISDIR: 21, syscall.EINVAL: 22, syscall.EFBIG: 27, syscall.ENOSPC: 28,
		syscall.EROFS: 30, syscall.EMLINK: 31, syscall.ENAMETOOLONG: 63, syscall.ENOTEMPTY: 66,
		syscall.EDQUOT: 69, syscall.ESTALE: 70, syscall.ENOTSUP: 10004, syscall.ELOOP: 22,
		syscall.EBADF: 10006,
	} {
		if got := nfsStatusOf(&os.PathError{Op: "x", Path: "y", Err: errno}); got != want {
			t.Errorf("%v: %d, want %d", errno, got, want)
		}
	}
	if got := nfsStatusOf(exec.ErrNotFound); got != nfsStatusServerFault {
		t.Errorf("non-errno error: %d, want SERVERFAULT", got)
	}
}
