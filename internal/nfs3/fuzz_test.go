package nfs3

import (
	"bytes"
	"errors"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/ovlnfs/ovlnfs/billyunion"
	"github.com/ovlnfs/ovlnfs/handles"
	"github.com/ovlnfs/ovlnfs/internal/clients"
	"github.com/ovlnfs/ovlnfs/internal/fuzzcorpus"
	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// FuzzProcedures calls the handler of one NFSv3 procedure with fuzzed arguments, as
// oncrpc would after decoding the call header, against a real server over a small union
// with a fresh upper layer per input, so a failing input replays on its own.
// `go test` runs the seed corpus (testdata/fuzz/FuzzProcedures/, a valid call of every
// procedure and some invalid ones); a longer run is
//
//	go test -run '^$' -fuzz FuzzProcedures -fuzztime 5m ./internal/nfs3/
//
// The inputs: proc (taken modulo the table's size), the caller's uid (AUTH_UNIX, gid the
// same), and the arguments. File handles cannot be written into a committed corpus (they
// hold the layer set's id and the kernel's handles of fresh directories), so an XDR opaque
// of the 8 bytes "@fh:NAME" stands for the handle of a fixture object (fuzzHandles) and is
// replaced before the call.
//
// Checked for every input: no panic; the handler answers SUCCESS or GARBAGE_ARGS (any
// other error would be answered SYSTEM_ERR as a bug); a SUCCESS of any procedure but NULL
// starts with an nfsstat3 the protocol defines; the results stay within 2 MiB and READ's
// data within TransferSize; and the call allocates at most allocBound(len(args)).
func FuzzProcedures(f *testing.F) {
	base := f.TempDir()
	lower := filepath.Join(base, "lower")
	makeFuzzLower(f, lower)
	procs := (&Server{}).Program().Procedures
	f.Fuzz(func(t *testing.T, proc uint8, uid uint32, args []byte) {
		fx := newFuzzFixture(t, base, lower)
		defer fx.close()
		p := uint32(proc) % uint32(len(procs))
		for name, fh := range fx.handles {
			args = bytes.ReplaceAll(args, handleToken(name), opaque(fh))
		}
		handler := fx.s.Program().Procedures[p].Handle
		call := &oncrpc.Call{XID: 1, Prog: ProgramNumber, Vers: Version, Proc: p,
			Cred:   oncrpc.Credential{Unix: true, UID: uid, GID: uid},
			Args:   xdr.NewReader(args, 0),
			Record: args, Client: "fuzz"}
		reply := &oncrpc.Reply{}

		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		err := handler(t.Context(), call, reply)
		runtime.ReadMemStats(&after)
		if reply.Release != nil {
			defer reply.Release()
		}

		name := procs[p].Name
		if allocated, bound := after.TotalAlloc-before.TotalAlloc, allocBound(len(args)); allocated > bound {
			t.Errorf("%s with %d bytes of arguments allocated %d bytes, over %d", name, len(args), allocated, bound)
		}
		switch {
		case errors.Is(err, oncrpc.ErrGarbageArgs):
			return
		case err != nil:
			t.Fatalf("%s: %v (answered SYSTEM_ERR)", name, err)
		}
		results := reply.Results()
		if len(results) > maxFuzzResults || reply.DataLen() > TransferSize {
			t.Errorf("%s: %d bytes of results and %d of data", name, len(results), reply.DataLen())
		}
		if Proc(p) == ProcNull {
			return
		}
		r := xdr.NewReader(results, 0)
		st := Status(r.Uint32())
		if r.Err() != nil {
			t.Fatalf("%s: results without a status", name)
		}
		if !knownStatus(st) {
			t.Errorf("%s: %v is no nfsstat3", name, st)
		}
		if st == StatusServerFault {
			t.Errorf("%s: SERVERFAULT (an error the status mapping does not know)", name)
		}
	})
}

// maxFuzzResults bounds a reply's results: a READDIR page is at most its maxcount, which
// is capped at TransferSize; everything else is a few hundred bytes. READ's data is not
// in the results but in Reply.Data or Reply.Pipe.
const maxFuzzResults = 2 << 20

// allocBound is the most one call may allocate for args bytes of arguments. The decoders
// allocate a copy of each name (at most the arguments' size); the rest does not grow with
// the arguments: READ's 1 MiB buffer when the pool is empty, the listing of a fixture
// directory (a handful of entries), the union's lookups, and up to a span per size class
// that the runtime counts as allocated when it hands the span to this goroutine's cache.
// 4 MiB over the arguments is far from what a decoder that trusted a length would take
// (a count or size field is up to 4 GiB) and far above the noise.
func allocBound(args int) uint64 { return uint64(2*args) + 4<<20 }

func knownStatus(st Status) bool {
	switch st {
	case StatusOK, StatusPerm, StatusNoEnt, StatusIO, StatusNXIO, StatusAcces, StatusExist,
		StatusXDev, StatusNoDev, StatusNotDir, StatusIsDir, StatusInval, StatusFBig, StatusNoSpc,
		StatusROFS, StatusMLink, StatusNameTooLong, StatusNotEmpty, StatusDQuot, StatusStale,
		StatusBadHandle, StatusNotSync, StatusBadCookie, StatusNotSupp, StatusTooSmall,
		StatusServerFault, StatusBadType:
		return true
	}
	return false
}

// fuzzHandles names the fixture objects a corpus can refer to, by their path in the union.
var fuzzHandles = map[string][]string{
	"root": nil,
	"file": {"f"},
	"dir_": {"d"},
	"sub_": {"d", "g"},
	"link": {"l"},
	"upfl": {"u"},
	"gone": {"gone"},
}

// handleToken is what stands for the handle of the fixture object name in a corpus.
func handleToken(name string) []byte { return opaque([]byte("@fh:" + name)) }

func opaque(b []byte) []byte {
	var w xdr.Writer
	w.Opaque(b)
	return w.Buf
}

// fuzzFixture is one input's server over the shared lower layer (a file, a directory
// holding a file, a symlink) and a fresh upper layer with a file of its own. The lower
// layer is made once: the union never writes to a lower layer.
type fuzzFixture struct {
	dir     string
	union   *billyunion.FS
	s       *Server
	handles map[string][]byte
}

// makeFuzzLower writes the lower layer of every fixture.
func makeFuzzLower(t testing.TB, lower string) {
	if err := os.MkdirAll(filepath.Join(lower, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	for p, content := range map[string]string{"f": "lower file\n", "d/g": "in a lower directory\n"} {
		if err := os.WriteFile(filepath.Join(lower, p), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("f", filepath.Join(lower, "l")); err != nil {
		t.Fatal(err)
	}
}

func newFuzzFixture(t *testing.T, base, lower string) *fuzzFixture {
	dir, err := os.MkdirTemp(base, "fx")
	if err != nil {
		t.Fatal(err)
	}
	upper, work := filepath.Join(dir, "upper"), filepath.Join(dir, "work")
	for _, d := range []string{upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"u", "gone"} {
		if err := os.WriteFile(filepath.Join(upper, name), []byte("upper file\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fx := &fuzzFixture{dir: dir, handles: make(map[string][]byte)}
	fail := func(err error) {
		fx.close()
		t.Fatal(err)
	}
	if fx.union, err = billyunion.New(billyunion.Options{Lowers: []string{lower}, Upper: upper, Work: work}); err != nil {
		fail(err)
	}
	hs, err := handles.New(fx.union, handles.Options{CacheEntries: 64})
	if err != nil {
		fail(err)
	}
	for name, elems := range fuzzHandles {
		if fx.handles[name], err = hs.ToHandle(elems); err != nil {
			fail(err)
		}
	}
	// An object removed after its handle was made, before the union served anything.
	if err := os.Remove(filepath.Join(upper, "gone")); err != nil {
		fail(err)
	}
	if fx.s, err = New(Config{Union: fx.union, Handles: hs, StatfsPath: upper, Admit: func(net.Addr) (clients.Grant, bool) { return clients.Everyone(false)[0].Grant, true }}); err != nil {
		fail(err)
	}
	return fx
}

func (fx *fuzzFixture) close() {
	if fx.s != nil {
		fx.s.Close()
	}
	if fx.union != nil {
		_ = fx.union.Close()
	}
	_ = os.RemoveAll(fx.dir)
}

// TestSeedCorpus keeps testdata/fuzz/ in step with the seeds below (package fuzzcorpus).
func TestSeedCorpus(t *testing.T) {
	fuzzcorpus.Check(t, "FuzzProcedures", procedureSeeds())
}

// procedureSeeds are a valid call of every procedure and a few that must fail to decode
// or be refused.
func procedureSeeds() []fuzzcorpus.Seed {
	fh := handleToken
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	u32 := func(vs ...uint32) []byte {
		var w xdr.Writer
		for _, v := range vs {
			w.Uint32(v)
		}
		return w.Buf
	}
	u64 := func(v uint64) []byte { var w xdr.Writer; w.Uint64(v); return w.Buf }
	name := func(s string) []byte { return opaque([]byte(s)) }
	// sattr3: mode, uid, gid, size, atime, mtime.
	sattrNone := u32(0, 0, 0, 0, 0, 0)
	sattrMode := u32(1, 0o640, 0, 0, 0, 0, 0)
	sattrAll := cat(u32(1, 0o4755, 1, 1000, 1, 1000, 1), u64(3), u32(2, 1_000_000, 5, 1))
	seed := func(file string, proc Proc, uid uint32, args ...[]byte) fuzzcorpus.Seed {
		return fuzzcorpus.Seed{Name: file, Values: []any{uint8(proc), uid, cat(args...)}}
	}
	const user = 1000
	return []fuzzcorpus.Seed{
		seed("null", ProcNull, 0),
		seed("getattr-root", ProcGetattr, 0, fh("root")),
		seed("getattr-stale", ProcGetattr, 0, fh("gone")),
		seed("getattr-bad-handle", ProcGetattr, 0, name("not a handle")),
		seed("getattr-handle-too-long", ProcGetattr, 0, opaque(make([]byte, 65))),
		seed("getattr-short", ProcGetattr, 0, u32(8, 0)),
		seed("setattr-all", ProcSetattr, 0, fh("file"), sattrAll, u32(0)),
		seed("setattr-guard", ProcSetattr, user, fh("upfl"), sattrMode, u32(1, 1, 2)),
		seed("setattr-size-huge", ProcSetattr, 0, fh("file"), u32(0, 0, 0, 1), u64(1<<62), u32(0, 0, 0)),
		seed("setattr-bad-time-how", ProcSetattr, 0, fh("file"), u32(0, 0, 0, 0, 7, 0, 0)),
		seed("lookup", ProcLookup, 0, fh("dir_"), name("g")),
		seed("lookup-dotdot", ProcLookup, 0, fh("root"), name("..")),
		seed("lookup-slash", ProcLookup, 0, fh("root"), name("d/g")),
		seed("lookup-name-too-long", ProcLookup, 0, fh("root"), opaque(make([]byte, 4097))),
		seed("access", ProcAccess, user, fh("file"), u32(0x3f)),
		seed("readlink", ProcReadlink, 0, fh("link")),
		seed("read", ProcRead, 0, fh("file"), u64(0), u32(100)),
		seed("read-over-transfer-size", ProcRead, 0, fh("sub_"), u64(2), u32(0xffffffff)),
		seed("read-dir", ProcRead, 0, fh("dir_"), u64(0), u32(10)),
		seed("write-unstable", ProcWrite, 0, fh("file"), u64(4), u32(5, 0), name("hello")),
		seed("write-file-sync", ProcWrite, 0, fh("upfl"), u64(0), u32(3, 2), name("abc")),
		seed("write-count-over-data", ProcWrite, 0, fh("sub_"), u64(0), u32(0xffffffff, 1), name("x")),
		seed("write-huge-offset", ProcWrite, 0, fh("file"), u64(1<<63-2), u32(4, 0), name("1234")),
		seed("write-bad-stable", ProcWrite, 0, fh("file"), u64(0), u32(1, 3), name("z")),
		seed("write-truncated", ProcWrite, 0, fh("file"), u32(0)),
		seed("create-unchecked", ProcCreate, 0, fh("root"), name("new"), u32(0), sattrMode),
		seed("create-guarded-exists", ProcCreate, user, fh("root"), name("f"), u32(1), sattrNone),
		seed("create-exclusive", ProcCreate, 0, fh("dir_"), name("x"), u32(2), u64(0x0102030405060708)),
		seed("create-bad-how", ProcCreate, 0, fh("root"), name("y"), u32(3)),
		seed("mkdir", ProcMkdir, 0, fh("dir_"), name("sub"), sattrAll),
		seed("symlink", ProcSymlink, 0, fh("root"), name("s"), sattrNone, name("/etc/passwd")),
		seed("mknod-fifo", ProcMknod, 0, fh("root"), name("p"), u32(7), sattrMode),
		seed("mknod-chr", ProcMknod, 0, fh("root"), name("c"), u32(4), sattrMode, u32(1, 3)),
		seed("mknod-bad-type", ProcMknod, 0, fh("root"), name("b"), u32(2)),
		seed("remove", ProcRemove, 0, fh("dir_"), name("g")),
		seed("remove-by-user", ProcRemove, user, fh("root"), name("u")),
		seed("rmdir", ProcRmdir, 0, fh("root"), name("d")),
		seed("rename", ProcRename, 0, fh("root"), name("f"), fh("dir_"), name("moved")),
		seed("rename-into-itself", ProcRename, 0, fh("root"), name("d"), fh("dir_"), name("d")),
		seed("link", ProcLink, 0, fh("file"), fh("dir_"), name("hard")),
		seed("readdir", ProcReaddir, 0, fh("root"), u64(0), u64(0), u32(4096)),
		seed("readdir-bad-cookie", ProcReaddir, 0, fh("root"), u64(5), u64(12345), u32(4096)),
		seed("readdir-too-small", ProcReaddir, 0, fh("dir_"), u64(0), u64(0), u32(10)),
		seed("readdirplus", ProcReaddirplus, 0, fh("dir_"), u64(0), u64(0), u32(512, 0xffffffff)),
		seed("readdirplus-file", ProcReaddirplus, user, fh("file"), u64(0), u64(0), u32(512, 4096)),
		seed("fsstat", ProcFsstat, 0, fh("root")),
		seed("fsinfo", ProcFsinfo, 0, fh("root")),
		seed("pathconf", ProcPathconf, 0, fh("link")),
		seed("commit", ProcCommit, 0, fh("upfl"), u64(0), u32(0)),
	}
}
