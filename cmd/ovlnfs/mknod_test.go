package main

import (
	"os"
	"syscall"
	"testing"
)

// TestMknodAndLink: MKNOD makes the asked type (as root) and LINK counts both names.
func TestMknodAndLink(t *testing.T) {
	if os.Geteuid() != 0 {
		requireInCI(t, "device nodes need root")
	}
	srv := startTestServer(t, map[string]string{"lower.txt": "lower\n"})
	c := dialRPC(t, srv.addr)
	root := c.mountRoot()
	for _, tc := range []struct {
		name         string
		ftype        uint32
		major, minor uint32
		sysType      uint32
	}{
		{"chr", nf3Chr, 1, 3, syscall.S_IFCHR},
		{"blk", nf3Blk, 7, 0, syscall.S_IFBLK},
		{"fifo", nf3Fifo, 0, 0, syscall.S_IFIFO},
		{"sock", nf3Sock, 0, 0, syscall.S_IFSOCK},
	} {
		var w xdrWriter
		w.buf = dirop(root, tc.name)
		w.uint32(tc.ftype)
		w.buf = append(w.buf, sattrMode(0o640)...)
		if tc.ftype == nf3Chr || tc.ftype == nf3Blk {
			w.uint32(tc.major)
			w.uint32(tc.minor)
		}
		st, r := c.nfsCall(procMknod, w.buf)
		if st != 0 {
			t.Errorf("MKNOD %s: status %d", tc.name, st)
			continue
		}
		fh := newHandle(t, r)
		a := c.getattr(fh)
		if a.ftype != tc.ftype || a.mode != 0o640 {
			t.Errorf("MKNOD %s: type %d mode %o, want %d 640", tc.name, a.ftype, a.mode, tc.ftype)
		}
		var fi syscall.Stat_t
		if err := syscall.Lstat(srv.layout.upper+"/"+tc.name, &fi); err != nil {
			t.Errorf("MKNOD %s: nothing in the upper: %v", tc.name, err)
		} else if fi.Mode&syscall.S_IFMT != tc.sysType || (tc.major != 0 && fi.Rdev != uint64(tc.major<<8|tc.minor)) {
			t.Errorf("MKNOD %s: upper has mode %o rdev %x", tc.name, fi.Mode, fi.Rdev)
		}
	}

	file := c.lookup(root, "lower.txt")
	var w xdrWriter
	w.opaque(file)
	w.buf = append(w.buf, dirop(root, "second")...)
	st, r := c.nfsCall(procLink, w.buf)
	if st != 0 {
		t.Fatalf("LINK: status %d", st)
	}
	if a, ok := r.postOp(); !ok || a.nlink != 2 {
		t.Errorf("LINK reply: nlink %d (attributes %v), want 2", a.nlink, ok)
	}
	if a, b := c.getattr(file), c.getattr(c.lookup(root, "second")); a.nlink != 2 || b.nlink != 2 || a.fileid != b.fileid {
		t.Errorf("after LINK: nlink %d and %d, fileids %d %d; want 2, 2 and one fileid", a.nlink, b.nlink, a.fileid, b.fileid)
	}
}
