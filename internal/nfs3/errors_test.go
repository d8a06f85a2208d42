package nfs3_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/ovlnfs/ovlnfs/internal/nfs3"
	"github.com/ovlnfs/ovlnfs/internal/rpctest"
)

// NFS calls over the raw RPC client, for checking statuses the kernel client turns into
// messages (or never sends).

// TestErrorStatuses checks that every failure reaches the client as the NFS3ERR_* of its
// errno.
func TestErrorStatuses(t *testing.T) {
	_, c, root := rpctest.StartMounted(t, rpctest.Options{Files: map[string]string{"file.txt": "lower file\n", "dir/x": "x\n"}})
	file := c.Lookup(root, "file.txt")
	long := strings.Repeat("n", 256)

	a := c.Mkdir(root, "a")
	b := c.Mkdir(root, "b")
	c.Create(b, "c")
	c.Mkdir(root, "empty")

	mkdirArgs := func(dir []byte, name string) []byte {
		return append(rpctest.DirOp(dir, name), rpctest.SattrMode(0o755)...)
	}
	mknodArgs := func(name string, ftype, major, minor uint32) []byte {
		return rpctest.MknodArgs(root, name, ftype, rpctest.SattrMode(0o644), major, minor)
	}
	cases := []struct {
		name string
		proc nfs3.Proc
		args []byte
		want nfs3.Status
	}{
		{"RMDIR of a file", nfs3.ProcRmdir, rpctest.DirOp(root, "file.txt"), nfs3.StatusNotDir},
		{"RMDIR of a non-empty dir", nfs3.ProcRmdir, rpctest.DirOp(root, "b"), nfs3.StatusNotEmpty},
		{"RMDIR of a merged lower dir", nfs3.ProcRmdir, rpctest.DirOp(root, "dir"), nfs3.StatusNotEmpty},
		{"RMDIR of a missing name", nfs3.ProcRmdir, rpctest.DirOp(root, "nope"), nfs3.StatusNoEnt},
		{"REMOVE of a dir", nfs3.ProcRemove, rpctest.DirOp(root, "empty"), nfs3.StatusIsDir},
		{"REMOVE of a missing name", nfs3.ProcRemove, rpctest.DirOp(root, "nope"), nfs3.StatusNoEnt},
		{"MKDIR on a file", nfs3.ProcMkdir, mkdirArgs(root, "file.txt"), nfs3.StatusExist},
		{"MKDIR on a dir", nfs3.ProcMkdir, mkdirArgs(root, "a"), nfs3.StatusExist},
		{"MKDIR name of 256 bytes", nfs3.ProcMkdir, mkdirArgs(root, long), nfs3.StatusNameTooLong},
		{"MKDIR in a file", nfs3.ProcMkdir, mkdirArgs(file, "x"), nfs3.StatusNotDir},
		{"CREATE GUARDED on a file", nfs3.ProcCreate, rpctest.CreateArgs(root, "file.txt", rpctest.CreateGuarded, rpctest.SattrMode(0o644)), nfs3.StatusExist},
		{"CREATE name of 256 bytes", nfs3.ProcCreate, rpctest.CreateArgs(root, long, rpctest.CreateUnchecked, rpctest.SattrMode(0o644)), nfs3.StatusNameTooLong},
		{"CREATE UNCHECKED on a dir", nfs3.ProcCreate, rpctest.CreateArgs(root, "a", rpctest.CreateUnchecked, rpctest.SattrMode(0o644)), nfs3.StatusExist},
		{"SYMLINK on a file", nfs3.ProcSymlink, rpctest.SymlinkArgs(root, "file.txt", rpctest.SattrNone(), "t"), nfs3.StatusExist},
		{"MKNOD whiteout-like 0/0 char device", nfs3.ProcMknod, mknodArgs("dev", rpctest.FtypeChr, 0, 0), nfs3.StatusPerm},
		{"MKNOD of a directory type", nfs3.ProcMknod, mknodArgs("dev", rpctest.FtypeDir, 0, 0), nfs3.StatusBadType},
		{"RENAME dir onto non-empty dir", nfs3.ProcRename, rpctest.RenameArgs(root, "empty", root, "b"), nfs3.StatusNotEmpty},
		{"RENAME dir onto file", nfs3.ProcRename, rpctest.RenameArgs(root, "empty", root, "file.txt"), nfs3.StatusNotDir},
		{"RENAME file onto dir", nfs3.ProcRename, rpctest.RenameArgs(root, "file.txt", root, "empty"), nfs3.StatusIsDir},
		{"RENAME of a lower dir (a redirect)", nfs3.ProcRename, rpctest.RenameArgs(root, "dir", root, "dir2"), nfs3.StatusOK},
		{"RENAME dir into itself", nfs3.ProcRename, rpctest.RenameArgs(root, "b", b, "inside"), nfs3.StatusInval},
		{"RENAME missing", nfs3.ProcRename, rpctest.RenameArgs(root, "nope", root, "nope2"), nfs3.StatusNoEnt},
		{"LINK onto existing", nfs3.ProcLink, rpctest.LinkArgs(file, root, "a"), nfs3.StatusExist},
		{"LINK of a dir", nfs3.ProcLink, rpctest.LinkArgs(a, root, "alink"), nfs3.StatusPerm},
		// The kernel looks the new name up before it refuses a directory.
		{"LINK of a dir onto existing", nfs3.ProcLink, rpctest.LinkArgs(a, root, "file.txt"), nfs3.StatusExist},
		{"LINK of the root onto existing", nfs3.ProcLink, rpctest.LinkArgs(root, root, "file.txt"), nfs3.StatusExist},
		{"LINK of the root", nfs3.ProcLink, rpctest.LinkArgs(root, root, "rootlink"), nfs3.StatusPerm},
		{"LOOKUP missing", nfs3.ProcLookup, rpctest.DirOp(root, "nope"), nfs3.StatusNoEnt},
		{"LOOKUP in a file", nfs3.ProcLookup, rpctest.DirOp(file, "x"), nfs3.StatusNotDir},
		{"LOOKUP name of 256 bytes", nfs3.ProcLookup, rpctest.DirOp(root, long), nfs3.StatusNameTooLong},
		{"GETATTR of a bogus handle", nfs3.ProcGetattr, rpctest.Opaque(bytes.Repeat([]byte{7}, 32)), nfs3.StatusStale},
		{"SETATTR size of a dir", nfs3.ProcSetattr, rpctest.SetattrArgs(a, rpctest.Sattr{Size: new(uint64(0))}, nil), nfs3.StatusIsDir},
		// ISDIR, as knfsd answers READ and WRITE of a directory (nfsd_mode_check): the
		// status RFC 1813 defines for a directory given to a non-directory operation.
		{"WRITE to a dir", nfs3.ProcWrite, rpctest.WriteArgs(a, 0, []byte("x"), rpctest.FileSync), nfs3.StatusIsDir},
		{"READ of a dir", nfs3.ProcRead, rpctest.ReadArgs(a, 0, 16), nfs3.StatusIsDir},
	}
	for _, tc := range cases {
		if st, _ := c.NFS(tc.proc, tc.args); st != tc.want {
			t.Errorf("%s: status %d, want %d", tc.name, st, tc.want)
		}
	}
}

