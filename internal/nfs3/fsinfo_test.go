package nfs3_test

import (
	"fmt"
	"testing"

	"github.com/ovlnfs/ovlnfs/internal/nfs3"
	"github.com/ovlnfs/ovlnfs/internal/rpctest"
)

// linuxReaddirStart and linuxCachePageEntries are the Linux client's (6.1) first READDIR
// size, min(dtpref, 64 KiB), and the entries of one page of its directory cache.
const (
	linuxReaddirStart     = 64 << 10
	linuxCachePageEntries = 127
)

// TestFsinfoLetsClientsPageBusyDirectories: FSINFO offers transfer sizes at which a Linux
// client's first READDIRPLUS reply fills more than one page of its directory cache, so a
// listing advances even when the directory changes during every reply (see fsinfo.go).
// FSSTAT and PATHCONF report the export's fsid as FSINFO and GETATTR do.
func TestFsinfoLetsClientsPageBusyDirectories(t *testing.T) {
	files := map[string]string{}
	for i := range 600 {
		// node_modules-like names, longer than the fixtures elsewhere
		files[fmt.Sprintf("busy/package-with-a-longish-name-%04d.js", i)] = "x"
	}
	_, c, root := rpctest.StartMounted(t, rpctest.Options{Files: files})

	fi := c.Fsinfo(root)
	rootAttrs := c.Getattr(root)
	if fi.Attr == nil || *fi.Attr != rootAttrs {
		t.Errorf("FSINFO attributes %+v, GETATTR %+v", fi.Attr, rootAttrs)
	}
	for name, v := range map[string]uint32{"rtmax": fi.Rtmax, "rtpref": fi.Rtpref, "wtmax": fi.Wtmax, "wtpref": fi.Wtpref} {
		if v != nfs3.TransferSize {
			t.Errorf("%s = %d, want %d", name, v, nfs3.TransferSize)
		}
	}
	if fi.Rtmult != 4096 || fi.Wtmult != 4096 {
		t.Errorf("rtmult/wtmult = %d/%d, want 4096", fi.Rtmult, fi.Wtmult)
	}
	if fi.Dtpref < linuxReaddirStart {
		t.Errorf("dtpref = %d: a Linux client would read directories in %d-byte replies", fi.Dtpref, fi.Dtpref)
	}
	if fi.MaxFileSize < 1<<40 || fi.TimeDelta != [2]uint32{0, 1} {
		t.Errorf("maxfilesize %d, time_delta %d s %d ns", fi.MaxFileSize, fi.TimeDelta[0], fi.TimeDelta[1])
	}
	if want := uint32(rpctest.FSFLink | rpctest.FSFSymlink | rpctest.FSFHomogeneous | rpctest.FSFCanSetTime); fi.Properties != want {
		t.Errorf("properties %#x, want %#x", fi.Properties, want)
	}

	// The client's first reply size, as it computes it from dtpref.
	first := min(fi.Dtpref, linuxReaddirStart)
	busy := c.Lookup(root, "busy")
	pg := c.ReaddirPage(true, busy, 0, 0, first/8, first)
	if pg.Status != nfs3.StatusOK {
		t.Fatalf("READDIRPLUS: status %d", pg.Status)
	}
	if len(pg.Entries) <= linuxCachePageEntries {
		t.Errorf("a %d-byte READDIRPLUS reply carries %d entries, not more than a client cache page (%d)",
			first, len(pg.Entries), linuxCachePageEntries)
	}

	// Linux takes the export's fsid from FSINFO at mount and reads FSSTAT right after: an
	// FSSTAT (or PATHCONF) with another fsid made it refuse to enter the mount.
	for name, proc := range map[string]nfs3.Proc{"FSSTAT": nfs3.ProcFsstat, "PATHCONF": nfs3.ProcPathconf} {
		st, r := c.NFS(proc, rpctest.Opaque(root))
		if a, ok := rpctest.GetPostOp(r); st != nfs3.StatusOK || !ok || a.Fsid != rootAttrs.Fsid || a.Fileid != rootAttrs.Fileid {
			t.Errorf("%s: status %d, attributes %v %+v; GETATTR %+v", name, st, ok, a, rootAttrs)
		}
	}

	if st, _ := c.NFS(nfs3.ProcFsinfo, rpctest.Opaque([]byte("not a handle"))); st == nfs3.StatusOK {
		t.Errorf("FSINFO of a malformed handle succeeded")
	}
}
