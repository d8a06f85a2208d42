package portmap

import (
	"context"
	"errors"
	"net"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/ovlnfs/ovlnfs/internal/fuzzcorpus"
	"github.com/ovlnfs/ovlnfs/internal/oncrpc"
	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// FuzzPortmapArgs calls one portmapper procedure (version 2, 3 or 4 by version modulo 3,
// proc modulo the table's size) with fuzzed arguments, from root on this host (local) or
// from another host, as oncrpc would after decoding the call header. `go test` runs the
// seed corpus (testdata/fuzz/FuzzPortmapArgs/); a longer run is
//
//	go test -run '^$' -fuzz FuzzPortmapArgs -fuzztime 5m ./internal/portmap/
//
// Checked: no panic; GARBAGE_ARGS exactly when the arguments do not decode as the
// procedure's type (a mapping, an rpcb with strings of at most 255 bytes, or nothing), with
// no bytes left over; what decodes re-encodes to as many bytes and decodes the same;
// SET and UNSET from another host are denied (ErrWeakAuth) and change nothing, from root
// they answer a bool; the services given in Config are never changed; the list stays
// within its bound; every reply decodes as the procedure's result; a call allocates at
// most a copy of its arguments and a few KiB.
func FuzzPortmapArgs(f *testing.F) {
	f.Fuzz(func(t *testing.T, version, proc uint8, local bool, args []byte) {
		s, err := New(Config{Services: testServices})
		if err != nil {
			t.Fatal(err)
		}
		programs := s.Programs()
		prog := programs[int(version)%len(programs)]
		p := Proc(uint32(proc) % uint32(len(prog.Procedures)))
		handler := prog.Procedures[p]
		if handler.Handle == nil {
			return // PROC_UNAVAIL, answered by oncrpc
		}
		remote := net.Addr(&net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 40000})
		if local {
			remote = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 700}
		}
		before := s.table.list()
		reply := &oncrpc.Reply{}
		c := &oncrpc.Call{XID: 9, Prog: ProgramNumber, Vers: prog.Version, Proc: uint32(p), Args: xdr.NewReader(args, 0),
			Record: args, Client: "fuzz", LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 111}, RemoteAddr: remote}
		var m1, m2 runtime.MemStats
		runtime.ReadMemStats(&m1)
		err = handler.Handle(context.Background(), c, reply)
		runtime.ReadMemStats(&m2)
		if allocated := m2.TotalAlloc - m1.TotalAlloc; allocated > uint64(len(args))+64<<10 {
			t.Errorf("%s.%s with %d bytes of arguments allocated %d bytes", prog.Name, handler.Name, len(args), allocated)
		}

		// What the arguments are, decoded independently of the handler.
		kind := argKind(prog.Version, p)
		decodes := true
		switch kind {
		case "mapping":
			m, derr := decodeMapping(xdr.NewReader(args, 0))
			if decodes = derr == nil; decodes {
				var w xdr.Writer
				m.encode(&w)
				if again, _ := decodeMapping(xdr.NewReader(w.Buf, 0)); len(w.Buf) != len(args) || again != m {
					t.Fatalf("mapping %x decodes as %+v, which encodes as %x", args, m, w.Buf)
				}
			}
		case "rpcb":
			b, derr := decodeRPCB(xdr.NewReader(args, 0))
			if decodes = derr == nil; decodes {
				if len(b.netid) > maxString || len(b.addr) > maxString || len(b.owner) > maxString {
					t.Fatalf("rpcb with strings over the bound decoded: %d %d %d", len(b.netid), len(b.addr), len(b.owner))
				}
				var w xdr.Writer
				b.encode(&w)
				if again, _ := decodeRPCB(xdr.NewReader(w.Buf, 0)); len(w.Buf) != len(args) || again != b {
					t.Fatalf("rpcb %x decodes as %+v, which encodes as %x", args, b, w.Buf)
				}
			}
		case "none":
			decodes = len(args) == 0
		}
		changes := p == ProcSet || p == ProcUnset
		switch {
		case errors.Is(err, oncrpc.ErrGarbageArgs):
			if decodes || kind == "ignored" {
				t.Fatalf("%s.%s of %x: GARBAGE_ARGS", prog.Name, handler.Name, args)
			}
		case !decodes:
			t.Fatalf("%s.%s of %x answered %v; the arguments do not decode", prog.Name, handler.Name, args, err)
		case errors.Is(err, oncrpc.ErrWeakAuth):
			if !changes || local {
				t.Fatalf("%s.%s denied (local %v)", prog.Name, handler.Name, local)
			}
		case err != nil:
			t.Fatalf("%s.%s: %v", prog.Name, handler.Name, err)
		case changes && !local:
			t.Fatalf("%s.%s from another host answered", prog.Name, handler.Name)
		}
		after := s.table.list()
		if (err != nil || !changes) && !reflect.DeepEqual(after, before) {
			t.Fatalf("%s.%s (%v) changed the list", prog.Name, handler.Name, err)
		}
		own := 0
		for _, m := range after {
			if m.fixed {
				own++
			}
		}
		if own != len(testServices) || len(after) > len(testServices)+maxRegistered {
			t.Fatalf("after %s.%s: %d own mappings, %d in all", prog.Name, handler.Name, own, len(after))
		}
		for _, sv := range testServices {
			if m, ok := s.table.find(sv.Program, sv.Version, sv.Netid, false); !ok || !m.fixed || m.uaddr != FormatUaddr(sv.Addr) {
				t.Fatalf("after %s.%s: %v is now %+v", prog.Name, handler.Name, sv, m)
			}
		}
		if err != nil {
			return
		}
		r := xdr.NewReader(reply.Buf, 0)
		switch {
		case p == ProcNull:
		case changes:
			r.Bool()
		case prog.Version == VersionPMAP && p == ProcGetport, p == ProcGettime:
			r.Uint32()
		case p == ProcGetaddr || p == ProcGetversaddr:
			uaddr := string(r.Opaque())
			if uaddr != "" && !strings.Contains(uaddr, ".") {
				t.Fatalf("GETADDR answered %q", uaddr)
			}
		case p == ProcDump && prog.Version == VersionPMAP:
			for r.Bool() {
				r.Fixed(16)
			}
		case p == ProcDump:
			if _, derr := decodeDump(reply.Buf); derr != nil {
				t.Fatalf("DUMP: %v", derr)
			}
			r.Pos = len(r.Buf)
		default:
			t.Fatalf("no check for %s.%s", prog.Name, handler.Name)
		}
		if r.Err() != nil || r.Remaining() != 0 {
			t.Fatalf("%s.%s reply %x does not decode (%v, %d bytes left)", prog.Name, handler.Name, reply.Buf, r.Err(), r.Remaining())
		}
	})
}

