package mount

import (
	"context"
	"errors"
	"runtime"
	"testing"

	"github.com/ovlnfs/ovlnfs/internal/fuzzcorpus"
	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// FuzzMountArgs calls one MOUNT procedure (proc modulo the table's size) with fuzzed
// arguments, MNT forwarded to a stand-in for go-nfs that answers MNT3_OK, as oncrpc would
// after decoding the call header. `go test` runs the seed corpus
// (testdata/fuzz/FuzzMountArgs/); a longer run is
//
//	go test -run '^$' -fuzz FuzzMountArgs -fuzztime 5m ./internal/mount/
//
// Checked: no panic; MNT and UMNT answer GARBAGE_ARGS exactly when the dirpath does not
// decode within 1024 bytes, and otherwise SUCCESS; a successful MNT enters its dirpath
// in the DUMP list, UMNT removes it; the DUMP reply decodes; a call allocates at most a
// copy of the dirpath and a few KiB.
func FuzzMountArgs(f *testing.F) {
	forward := func(_ context.Context, call *oncrpc.Call) ([]byte, error) {
		var w xdr.Writer
		for _, v := range []uint32{call.XID, 1, 0, 0, 0, 0, mountStatOK} { // MSG_ACCEPTED, SUCCESS
			w.Uint32(v)
		}
		w.Opaque([]byte("root handle!"))
		w.Uint32(1) // auth flavors
		w.Uint32(oncrpc.AuthUnix)
		return w.Buf, nil
	}
	f.Fuzz(func(t *testing.T, proc uint8, args []byte) {
		s, err := New(Config{Mnt: forward, Exports: func() []Export { return []Export{{Dir: "/", Groups: []string{"*"}}} }})
		if err != nil {
			t.Fatal(err)
		}
		procs := s.Program().Procedures
		p := Proc(uint32(proc) % uint32(len(procs)))
		call := func(p Proc, args []byte) (*oncrpc.Reply, error) {
			reply := &oncrpc.Reply{}
			c := &oncrpc.Call{XID: 9, Prog: ProgramNumber, Vers: Version, Proc: uint32(p),
				Args: xdr.NewReader(args, 0), Record: args, Client: "10.0.0.1"}
			return reply, procs[p].Handle(t.Context(), c, reply)
		}
		if p == ProcUmnt || p == ProcUmntAll {
			// Something to remove.
			if _, err := call(ProcMnt, args); err != nil && !errors.Is(err, oncrpc.ErrGarbageArgs) {
				t.Fatal(err)
			}
		}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err = call(p, args)
		runtime.ReadMemStats(&after)
		if allocated := after.TotalAlloc - before.TotalAlloc; allocated > uint64(len(args))+64<<10 {
			t.Errorf("%s with %d bytes of arguments allocated %d bytes", procs[p].Name, len(args), allocated)
		}
		rd := xdr.NewReader(args, 0)
		dir := rd.OpaqueMax(maxPathLen, errPathTooLong)
		decodes := rd.Err() == nil
		switch {
		case errors.Is(err, oncrpc.ErrGarbageArgs):
			if (p != ProcMnt && p != ProcUmnt) || decodes {
				t.Fatalf("%s of %x: GARBAGE_ARGS", procs[p].Name, args)
			}
		case err != nil:
			t.Fatalf("%s: %v", procs[p].Name, err)
		case (p == ProcMnt || p == ProcUmnt) && !decodes:
			t.Fatalf("%s of %x answered, arguments do not decode", procs[p].Name, args)
		}
		mounted := false
		for _, e := range s.mounts.list() {
			mounted = mounted || e == entry{"10.0.0.1", string(dir)}
		}
		if want := p == ProcMnt && decodes; mounted != want {
			t.Errorf("after %s of %q: in the DUMP list %v, want %v", procs[p].Name, dir, mounted, want)
		}
		reply, err := call(ProcDump, nil)
		r := xdr.NewReader(reply.Results(), 0)
		n := 0
		for r.Bool() {
			r.Opaque()
			r.Opaque()
			n++
		}
		if err != nil || r.Err() != nil || r.Remaining() != 0 || n > maxEntries {
			t.Errorf("DUMP: %d entries, %v, %v, %d bytes left", n, err, r.Err(), r.Remaining())
		}
	})
}

// TestSeedCorpus keeps testdata/fuzz/ in step with the seeds below (package fuzzcorpus).
func TestSeedCorpus(t *testing.T) {
	path := func(p string) []byte {
		var w xdr.Writer
		w.String(p)
		return w.Buf
	}
	long := make([]byte, maxPathLen+1)
	for i := range long {
		long[i] = 'a'
	}
	seed := func(name string, p Proc, args []byte) fuzzcorpus.Seed {
		return fuzzcorpus.Seed{Name: name, Values: []any{uint8(p), args}}
	}
	fuzzcorpus.Check(t, "FuzzMountArgs", []fuzzcorpus.Seed{
		seed("null", ProcNull, nil),
		seed("mnt-root", ProcMnt, path("/")),
		seed("mnt-subdir", ProcMnt, path("/a/b")),
		seed("mnt-empty", ProcMnt, path("")),
		seed("mnt-too-long", ProcMnt, path(string(long))),
		seed("mnt-max", ProcMnt, path(string(long[:maxPathLen]))),
		seed("mnt-short", ProcMnt, []byte{0, 0, 0, 9, '/'}),
		seed("mnt-no-args", ProcMnt, nil),
		seed("dump", ProcDump, nil),
		seed("umnt", ProcUmnt, path("/")),
		seed("umnt-short", ProcUmnt, []byte{0, 0}),
		seed("umntall", ProcUmntAll, path("/")),
		seed("export", ProcExport, nil),
	})
}
