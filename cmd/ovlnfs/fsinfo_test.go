package main

import (
	"fmt"
	"testing"
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
func TestFsinfoLetsClientsPageBusyDirectories(t *testing.T) {
	files := map[string]string{}
	for i := range 600 {
		// node_modules-like names, longer than the fixtures elsewhere
		files[fmt.Sprintf("busy/package-with-a-longish-name-%04d.js", i)] = "x"
	}
	srv := startTestServer(t, files)
	c := dialRPC(t, srv.addr)
	root := c.mountRoot()

	st, r := c.nfsCall(procFsinfo, opaqueArg(root))
	if st != 0 {
		t.Fatalf("FSINFO: status %d", st)
	}
	rootAttrs := c.getattr(root)
	if a, ok := r.postOp(); !ok || a != rootAttrs {
		t.Errorf("FSINFO attributes %+v, GETATTR %+v", a, rootAttrs)
	}
	rtmax, rtpref, rtmult := r.uint32(), r.uint32(), r.uint32()
	wtmax, wtpref, wtmult := r.uint32(), r.uint32(), r.uint32()
	dtpref := r.uint32()
	maxFile := r.uint64()
	deltaSec, deltaNsec := r.uint32(), r.uint32()
	props := r.uint32()
	if r.err != nil {
		t.Fatalf("FSINFO reply: %v", r.err)
	}
	for name, v := range map[string]uint32{"rtmax": rtmax, "rtpref": rtpref, "wtmax": wtmax, "wtpref": wtpref} {
		if v != transferSize {
			t.Errorf("%s = %d, want %d", name, v, transferSize)
		}
	}
	if rtmult != 4096 || wtmult != 4096 {
		t.Errorf("rtmult/wtmult = %d/%d, want 4096", rtmult, wtmult)
	}
	if dtpref < linuxReaddirStart {
		t.Errorf("dtpref = %d: a Linux client would read directories in %d-byte replies", dtpref, dtpref)
	}
	if maxFile < 1<<40 || deltaSec != 0 || deltaNsec != 1 {
		t.Errorf("maxfilesize %d, time_delta %d s %d ns", maxFile, deltaSec, deltaNsec)
	}
	if want := uint32(fsinfoLink | fsinfoSymlink | fsinfoHomogeneous | fsinfoCanSetTime); props != want {
		t.Errorf("properties %#x, want %#x", props, want)
	}

	// The client's first reply size, as it computes it from dtpref.
	first := min(dtpref, linuxReaddirStart)
	busy := c.lookup(root, "busy")
	pg := c.readdirPage(true, busy, 0, 0, first/8, first)
	if pg.status != 0 {
		t.Fatalf("READDIRPLUS: status %d", pg.status)
	}
	if len(pg.entries) <= linuxCachePageEntries {
		t.Errorf("a %d-byte READDIRPLUS reply carries %d entries, not more than a client cache page (%d)",
			first, len(pg.entries), linuxCachePageEntries)
	}

	// Linux takes the export's fsid from FSINFO at mount and reads FSSTAT right after: an
	// FSSTAT (or PATHCONF) with another fsid made it refuse to enter the mount.
	for _, proc := range []uint32{procFsstat, procPathconf} {
		st, r := c.nfsCall(proc, opaqueArg(root))
		if a, ok := r.postOp(); st != 0 || !ok || a.fsid != rootAttrs.fsid || a.fileid != rootAttrs.fileid {
			t.Errorf("%s: status %d, attributes %v %+v; GETATTR %+v", procName(progNFS, proc), st, ok, a, rootAttrs)
		}
	}

	if st, _ := c.nfsCall(procFsinfo, opaqueArg([]byte("not a handle"))); st == 0 {
		t.Errorf("FSINFO of a malformed handle succeeded")
	}
}
