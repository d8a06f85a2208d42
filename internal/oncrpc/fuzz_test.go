package oncrpc

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"slices"
	"testing"

	"github.com/ovlnfs/ovlnfs/internal/fuzzcorpus"
	"github.com/ovlnfs/ovlnfs/internal/xdr"
)

// Fuzz targets of what the server decodes before any handler runs: the record stream, the
// call header and the AUTH_UNIX credential. `go test` runs their seed corpora
// (testdata/fuzz/<target>/); a longer run is `go test -run '^$' -fuzz FuzzReadRecord
// -fuzztime 5m ./internal/oncrpc/` (one target at a time).

// countingReader supplies a fuzzed stream and checks each buffer ReadRecord asks it to
// fill: the memory behind it may exceed what has arrived so far by two chunks, never by
// what a fragment header claims.
type countingReader struct {
	t        *testing.T
	data     []byte
	supplied int
}

// slack is what a returned record's capacity may exceed twice its length by (size-class
// rounding of small slices).
const slack = 1 << 10

func (r *countingReader) Read(p []byte) (int, error) {
	// ReadRecord's buffer is record[start:] with start <= supplied. slices.Grow reallocates
	// only when fewer than a chunk is free, so the capacity it grows from is under
	// start+chunk, and it at most doubles that: what is left for this read is under
	// start + 2 chunks. (One chunk is not enough: 8 bytes then a 64 KiB chunk is a
	// 65544-byte allocation, rounded up to 72 KiB.)
	if cap(p) > r.supplied+2*readChunk {
		r.t.Fatalf("ReadRecord reads into %d bytes of capacity after %d bytes arrived", cap(p), r.supplied)
	}
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.data)
	r.data = r.data[n:]
	r.supplied += n
	return n, nil
}

// referenceRecords splits a stream into records the plain way: a reference for
// ReadRecord's results and its error.
func referenceRecords(stream []byte) ([][]byte, error) {
	var records [][]byte
	for {
		var record []byte
		fragments := 0
		for {
			if len(stream) < 4 {
				switch {
				case len(stream) > 0:
					return records, io.ErrUnexpectedEOF
				case len(record) > 0:
					return records, io.ErrUnexpectedEOF
				}
				return records, io.EOF
			}
			m := binary.BigEndian.Uint32(stream)
			stream = stream[4:]
			size := int(m &^ lastFragment)
			if len(record)+size > MaxRecordSize {
				return records, ErrRecordTooLarge
			}
			if len(stream) < size {
				return records, io.ErrUnexpectedEOF
			}
			record = append(record, stream[:size]...)
			stream = stream[size:]
			fragments++
			if m&lastFragment != 0 {
				break
			}
		}
		if record == nil {
			record = []byte{}
		}
		records = append(records, record)
	}
}

// FuzzReadRecord reads a fuzzed stream record by record: no panic, the records and the
// final error are what the reference parser finds, and memory stays within the bytes that
// arrived (each buffer filled is at most what arrived plus two 64 KiB chunks; a returned
// record's capacity at most twice its length, plus rounding).
func FuzzReadRecord(f *testing.F) {
	f.Fuzz(func(t *testing.T, stream []byte) {
		want, wantErr := referenceRecords(stream)
		r := &countingReader{t: t, data: stream}
		for i := 0; ; i++ {
			rec, err := ReadRecord(r)
			if err != nil {
				if !errors.Is(err, wantErr) {
					t.Fatalf("record %d: error %v, want %v", i, err, wantErr)
				}
				if i != len(want) {
					t.Fatalf("%d records read, want %d", i, len(want))
				}
				return
			}
			if i >= len(want) || !bytes.Equal(rec, want[i]) {
				t.Fatalf("record %d = %x, want one of %d records", i, rec, len(want))
			}
			if cap(rec) > 2*len(rec)+slack {
				t.Fatalf("record of %d bytes holds %d bytes of capacity", len(rec), cap(rec))
			}
		}
	})
}

