package nlm_test

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"testing"

	"github.com/ovlnfs/ovlnfs/internal/fuzzcorpus"
	"github.com/ovlnfs/ovlnfs/internal/locks"
	"github.com/ovlnfs/ovlnfs/internal/nlm"
	"github.com/ovlnfs/ovlnfs/internal/nsm"
	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// decoders are the argument decoders of the procedures, by procedure, each with the
// encoder of what it decoded.
var decoders = map[nlm.Proc]func(r *xdr.Reader, vers uint32) ([]byte, error){
	nlm.ProcTest:       viaTest,
	nlm.ProcGranted:    viaTest,
	nlm.ProcTestMsg:    viaTest,
	nlm.ProcGrantedMsg: viaTest,
	nlm.ProcLock:       viaLock,
	nlm.ProcLockMsg:    viaLock,
	nlm.ProcNMLock:     viaLock,
	nlm.ProcCancel: func(r *xdr.Reader, vers uint32) ([]byte, error) {
		a, err := nlm.DecodeCancelArgs(r, vers)
		var w xdr.Writer
		a.Encode(&w, vers)
		return w.Buf, err
	},
	nlm.ProcCancelMsg: nil, // filled in init: the same as CANCEL
	nlm.ProcUnlock: func(r *xdr.Reader, vers uint32) ([]byte, error) {
		a, err := nlm.DecodeUnlockArgs(r, vers)
		var w xdr.Writer
		a.Encode(&w, vers)
		return w.Buf, err
	},
	nlm.ProcUnlockMsg: nil,
	nlm.ProcTestRes: func(r *xdr.Reader, vers uint32) ([]byte, error) {
		a, err := nlm.DecodeTestRes(r, vers)
		var w xdr.Writer
		a.Encode(&w, vers)
		return w.Buf, err
	},
	nlm.ProcLockRes:    viaRes,
	nlm.ProcCancelRes:  viaRes,
	nlm.ProcUnlockRes:  viaRes,
	nlm.ProcGrantedRes: viaRes,
	nlm.ProcShare:      viaShare,
	nlm.ProcUnshare:    viaShare,
	nlm.ProcFreeAll: func(r *xdr.Reader, _ uint32) ([]byte, error) {
		a, err := nlm.DecodeNotify(r)
		var w xdr.Writer
		a.Encode(&w)
		return w.Buf, err
	},
}

func init() {
	decoders[nlm.ProcCancelMsg] = decoders[nlm.ProcCancel]
	decoders[nlm.ProcUnlockMsg] = decoders[nlm.ProcUnlock]
}

func viaTest(r *xdr.Reader, vers uint32) ([]byte, error) {
	a, err := nlm.DecodeTestArgs(r, vers)
	var w xdr.Writer
	a.Encode(&w, vers)
	return w.Buf, err
}

func viaLock(r *xdr.Reader, vers uint32) ([]byte, error) {
	a, err := nlm.DecodeLockArgs(r, vers)
	var w xdr.Writer
	a.Encode(&w, vers)
	return w.Buf, err
}

func viaRes(r *xdr.Reader, vers uint32) ([]byte, error) {
	a, err := nlm.DecodeRes(r, vers)
	var w xdr.Writer
	a.Encode(&w)
	return w.Buf, err
}

func viaShare(r *xdr.Reader, _ uint32) ([]byte, error) {
	a, err := nlm.DecodeShareArgs(r)
	var w xdr.Writer
	a.Encode(&w)
	return w.Buf, err
}

// versionOf picks one of the three versions.
func versionOf(v uint8) uint32 { return []uint32{nlm.Version1, nlm.Version3, nlm.Version4}[int(v)%3] }