// TestRenameLowerDirWithoutRedirects: with redirect_dir=follow (or nofollow, or off) a
// directory with lower parts cannot move, and the client learns it as XDEV (it then
// copies the tree), as from the kernel overlay.
func TestRenameLowerDirWithoutRedirects(t *testing.T) {
	_, c, root := rpctest.StartMounted(t, rpctest.Options{Files: map[string]string{"dir/x": "x\n"}, RedirectDir: "follow"})
	if st, _ := c.NFS(nfs3.ProcRename, rpctest.RenameArgs(root, "dir", root, "dir2")); st != nfs3.StatusXDev {
		t.Errorf("RENAME of a lower dir: status %d, want 18 (XDEV)", st)
	}
}

// TestErrorStatusesReadOnly: a read-only export answers ROFS for every change, to a caller
// the permissions would refuse too (a user who may not write the directory nor own the
// file): as on a read-only mount and from knfsd, ROFS comes before EACCES and EPERM.
func TestErrorStatusesReadOnly(t *testing.T) {
	_, c, root := rpctest.StartMounted(t, rpctest.Options{Files: map[string]string{"file.txt": "lower file\n"}, ReadOnly: true})
	file := c.Lookup(root, "file.txt")
	for _, who := range []string{"root", "a user"} {
		if who == "a user" {
			c.As(54321, 54321) // owns nothing here: the directories are not writable for it
		}
		for _, tc := range []struct {
			name string
			proc nfs3.Proc
			args []byte
		}{
			{"MKDIR", nfs3.ProcMkdir, append(rpctest.DirOp(root, "d"), rpctest.SattrMode(0o755)...)},
			{"CREATE", nfs3.ProcCreate, rpctest.CreateArgs(root, "f", rpctest.CreateUnchecked, rpctest.SattrMode(0o644))},
			{"CREATE of an existing name", nfs3.ProcCreate, rpctest.CreateArgs(root, "file.txt", rpctest.CreateUnchecked, rpctest.SattrMode(0o644))},
			{"REMOVE", nfs3.ProcRemove, rpctest.DirOp(root, "file.txt")},
			{"RENAME", nfs3.ProcRename, rpctest.RenameArgs(root, "file.txt", root, "moved.txt")},
			{"SETATTR", nfs3.ProcSetattr, rpctest.SetattrArgs(file, rpctest.Sattr{Mode: new(uint32(0o600))}, nil)},
			{"WRITE", nfs3.ProcWrite, rpctest.WriteArgs(file, 0, []byte("x"), rpctest.FileSync)},
		} {
			if st, _ := c.NFS(tc.proc, tc.args); st != nfs3.StatusROFS {
				t.Errorf("%s by %s on a read-only export: status %d, want 30 (ROFS)", tc.name, who, st)
			}
		}
	}
}

