package nfs3_test

import (
	"path/filepath"
	"syscall"
	"testing"

	"github.com/ovlnfs/ovlnfs/internal/nfs3"
	"github.com/ovlnfs/ovlnfs/internal/rpctest"
)

// TestMknodAndLink: MKNOD makes the asked type (as root) and LINK counts both names.
func TestMknodAndLink(t *testing.T) {
	requireRoot(t, "device nodes need root")
	srv, c, root := rpctest.StartMounted(t, rpctest.Options{Files: map[string]string{"lower.txt": "lower\n"}})
	for _, tc := range []struct {
		name         string
		ftype        uint32
		major, minor uint32
		sysType      uint32
	}{
		{"chr", rpctest.FtypeChr, 1, 3, syscall.S_IFCHR},
		{"blk", rpctest.FtypeBlk, 7, 0, syscall.S_IFBLK},
		{"fifo", rpctest.FtypeFifo, 0, 0, syscall.S_IFIFO},
		{"sock", rpctest.FtypeSock, 0, 0, syscall.S_IFSOCK},
	} {
		st, r := c.NFS(nfs3.ProcMknod, rpctest.MknodArgs(root, tc.name, tc.ftype, rpctest.SattrMode(0o640), tc.major, tc.minor))
		if st != nfs3.StatusOK {
			t.Errorf("MKNOD %s: status %d", tc.name, st)
			continue
		}
		fh := rpctest.NewHandle(t, r)
		a := c.Getattr(fh)
		if a.Ftype != tc.ftype || a.Mode != 0o640 {
			t.Errorf("MKNOD %s: type %d mode %o, want %d 640", tc.name, a.Ftype, a.Mode, tc.ftype)
		}
		var fi syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(srv.Layout.Upper, tc.name), &fi); err != nil {
			t.Errorf("MKNOD %s: nothing in the upper: %v", tc.name, err)
		} else if fi.Mode&syscall.S_IFMT != tc.sysType || (tc.major != 0 && fi.Rdev != uint64(tc.major<<8|tc.minor)) {
			t.Errorf("MKNOD %s: upper has mode %o rdev %x", tc.name, fi.Mode, fi.Rdev)
		}
	}

	file := c.Lookup(root, "lower.txt")
	st, r := c.NFS(nfs3.ProcLink, rpctest.LinkArgs(file, root, "second"))
	if st != nfs3.StatusOK {
		t.Fatalf("LINK: status %d", st)
	}
	if a, ok := rpctest.GetPostOp(r); !ok || a.Nlink != 2 {
		t.Errorf("LINK reply: nlink %d (attributes %v), want 2", a.Nlink, ok)
	}
	if a, b := c.Getattr(file), c.Getattr(c.Lookup(root, "second")); a.Nlink != 2 || b.Nlink != 2 || a.Fileid != b.Fileid {
		t.Errorf("after LINK: nlink %d and %d, fileids %d %d; want 2, 2 and one fileid", a.Nlink, b.Nlink, a.Fileid, b.Fileid)
	}
}
