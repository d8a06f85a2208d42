package nfs3_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ovlnfs/ovlnfs/internal/nfs3"
	"github.com/ovlnfs/ovlnfs/internal/rpctest"
)

// fsstat is an FSSTAT reply's figures: tbytes, fbytes, abytes, tfiles, ffiles, afiles.
func fsstat(t *testing.T, c *rpctest.Client, fh []byte) [6]uint64 {
	t.Helper()
	st, r := c.NFS(nfs3.ProcFsstat, rpctest.Opaque(fh))
	if st != nfs3.StatusOK {
		t.Fatalf("FSSTAT: status %d", st)
	}
	rpctest.GetPostOp(r)
	var v [6]uint64
	for i := range v {
		v[i] = r.Uint64()
	}
	if r.Err() != nil {
		t.Fatal(r.Err())
	}
	return v
}

// TestQuotaOverNFS: with quota_bytes and quota_inodes, a WRITE, a SETATTR of the size and
// a copy-up that would pass the quota answer NFS3ERR_DQUOT and write nothing; a CREATE past
// the inode quota does too; FSSTAT reports the quota as the export's size and what is left
// of it as free; a REMOVE gives the room back.
func TestQuotaOverNFS(t *testing.T) {
	const limit, inodes = 64 << 10, 4
	s, c, root := rpctest.StartMounted(t, rpctest.Options{QuotaBytes: limit, QuotaInodes: inodes,
		Files: map[string]string{"big": strings.Repeat("b", 100<<10)}})
	if got := fsstat(t, c, root); got != [6]uint64{limit, limit, limit, inodes, inodes, inodes} {
		t.Fatalf("FSSTAT of the empty upper: %v", got)
	}
	f := c.Create(root, "f")
	c.Write(f, 0, make([]byte, 60000), rpctest.FileSync)
	upperSize := func() int64 {
		fi, err := os.Stat(filepath.Join(s.Layout.Upper, "f"))
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	st, _ := c.NFS(nfs3.ProcWrite, rpctest.WriteArgs(f, 60000, make([]byte, 8000), rpctest.FileSync))
	if st != nfs3.StatusDQuot || upperSize() != 60000 {
		t.Fatalf("WRITE past the quota: status %d, upper file %d bytes; want %d and 60000", st, upperSize(), nfs3.StatusDQuot)
	}
	size := uint64(limit + 1)
	if st, _ := c.NFS(nfs3.ProcSetattr, rpctest.SetattrArgs(f, rpctest.Sattr{Size: &size}, nil)); st != nfs3.StatusDQuot || upperSize() != 60000 {
		t.Fatalf("SETATTR size past the quota: status %d, upper file %d bytes", st, upperSize())
	}
	big := c.Lookup(root, "big")
	if st, _ := c.NFS(nfs3.ProcWrite, rpctest.WriteArgs(big, 0, []byte("x"), rpctest.FileSync)); st != nfs3.StatusDQuot {
		t.Fatalf("WRITE copying up a file larger than the quota: status %d", st)
	}
	if _, err := os.Lstat(filepath.Join(s.Layout.Upper, "big")); !os.IsNotExist(err) {
		t.Fatalf("the refused copy-up left an upper file: %v", err)
	}
	if got, want := fsstat(t, c, root), [6]uint64{limit, limit - 60000, limit - 60000, inodes, inodes - 1, inodes - 1}; got != want {
		t.Fatalf("FSSTAT: %v, want %v", got, want)
	}
	c.Mkdir(root, "d1")
	c.Mkdir(root, "d2")
	c.Create(root, "g")
	st, _ = c.NFS(nfs3.ProcCreate, rpctest.CreateArgs(root, "h", rpctest.CreateUnchecked, rpctest.SattrNone()))
	if st != nfs3.StatusDQuot {
		t.Fatalf("CREATE past the inode quota: status %d", st)
	}
	if st, _ := c.NFS(nfs3.ProcMkdir, append(rpctest.DirOp(root, "d3"), rpctest.SattrNone()...)); st != nfs3.StatusDQuot {
		t.Fatalf("MKDIR past the inode quota: status %d", st)
	}
	if got := fsstat(t, c, root); got[4] != 0 || got[5] != 0 {
		t.Fatalf("FSSTAT at the inode quota: %v", got)
	}
	if st, _ := c.NFS(nfs3.ProcRemove, rpctest.DirOp(root, "f")); st != nfs3.StatusOK {
		t.Fatalf("REMOVE: status %d", st)
	}
	if got, want := fsstat(t, c, root), [6]uint64{limit, limit, limit, inodes, 1, 1}; got != want {
		t.Fatalf("FSSTAT after REMOVE: %v, want %v", got, want)
	}
	g := c.Lookup(root, "g")
	c.Write(g, 0, make([]byte, limit), rpctest.Unstable) // the freed room, to the byte
}