// FuzzNLMArgs calls one NLM procedure (of version vers modulo 3: 1, 3, 4; proc modulo the
// table's size) with fuzzed arguments, as oncrpc would after decoding the call header,
// on a lock manager with nothing held. `go test` runs the seed corpus
// (testdata/fuzz/FuzzNLMArgs/); a longer run is
//
//	go test -run '^$' -fuzz FuzzNLMArgs -fuzztime 5m ./internal/nlm/
//
// Checked: no panic; a handler answers GARBAGE_ARGS exactly when its decoder fails, and
// arguments that decode are the one encoding of what they say (encoding it again gives
// the same bytes); a reply decodes; a call allocates no more than a few KiB beyond its
// arguments. The _MSG procedures, whose results go out as calls to the client, are
// checked through their decoders only.
func FuzzNLMArgs(f *testing.F) {
	f.Fuzz(func(t *testing.T, v, p uint8, args []byte) {
		vers := versionOf(v)
		mon, err := nsm.New(nsm.Config{})
		if err != nil {
			t.Fatal(err)
		}
		s, err := nlm.New(nlm.Config{Locks: locks.New(locks.Config{}), Monitor: mon,
			Key: func(fh []byte, _ netip.Addr) (string, error) {
				if len(fh) == 0 {
					return "", errors.New("stale")
				}
				return string(fh), nil
			}})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		var prog oncrpc.Program
		for _, pr := range s.Programs() {
			if pr.Version == vers {
				prog = pr
			}
		}
		proc := nlm.Proc(uint32(p) % uint32(len(prog.Procedures)))
		dec, known := decoders[proc]
		if dec != nil {
			again, derr := dec(xdr.NewReader(args, 0), vers)
			if derr == nil && !bytes.Equal(again, args) {
				t.Fatalf("proc %d v%d: %x decodes, and encodes again as %x", proc, vers, args, again)
			}
		}
		handler := prog.Procedures[proc].Handle
		msg := proc >= nlm.ProcTestMsg && proc <= nlm.ProcUnlockMsg && proc != nlm.ProcGrantedMsg
		if handler == nil || msg {
			return
		}
		call := &oncrpc.Call{XID: 1, Prog: nlm.ProgramNumber, Vers: vers, Proc: uint32(proc), Args: xdr.NewReader(args, 0),
			Record: args, Client: "127.0.0.1", LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4045},
			RemoteAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 800}}
		reply := &oncrpc.Reply{}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		herr := handler(t.Context(), call, reply)
		runtime.ReadMemStats(&after)
		if allocated := after.TotalAlloc - before.TotalAlloc; allocated > 2*uint64(len(args))+64<<10 {
			t.Errorf("proc %d with %d bytes of arguments allocated %d bytes", proc, len(args), allocated)
		}
		var decodes bool
		if dec != nil {
			_, derr := dec(xdr.NewReader(args, 0), vers)
			decodes = derr == nil
		} else if !known { // NULL
			decodes = len(args) == 0
		}
		switch {
		case errors.Is(herr, oncrpc.ErrGarbageArgs):
			if decodes {
				t.Fatalf("proc %d v%d of %x: GARBAGE_ARGS, but it decodes", proc, vers, args)
			}
			return
		case herr != nil:
			t.Fatalf("proc %d: %v", proc, herr)
		case !decodes:
			t.Fatalf("proc %d v%d of %x answered, but it does not decode", proc, vers, args)
		}
		res := xdr.NewReader(reply.Results(), 0)
		var rerr error
		switch proc {
		case nlm.ProcTest:
			_, rerr = nlm.DecodeTestRes(res, vers)
		case nlm.ProcLock, nlm.ProcCancel, nlm.ProcUnlock, nlm.ProcGranted, nlm.ProcNMLock:
			_, rerr = nlm.DecodeRes(res, vers)
		case nlm.ProcShare, nlm.ProcUnshare:
			_, rerr = nlm.DecodeShareRes(res, vers)
		default:
			if res.Remaining() != 0 {
				rerr = errors.New("results from a procedure without any")
			}
		}
		if rerr != nil {
			t.Fatalf("proc %d reply %x: %v", proc, reply.Results(), rerr)
		}
	})
}