// argKind names the argument type of a procedure: "mapping", "rpcb", "none" (void,
// checked), "ignored" (NULL takes anything, as RPC servers do).
func argKind(vers uint32, p Proc) string {
	switch {
	case p == ProcNull:
		return "ignored"
	case p == ProcDump || p == ProcGettime:
		return "none"
	case vers == VersionPMAP:
		return "mapping"
	}
	return "rpcb"
}

// TestSeedCorpus keeps testdata/fuzz/ in step with the seeds below (package fuzzcorpus).
func TestSeedCorpus(t *testing.T) {
	seed := func(name string, version uint32, p Proc, local bool, args []byte) fuzzcorpus.Seed {
		// The version argument is the index into Programs(): 0, 1, 2 for v2, v3, v4.
		return fuzzcorpus.Seed{Name: name, Values: []any{uint8(version - VersionPMAP), uint8(p), local, args}}
	}
	long := strings.Repeat("n", maxString+1)
	claim := func(n uint32) []byte {
		return []byte{0, 0, 0, 1, 0, 0, 0, 1, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}
	}
	fuzzcorpus.Check(t, "FuzzPortmapArgs", []fuzzcorpus.Seed{
		seed("null", 2, ProcNull, false, nil),
		seed("null-with-args", 4, ProcNull, false, []byte{1, 2, 3}),
		seed("getport-nfs", 2, ProcGetport, false, mappingArgs(100003, 3, ProtoTCP, 0)),
		seed("getport-other-version", 2, ProcGetport, false, mappingArgs(100003, 2, ProtoTCP, 0)),
		seed("getport-short", 2, ProcGetport, false, mappingArgs(100003, 3, ProtoTCP, 0)[:14]),
		seed("getport-trailing", 2, ProcGetport, false, append(mappingArgs(100003, 3, ProtoTCP, 0), 0, 0, 0, 0)),
		seed("pmap-set-local", 2, ProcSet, true, mappingArgs(100099, 1, ProtoUDP, 700)),
		seed("pmap-set-remote", 2, ProcSet, false, mappingArgs(100099, 1, ProtoUDP, 700)),
		seed("pmap-set-own", 2, ProcSet, true, mappingArgs(100003, 3, ProtoTCP, 2050)),
		seed("pmap-unset-own", 2, ProcUnset, true, mappingArgs(100005, 3, 0, 0)),
		seed("pmap-dump", 2, ProcDump, false, nil),
		seed("pmap-dump-args", 2, ProcDump, false, []byte{0, 0, 0, 0}),
		seed("getaddr-tcp", 3, ProcGetaddr, false, rpcbArgs(100003, 3, NetidTCP, "")),
		seed("getaddr-transport", 4, ProcGetaddr, false, rpcbArgs(100005, 3, "", "")),
		seed("getaddr-wildcard", 4, ProcGetaddr, false, rpcbArgs(100021, 4, NetidTCP, "")),
		seed("getaddr-long-netid", 3, ProcGetaddr, false, rpcbArgs(100003, 3, long, "")),
		seed("getaddr-length-claim", 4, ProcGetaddr, false, claim(0xfffffff0)),
		seed("getversaddr", 4, ProcGetversaddr, false, rpcbArgs(100003, 2, NetidTCP, "")),
		seed("rpcb-set-local", 4, ProcSet, true, rpcbArgs(100099, 1, NetidTCP6, "::1.2.188")),
		seed("rpcb-set-bad-uaddr", 3, ProcSet, true, rpcbArgs(100099, 1, NetidTCP, "127.0.0.1.2.288")),
		seed("rpcb-set-remote", 3, ProcSet, false, rpcbArgs(100099, 1, NetidTCP, "127.0.0.1.2.188")),
		seed("rpcb-unset-all-own", 4, ProcUnset, true, rpcbArgs(100003, 3, "", "")),
		seed("rpcb-dump", 3, ProcDump, false, nil),
		seed("gettime", 4, ProcGettime, false, nil),
	})
}
