package server_test

import (
	"testing"
	"time"

	"github.com/ovlnfs/ovlnfs/internal/mount"
	"github.com/ovlnfs/ovlnfs/internal/nfs3"
	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
	"github.com/ovlnfs/ovlnfs/internal/rpctest"
	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

func TestUnsupportedProgramsAndVersions(t *testing.T) {
	s := rpctest.StartServer(t, rpctest.Options{})
	c := rpctest.Dial(t, s.Addr)
	mismatch := []struct {
		name            string
		prog, vers      uint32
		wantLo, wantHig uint32
	}{
		{"NFSv4 COMPOUND", nfs3.ProgramNumber, 4, 3, 3},
		{"NFSv4 NULL", nfs3.ProgramNumber, 4, 3, 3},
		{"NFSv2", nfs3.ProgramNumber, 2, 3, 3},
		{"MOUNT v1", mount.ProgramNumber, 1, 3, 3},
	}
	for i, m := range mismatch {
		proc := uint32(0)
		if i == 0 {
			proc = 1
		}
		r := rpctest.Accepted(t, c.Call(m.prog, m.vers, proc, nil), oncrpc.ProgMismatch)
		if lo, hi := r.Uint32(), r.Uint32(); lo != m.wantLo || hi != m.wantHig || r.Err() != nil {
			t.Errorf("%s: PROG_MISMATCH %d..%d (%v), want %d..%d", m.name, lo, hi, r.Err(), m.wantLo, m.wantHig)
		}
	}
	for _, prog := range []uint32{100227, 100021, 100000, 12345} {
		rpctest.Accepted(t, c.Call(prog, 3, 0, nil), oncrpc.ProgUnavail)
	}
	rpctest.Accepted(t, c.Call(mount.ProgramNumber, mount.Version, 9, nil), oncrpc.ProcUnavail)
	// A procedure number past the end of NFSv3's dispatch table.
	rpctest.Accepted(t, c.Call(nfs3.ProgramNumber, nfs3.Version, 99, nil), oncrpc.ProcUnavail)

	reply := c.Wait(c.Start(3, nfs3.ProgramNumber, nfs3.Version, 0, nil))
	r := xdr.NewReader(reply, 4)
	if r.Uint32() != oncrpc.MsgReply || r.Uint32() != oncrpc.MsgDenied || r.Uint32() != oncrpc.RejectRPCMismatch ||
		r.Uint32() != 2 || r.Uint32() != 2 || r.Err() != nil {
		t.Errorf("RPC version 3: want MSG_DENIED RPC_MISMATCH 2..2, got %x", reply)
	}

	// The connection still serves NFSv3 after all of that.
	rpctest.Accepted(t, c.Call(nfs3.ProgramNumber, nfs3.Version, 0, nil), oncrpc.Success)
}

// TestMalformedRecords sends records the server cannot answer; each ends its connection
// (there is no XID to answer), and the server keeps serving other connections.
func TestMalformedRecords(t *testing.T) {
	s, good, fh := rpctest.StartMounted(t, rpctest.Options{})
	for name, record := range map[string][]byte{
		"short":          {1, 2, 3},
		"reply not call": {0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0},
	} {
		c := rpctest.Dial(t, s.Addr)
		if err := oncrpc.WriteRecord(c.Conn(), record); err != nil {
			t.Fatal(err)
		}
		select {
		case <-c.Done():
		case <-time.After(10 * time.Second):
			t.Errorf("%s: connection still open", name)
		}
	}
	// Arguments cut short (a WRITE with its handle and half its offset) are GARBAGE_ARGS
	// (RFC 5531), and the connection goes on.
	c := rpctest.Dial(t, s.Addr)
	truncated := append(rpctest.Opaque(fh), 0, 0, 0, 0)
	rpctest.Accepted(t, c.Call(nfs3.ProgramNumber, nfs3.Version, uint32(nfs3.ProcWrite), truncated), oncrpc.GarbageArgs)
	rpctest.Accepted(t, c.Call(nfs3.ProgramNumber, nfs3.Version, 0, nil), oncrpc.Success)
	rpctest.Accepted(t, good.Call(nfs3.ProgramNumber, nfs3.Version, 0, nil), oncrpc.Success)
}
