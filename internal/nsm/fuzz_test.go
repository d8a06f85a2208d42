package nsm

import (
	"errors"
	"net"
	"net/netip"
	"runtime"
	"testing"

	"github.com/ovlnfs/ovlnfs/internal/fuzzcorpus"
	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// FuzzNSMArgs calls one NSM procedure (proc modulo the table's size) with fuzzed
// arguments from a loopback or a remote caller, as oncrpc would after decoding the call
// header. `go test` runs the seed corpus (testdata/fuzz/FuzzNSMArgs/); a longer run is
//
//	go test -run '^$' -fuzz FuzzNSMArgs -fuzztime 5m ./internal/nsm/
//
// Checked: no panic; GARBAGE_ARGS exactly when the arguments are not one exact encoding
// of the procedure's structure (names of at most 1024 bytes, zero padding, nothing left
// over); replies of the right size; SM_NOTIFY reaches Config.Rebooted only when it
// decodes; SM_MON is taken from loopback only; a call allocates at most a few KiB beyond
// its arguments.
func FuzzNSMArgs(f *testing.F) {
	f.Fuzz(func(t *testing.T, p uint8, loopback bool, args []byte) {
		rebooted := 0
		m, err := New(Config{Rebooted: func(netip.Addr, string, int32) { rebooted++ }})
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		procs := m.Program().Procedures
		proc := Proc(uint32(p) % uint32(len(procs)))
		h := procs[proc].Handle
		if h == nil {
			return
		}
		remote := net.IPv4(192, 0, 2, 7)
		if loopback {
			remote = net.IPv4(127, 0, 0, 1)
		}
		call := &oncrpc.Call{Prog: ProgramNumber, Vers: Version, Proc: uint32(proc), Args: xdr.NewReader(args, 0), Record: args,
			LocalAddr: &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4046}, RemoteAddr: &net.UDPAddr{IP: remote, Port: 700}}
		reply := &oncrpc.Reply{}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		herr := h(t.Context(), call, reply)
		runtime.ReadMemStats(&after)
		if allocated := after.TotalAlloc - before.TotalAlloc; allocated > uint64(len(args))+64<<10 {
			t.Errorf("proc %d with %d bytes of arguments allocated %d bytes", proc, len(args), allocated)
		}
		// What decodes, by an independent reading of sm_inter.x.
		r := xdr.NewReader(args, 0)
		str := func() {
			n := r.Uint32()
			if r.Err() != nil {
				return
			}
			if n > MaxName {
				r.Fail(errLongName)
				return
			}
			b := r.Fixed(int(n+3) &^ 3)
			for _, c := range b[min(int(n), len(b)):] {
				if c != 0 {
					r.Fail(errPadding)
				}
			}
		}
		resultSize := 0
		switch proc {
		case ProcNull:
		case ProcStat:
			str()
			resultSize = 8
		case ProcMon:
			str()
			str()
			r.Fixed(12 + privSize)
			resultSize = 8
		case ProcUnmon:
			str()
			str()
			r.Fixed(12)
			resultSize = 4
		case ProcUnmonAll:
			str()
			r.Fixed(12)
			resultSize = 4
		case ProcNotify:
			str()
			r.Fixed(4)
		}
		decodes := r.Err() == nil && r.Remaining() == 0
		switch {
		case errors.Is(herr, oncrpc.ErrGarbageArgs):
			if decodes {
				t.Fatalf("proc %d of %x: GARBAGE_ARGS, but it decodes", proc, args)
			}
			return
		case herr != nil:
			t.Fatalf("proc %d: %v", proc, herr)
		case !decodes:
			t.Fatalf("proc %d of %x answered, but it does not decode", proc, args)
		}
		if got := len(reply.Results()); got != resultSize {
			t.Fatalf("proc %d: %d bytes of results, want %d", proc, got, resultSize)
		}
		if proc == ProcNotify && rebooted != 1 {
			t.Fatalf("SM_NOTIFY reached Rebooted %d times", rebooted)
		}
		if proc == ProcMon {
			taken := xdr.NewReader(reply.Results(), 0).Uint32() == statSucc
			named := len(args) >= 4 && args[3] != 0 || len(args) >= 4 && args[2] != 0
			if taken && (!loopback || !named) {
				t.Fatalf("SM_MON taken from %v of %x", remote, args)
			}
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
	myID := func(w *xdr.Writer) {
		w.String("localhost")
		w.Uint32(100021)
		w.Uint32(3)
		w.Uint32(16)
	}
	mon := enc(func(w *xdr.Writer) { w.String("10.0.0.2"); myID(w); w.Fixed(make([]byte, privSize)) })
	seed := func(name string, p Proc, loopback bool, args []byte) fuzzcorpus.Seed {
		return fuzzcorpus.Seed{Name: name, Values: []any{uint8(p), loopback, args}}
	}
	fuzzcorpus.Check(t, "FuzzNSMArgs", []fuzzcorpus.Seed{
		seed("null", ProcNull, false, nil),
		seed("stat", ProcStat, false, enc(func(w *xdr.Writer) { w.String("host") })),
		seed("stat-bad-padding", ProcStat, false, []byte{0, 0, 0, 1, 'h', 'x', 0, 0}),
		seed("mon-local", ProcMon, true, mon),
		seed("mon-remote", ProcMon, false, mon),
		seed("mon-short", ProcMon, true, mon[:len(mon)-1]),
		seed("unmon", ProcUnmon, true, enc(func(w *xdr.Writer) { w.String("10.0.0.2"); myID(w) })),
		seed("unmon-all", ProcUnmonAll, true, enc(myID)),
		seed("notify", ProcNotify, false, enc(func(w *xdr.Writer) { w.String("client"); w.Uint32(3) })),
		seed("notify-long", ProcNotify, false, enc(func(w *xdr.Writer) { w.Opaque(make([]byte, MaxName+1)); w.Uint32(3) })),
		seed("notify-trailing", ProcNotify, false, enc(func(w *xdr.Writer) { w.String("c"); w.Uint32(3); w.Uint32(0) })),
		seed("simu-crash", ProcSimuCrash, true, nil),
	})
}