// TestSeedCorpus keeps testdata/fuzz/ in step with the seeds below (package fuzzcorpus).
func TestSeedCorpus(t *testing.T) {
	enc := func(fn func(w *xdr.Writer)) []byte {
		var w xdr.Writer
		fn(&w)
		return w.Buf
	}
	l := nlm.Lock{CallerName: []byte("client"), FH: []byte("fh01"), OH: []byte("1@client"), SVID: 1, Offset: 10, Length: 20}
	l4 := l
	l4.Offset, l4.Length = 1<<40, 0
	seed := func(name string, vers uint32, p nlm.Proc, args []byte) fuzzcorpus.Seed {
		v := map[uint32]uint8{1: 0, 3: 1, 4: 2}[vers]
		return fuzzcorpus.Seed{Name: name, Values: []any{v, uint8(p), args}}
	}
	lockArgs := func(vers uint32, l nlm.Lock, block bool) []byte {
		return enc(func(w *xdr.Writer) {
			nlm.LockArgs{Cookie: []byte("ck"), Block: block, Exclusive: true, Lock: l, State: 3}.Encode(w, vers)
		})
	}
	testArgs := enc(func(w *xdr.Writer) { nlm.TestArgs{Cookie: []byte("ck"), Exclusive: true, Lock: l}.Encode(w, 1) })
	share := enc(func(w *xdr.Writer) {
		nlm.ShareArgs{Cookie: []byte("ck"), Share: nlm.Share{CallerName: []byte("c"), FH: []byte("fh"), OH: []byte("oh"), Mode: 2, Access: 1}}.Encode(w)
	})
	badShare := append([]byte(nil), share...)
	badShare[len(badShare)-9] = 7 // the mode
	long := make([]byte, nlm.MaxNetobj+1)
	fuzzcorpus.Check(t, "FuzzNLMArgs", []fuzzcorpus.Seed{
		seed("null", 4, nlm.ProcNull, nil),
		seed("null-args", 4, nlm.ProcNull, []byte{0, 0, 0, 0}),
		seed("test-v1", 1, nlm.ProcTest, testArgs),
		seed("test-v1-short", 1, nlm.ProcTest, testArgs[:len(testArgs)-3]),
		seed("lock-v4", 4, nlm.ProcLock, lockArgs(4, l4, false)),
		seed("lock-v4-block", 4, nlm.ProcLock, lockArgs(4, l, true)),
		seed("lock-v3", 3, nlm.ProcLock, lockArgs(3, l, false)),
		seed("lock-trailing", 4, nlm.ProcLock, append(lockArgs(4, l, false), 0, 0, 0, 1)),
		seed("lock-stale", 4, nlm.ProcLock, lockArgs(4, nlm.Lock{CallerName: []byte("c")}, false)),
		seed("lock-bool-3", 4, nlm.ProcLock, func() []byte { b := lockArgs(4, l, false); b[len(b)-5] = 3; return b }()),
		seed("lock-long-fh", 4, nlm.ProcLock, lockArgs(4, nlm.Lock{FH: long}, false)),
		seed("nm-lock", 4, nlm.ProcNMLock, lockArgs(4, l, true)),
		seed("lock-msg", 4, nlm.ProcLockMsg, lockArgs(4, l, true)),
		seed("cancel", 4, nlm.ProcCancel, enc(func(w *xdr.Writer) { nlm.CancelArgs{Block: true, Lock: l4}.Encode(w, 4) })),
		seed("unlock-v1", 1, nlm.ProcUnlock, enc(func(w *xdr.Writer) { nlm.UnlockArgs{Lock: l}.Encode(w, 1) })),
		seed("granted", 4, nlm.ProcGranted, enc(func(w *xdr.Writer) { nlm.TestArgs{Lock: l4}.Encode(w, 4) })),
		seed("granted-res", 4, nlm.ProcGrantedRes, enc(func(w *xdr.Writer) { nlm.Res{Cookie: []byte("x"), Stat: 0}.Encode(w) })),
		seed("granted-res-stat-9-v1", 1, nlm.ProcGrantedRes, enc(func(w *xdr.Writer) { nlm.Res{Stat: 9}.Encode(w) })),
		seed("test-res-denied", 4, nlm.ProcTestRes, enc(func(w *xdr.Writer) {
			nlm.TestRes{Stat: nlm.StatDenied, Holder: nlm.Holder{Exclusive: true, SVID: 4, OH: []byte("oh"), Offset: 1, Length: 2}}.Encode(w, 4)
		})),
		seed("share", 4, nlm.ProcShare, share),
		seed("share-bad-mode", 3, nlm.ProcShare, badShare),
		seed("unshare", 3, nlm.ProcUnshare, share),
		seed("share-v1", 1, nlm.ProcShare, share),
		seed("free-all", 4, nlm.ProcFreeAll, enc(func(w *xdr.Writer) { nlm.Notify{Name: []byte("client"), State: 5}.Encode(w) })),
		seed("free-all-long", 4, nlm.ProcFreeAll, enc(func(w *xdr.Writer) { nlm.Notify{Name: make([]byte, nlm.MaxNotifyLen+1)}.Encode(w) })),
		seed("proc-16", 4, 16, nil),
	})
}