// FuzzParseCredential: no panic; a flavor other than AUTH_UNIX is nobody and never bad; a
// body that parses has at most 16 groups and is what AuthUnixBody encodes for its fields
// (the stamp, which the server ignores, and the padding of the machine name aside).
func FuzzParseCredential(f *testing.F) {
	f.Fuzz(func(t *testing.T, flavor uint32, body []byte) {
		c, bad := ParseCredential(flavor, body)
		if flavor != AuthUnix {
			if bad || c.Unix || c.UID != Nobody || c.GID != Nobody || c.Groups != nil {
				t.Fatalf("flavor %d: %+v bad=%v, want nobody", flavor, c, bad)
			}
			return
		}
		if bad {
			if c.Unix || c.UID != Nobody || c.GID != Nobody {
				t.Fatalf("bad credential parsed as %+v", c)
			}
			return
		}
		if !c.Unix || len(c.Groups) > maxAuthGroups {
			t.Fatalf("AUTH_UNIX parsed as %+v", c)
		}
		r := xdr.NewReader(body, 4)
		machine := r.Opaque()
		if r.Err() != nil || len(machine) > maxMachineName {
			t.Fatalf("accepted a machine name that does not decode: %v, %d bytes", r.Err(), len(machine))
		}
		normal := slices.Clone(body)
		clear(normal[:4])                                                             // stamp
		clear(normal[8+len(machine) : 8+len(machine)+len(xdr.Padding(len(machine)))]) // padding
		if again := AuthUnixBody(string(machine), c.UID, c.GID, c.Groups...); !bytes.Equal(again, normal) {
			t.Fatalf("body %x parsed as %+v, which encodes as %x", body, c, again)
		}
	})
}

// FuzzParseHeader: no panic; a header that parses is a call whose fields are the record's
// first words, whose arguments begin inside the record on a 4-byte boundary, and which the
// dispatch table either refuses with a reply to its XID or hands to a procedure.
func FuzzParseHeader(f *testing.F) {
	handler := func(context.Context, *Call, *Reply) error { return nil }
	table, err := newDispatchTable([]Program{
		{Name: "A", Number: 100003, Version: 3, Procedures: []Procedure{{Name: "NULL", Handle: handler}, {}, {Name: "TWO", Handle: handler}}},
		{Name: "B", Number: 100005, Version: 1, Procedures: []Procedure{{Name: "NULL", Handle: handler}}},
		{Name: "B", Number: 100005, Version: 3, Procedures: []Procedure{{Name: "NULL", Handle: handler}}},
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, record []byte) {
		h, ok := parseHeader(record)
		if !ok {
			return
		}
		r := xdr.NewReader(record, 0)
		words := [6]uint32{h.xid, h.msgType, h.rpcVers, h.prog, h.vers, h.proc}
		for i, w := range words {
			if got := r.Uint32(); got != w {
				t.Fatalf("header word %d = %d, record has %d", i, w, got)
			}
		}
		if h.msgType != MsgCall || h.argsAt > len(record) || h.argsAt%4 != 0 || h.argsAt < 40 {
			t.Fatalf("call header %+v of a %d-byte record", h, len(record))
		}
		if h.badCred && h.cred.Unix {
			t.Fatalf("a bad credential serves as %+v", h.cred)
		}
		_, proc, refusal := table.lookup(&h)
		switch {
		case refusal != nil:
			if proc != nil || len(refusal) < 4 || binary.BigEndian.Uint32(refusal) != h.xid {
				t.Fatalf("refusal %x of XID %d", refusal, h.xid)
			}
			if o := ReplyOutcome(refusal); o != "PROG_UNAVAIL" && o != "PROG_MISMATCH" && o != "PROC_UNAVAIL" {
				t.Fatalf("refused with %s", o)
			}
		case proc == nil || proc.Handle == nil:
			t.Fatalf("call %d.%d.%d dispatched to no handler", h.prog, h.vers, h.proc)
		}
		_ = table.name(h.prog, h.vers, h.proc)
	})
}

// TestSeedCorpus keeps testdata/fuzz/ in step with the seeds below (package fuzzcorpus).
func TestSeedCorpus(t *testing.T) {
	fuzzcorpus.Check(t, "FuzzReadRecord", recordSeeds())
	fuzzcorpus.Check(t, "FuzzParseCredential", credentialSeeds())
	fuzzcorpus.Check(t, "FuzzParseHeader", headerSeeds())
}

func fragment(data []byte, last bool) []byte {
	mark := uint32(len(data))
	if last {
		mark |= lastFragment
	}
	return append(binary.BigEndian.AppendUint32(nil, mark), data...)
}

func recordSeeds() []fuzzcorpus.Seed {
	claim := func(size uint32, last bool, data string) []byte {
		if last {
			size |= lastFragment
		}
		return append(binary.BigEndian.AppendUint32(nil, size), data...)
	}
	call := fragment(callRecord(7, 100003, 3, 0, AuthUnix, AuthUnixBody("test", 0, 0), nil), true)
	seed := func(name string, stream ...[]byte) fuzzcorpus.Seed {
		return fuzzcorpus.Seed{Name: name, Values: []any{bytes.Join(stream, nil)}}
	}
	return []fuzzcorpus.Seed{
		seed("two-fragments", fragment([]byte("abcd"), false), fragment([]byte("efgh"), true)),
		seed("two-records", call, fragment([]byte("next"), true)),
		seed("empty-record", fragment(nil, true)),
		seed("empty-fragments", fragment(nil, false), fragment(nil, false), fragment([]byte("x"), true)),
		seed("huge-claim", claim(1<<20, true, "ten bytes.")),
		seed("small-then-huge-claim", fragment([]byte("abcd"), false), claim(3<<20, true, "000")),
		seed("max-claim", claim(MaxRecordSize, true, "")),
		seed("too-large", claim(MaxRecordSize+1, true, "")),
		seed("too-large-joined", fragment([]byte("12345678"), false), claim(MaxRecordSize-4, true, "")),
		seed("short-mark", []byte{0, 0}),
		seed("short-data", claim(100, true, "abc")),
		seed("mark-missing-after-fragment", fragment([]byte("abcd"), false)),
	}
}

