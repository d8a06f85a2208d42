package main

import (
	"reflect"
	"testing"
	"time"
)

func TestExportAndDump(t *testing.T) {
	s := startTestServer(t, nil)
	c := dialRPC(t, s.addr)

	r := accepted(t, c.call(progMount, mountVersion, mountProcExport, nil), acceptSuccess)
	var exports []string
	for r.uint32() == 1 {
		exports = append(exports, string(r.opaque()))
		for r.uint32() == 1 { // groups
			r.opaque()
		}
	}
	if r.err != nil || !reflect.DeepEqual(exports, []string{"/"}) {
		t.Errorf("EXPORT = %q (%v), want [/]", exports, r.err)
	}

	dump := func() []string {
		r := accepted(t, c.call(progMount, mountVersion, mountProcDump, nil), acceptSuccess)
		var out []string
		for r.uint32() == 1 {
			host, dir := string(r.opaque()), string(r.opaque())
			out = append(out, host+":"+dir)
		}
		if r.err != nil {
			t.Fatal(r.err)
		}
		return out
	}
	if got := dump(); len(got) != 0 {
		t.Errorf("DUMP before any MNT = %q", got)
	}
	c.mountRoot()
	if got, want := dump(), []string{"127.0.0.1:/"}; !reflect.DeepEqual(got, want) {
		t.Errorf("DUMP after MNT = %q, want %q", got, want)
	}
	accepted(t, c.call(progMount, mountVersion, mountProcUmnt, opaqueArg([]byte("/"))), acceptSuccess)
	if got := dump(); len(got) != 0 {
		t.Errorf("DUMP after UMNT = %q", got)
	}
	c.mountRoot()
	accepted(t, c.call(progMount, mountVersion, mountProcUmntAll, nil), acceptSuccess)
	if got := dump(); len(got) != 0 {
		t.Errorf("DUMP after UMNTALL = %q", got)
	}
}

func TestUnsupportedProgramsAndVersions(t *testing.T) {
	s := startTestServer(t, nil)
	c := dialRPC(t, s.addr)
	mismatch := []struct {
		name            string
		prog, vers      uint32
		wantLo, wantHig uint32
	}{
		{"NFSv4 COMPOUND", progNFS, 4, 3, 3},
		{"NFSv4 NULL", progNFS, 4, 3, 3},
		{"NFSv2", progNFS, 2, 3, 3},
		{"MOUNT v1", progMount, 1, 3, 3},
	}
	for i, m := range mismatch {
		proc := uint32(0)
		if i == 0 {
			proc = 1
		}
		r := accepted(t, c.call(m.prog, m.vers, proc, nil), acceptProgMismatch)
		if lo, hi := r.uint32(), r.uint32(); lo != m.wantLo || hi != m.wantHig || r.err != nil {
			t.Errorf("%s: PROG_MISMATCH %d..%d (%v), want %d..%d", m.name, lo, hi, r.err, m.wantLo, m.wantHig)
		}
	}
	for _, prog := range []uint32{100227, 100021, 100000, 12345} {
		accepted(t, c.call(prog, 3, 0, nil), acceptProgUnavail)
	}
	accepted(t, c.call(progMount, mountVersion, 9, nil), acceptProcUnavail)
	// go-nfs answers an unknown procedure itself; its code must reach the wire as RFC 5531
	// numbers it.
	accepted(t, c.call(progNFS, nfsVersion, 99, nil), acceptProcUnavail)

	reply := c.wait(c.start(3, progNFS, nfsVersion, 0, nil))
	r := xdrReader{buf: reply, pos: 4}
	if r.uint32() != rpcReply || r.uint32() != msgDenied || r.uint32() != rejectRPCMismatch ||
		r.uint32() != 2 || r.uint32() != 2 || r.err != nil {
		t.Errorf("RPC version 3: want MSG_DENIED RPC_MISMATCH 2..2, got %x", reply)
	}

	// The connection still serves NFSv3 after all of that.
	accepted(t, c.call(progNFS, nfsVersion, 0, nil), acceptSuccess)
}

// TestMalformedRecords sends records the server cannot answer; each ends its connection
// (there is no XID to answer), and the server keeps serving other connections.
func TestMalformedRecords(t *testing.T) {
	s := startTestServer(t, nil)
	good := dialRPC(t, s.addr)
	fh := good.mountRoot()
	for name, record := range map[string][]byte{
		"short":          {1, 2, 3},
		"reply not call": {0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0},
	} {
		c := dialRPC(t, s.addr)
		if _, err := c.conn.Write(withRecordMark(record)); err != nil {
			t.Fatal(err)
		}
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s: connection still open", name)
		}
	}
	// Arguments cut short reach go-nfs: a clean error reply or a closed connection will do.
	c := dialRPC(t, s.addr)
	select {
	case reply, ok := <-c.start(rpcVersion, progNFS, nfsVersion, procWrite, append(opaqueArg(fh), 0, 0, 0, 0)):
		if ok {
			r := accepted(t, reply, acceptSuccess)
			if st := r.uint32(); st == 0 {
				t.Errorf("truncated WRITE answered NFS3_OK")
			}
		}
	case <-time.After(10 * time.Second):
		t.Errorf("truncated WRITE: neither a reply nor a closed connection")
	}
	accepted(t, good.call(progNFS, nfsVersion, 0, nil), acceptSuccess)
}