// TestErrorStatusesNoSpace: an upper on a full filesystem answers NOSPC, also when the
// space runs out while copying a lower file up for a WRITE.
func TestErrorStatusesNoSpace(t *testing.T) {
	requireRoot(t, "mounting a tmpfs needs root")
	srv := rpctest.StartServer(t, rpctest.Options{Prepare: func(l *rpctest.Layout) {
		// upper and work on a 1 MiB tmpfs with few inodes; the lower file is bigger.
		tmp := filepath.Join(l.Root, "small")
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
		l.Upper, l.Work = filepath.Join(tmp, "upper"), filepath.Join(tmp, "work")
		if err := os.MkdirAll(l.L1, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(l.L1, "big"), bytes.Repeat([]byte("b"), 2<<20), 0o644); err != nil {
			t.Fatal(err)
		}
	}})
	c, root := srv.Mounted(t)
	big := c.Lookup(root, "big")
	if st, _ := c.NFS(nfs3.ProcWrite, rpctest.WriteArgs(big, 0, []byte("x"), rpctest.FileSync)); st != nfs3.StatusNoSpc {
		t.Errorf("WRITE needing a copy-up into a full upper: status %d, want 28 (NOSPC)", st)
	}
	f := c.Create(root, "f")
	if st, _ := c.NFS(nfs3.ProcWrite, rpctest.WriteArgs(f, 0, bytes.Repeat([]byte("w"), 1<<20+4096), rpctest.FileSync)); st != nfs3.StatusNoSpc {
		t.Errorf("WRITE of more than the upper holds: status %d, want 28 (NOSPC)", st)
	}
	var st nfs3.Status
	for i := range 32 {
		st, _ = c.NFS(nfs3.ProcMkdir, append(rpctest.DirOp(root, fmt.Sprintf("d%d", i)), rpctest.SattrMode(0o755)...))
		if st != nfs3.StatusOK {
			break
		}
	}
	if st != nfs3.StatusNoSpc {
		t.Errorf("MKDIR with no inodes left: status %d, want 28 (NOSPC)", st)
	}
}

// requireRoot is requireInCI for tests that must run as root.
func requireRoot(t *testing.T, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		requireInCI(t, why)
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