// callRecord is a call's header (and args), without a record mark.
func callRecord(xid, prog, vers, proc, flavor uint32, body, args []byte) []byte {
	var w xdr.Writer
	for _, v := range []uint32{xid, MsgCall, RPCVersion, prog, vers, proc, flavor} {
		w.Uint32(v)
	}
	w.Opaque(body)
	w.Uint32(AuthNone) // verifier
	w.Opaque(nil)
	w.Fixed(args)
	return w.Buf
}

func credentialSeeds() []fuzzcorpus.Seed {
	seed := func(name string, flavor uint32, body []byte) fuzzcorpus.Seed {
		return fuzzcorpus.Seed{Name: name, Values: []any{flavor, body}}
	}
	sixteen := make([]uint32, 16)
	for i := range sixteen {
		sixteen[i] = uint32(i + 1)
	}
	oddPadding := AuthUnixBody("abc", 1, 2)
	oddPadding[4+4+3] = 0xff
	return []fuzzcorpus.Seed{
		seed("root", AuthUnix, AuthUnixBody("test", 0, 0)),
		seed("user-groups", AuthUnix, AuthUnixBody("client.example", 1000, 100, 4, 27)),
		seed("sixteen-groups", AuthUnix, AuthUnixBody("h", 1, 1, sixteen...)),
		seed("seventeen-groups", AuthUnix, AuthUnixBody("h", 1, 1, append(sixteen, 17)...)),
		seed("machine-255", AuthUnix, AuthUnixBody(string(bytes.Repeat([]byte("m"), 255)), 5, 5)),
		seed("machine-256", AuthUnix, AuthUnixBody(string(bytes.Repeat([]byte("m"), 256)), 5, 5)),
		seed("trailing", AuthUnix, append(AuthUnixBody("t", 1, 1), 0, 0, 0, 0)),
		seed("short", AuthUnix, AuthUnixBody("test", 1, 1, 3)[:24]),
		seed("padding-not-zero", AuthUnix, oddPadding),
		seed("over-400", AuthUnix, make([]byte, 404)),
		seed("none", AuthNone, nil),
		seed("gss", 6, []byte{0, 0, 0, 1}),
	}
}

func headerSeeds() []fuzzcorpus.Seed {
	seed := func(name string, record []byte) fuzzcorpus.Seed {
		return fuzzcorpus.Seed{Name: name, Values: []any{record}}
	}
	unix := AuthUnixBody("test", 1000, 1000, 10)
	wrongVersion := callRecord(4, 100003, 3, 0, AuthNone, nil, nil)
	binary.BigEndian.PutUint32(wrongVersion[8:], 3)
	reply := callRecord(5, 100003, 3, 0, AuthNone, nil, nil)
	binary.BigEndian.PutUint32(reply[4:], MsgReply)
	badVerifier := callRecord(6, 100003, 3, 0, AuthNone, nil, nil)
	binary.BigEndian.PutUint32(badVerifier[36:], 401)
	return []fuzzcorpus.Seed{
		seed("null-none", callRecord(1, 100003, 3, 0, AuthNone, nil, nil)),
		seed("unix-args", callRecord(2, 100003, 3, 2, AuthUnix, unix, []byte{0, 0, 0, 4, 1, 2, 3, 4})),
		seed("bad-credential", callRecord(3, 100003, 3, 0, AuthUnix, unix[:12], nil)),
		seed("rpc-version-3", wrongVersion),
		seed("reply-not-call", reply),
		seed("verifier-over-400", badVerifier),
		seed("no-procedure", callRecord(7, 100003, 3, 1, AuthNone, nil, nil)),
		seed("proc-99", callRecord(8, 100003, 3, 99, AuthNone, nil, nil)),
		seed("prog-mismatch", callRecord(9, 100005, 2, 0, AuthNone, nil, nil)),
		seed("prog-unavail", callRecord(10, 100021, 4, 0, AuthNone, nil, nil)),
		seed("short", callRecord(11, 100003, 3, 0, AuthNone, nil, nil)[:30]),
	}
}
