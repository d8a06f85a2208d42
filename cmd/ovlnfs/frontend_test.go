package main

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
)

func TestReadRecordJoinsFragments(t *testing.T) {
	client, server := net.Pipe()
	defer client.Close()
	go func() {
		var w bytes.Buffer
		frag := func(data string, last bool) {
			mark := uint32(len(data))
			if last {
				mark |= lastFragment
			}
			_ = binary.Write(&w, binary.BigEndian, mark)
			w.WriteString(data)
		}
		frag("abcd", false)
		frag("efgh", true)
		_, _ = client.Write(w.Bytes())
	}()
	got, err := readRecord(server)
	if err != nil || string(got) != "abcdefgh" {
		t.Fatalf("readRecord = %q, %v", got, err)
	}
}

// readdirCall is a READDIR or READDIRPLUS call record with the given cookie and verifier.
func readdirCall(proc uint32, cookie, verifier uint64) []byte {
	var w xdrWriter
	for _, v := range []uint32{7, rpcCall, 2, progNFS, 3, proc, 0, 0, 0, 0} { // AUTH_NULL twice
		w.uint32(v)
	}
	w.opaque([]byte("dirhandle"))
	w.buf = binary.BigEndian.AppendUint64(w.buf, cookie)
	w.buf = binary.BigEndian.AppendUint64(w.buf, verifier)
	w.uint32(4096)
	if proc == procReaddirplus {
		w.uint32(65536)
	}
	return w.buf
}

// A listing that starts over (cookie 0) must not be answered from the snapshot an old
// verifier names; a listing that continues must keep its verifier.
func TestReaddirVerifierDroppedAtCookieZero(t *testing.T) {
	fe := &frontEnd{}
	inspect := func(record []byte) ([]byte, bool) {
		h, ok := parseCallHeader(record)
		if !ok {
			return record, false
		}
		fe.inspectCall(h, record) // rewrites the record in place
		return record, true
	}
	for _, proc := range []uint32{procReaddir, procReaddirplus} {
		got, ok := inspect(readdirCall(proc, 0, 0xfeedface))
		if want := readdirCall(proc, 0, 0); !ok || !bytes.Equal(got, want) {
			t.Errorf("proc %d cookie 0: verifier kept:\n got %x\nwant %x", proc, got, want)
		}
		in := readdirCall(proc, 42, 0xfeedface)
		got, ok = inspect(bytes.Clone(in))
		if !ok || !bytes.Equal(got, in) {
			t.Errorf("proc %d cookie 42: record changed:\n got %x\nwant %x", proc, got, in)
		}
	}
	// A truncated call is passed through untouched (go-nfs answers it).
	short := readdirCall(procReaddir, 0, 0xfeedface)[:60]
	if got, _ := inspect(bytes.Clone(short)); !bytes.Equal(got, short) {
		t.Errorf("truncated call rewritten: %x", got)
	}
}
