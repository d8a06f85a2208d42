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

func TestLinkReplyToLINK3res(t *testing.T) {
	header := make([]byte, 24) // xid, REPLY, MSG_ACCEPTED, AUTH_NULL verifier, SUCCESS
	binary.BigEndian.PutUint32(header[4:], rpcReply)
	var ok xdrWriter
	ok.buf = append(ok.buf, header...)
	ok.uint32(0)                                // NFS3_OK
	ok.uint32(1)                                // go-nfs: "handle follows"
	ok.opaque([]byte("handle!"))                // go-nfs: the handle LINK3resok does not have
	ok.uint32(0)                                // post_op_attr: none
	ok.buf = append(ok.buf, make([]byte, 8)...) // wcc_data: none, none
	at, found := replyResultOffset(ok.buf)
	if !found || at != 24 {
		t.Fatalf("replyResultOffset = %d, %v", at, found)
	}
	got := linkReplyToLINK3res(ok.buf, at)
	want := append(append(append([]byte(nil), header...), 0, 0, 0, 0), make([]byte, 12)...)
	if !bytes.Equal(got, want) {
		t.Errorf("success reply:\n got %x\nwant %x", got, want)
	}

	var fail xdrWriter
	fail.buf = append(fail.buf, header...)
	fail.uint32(17)                                 // NFS3ERR_EXIST
	fail.buf = append(fail.buf, make([]byte, 8)...) // go-nfs: wcc_data only
	got = linkReplyToLINK3res(fail.buf, at)
	if len(got) != len(fail.buf)+4 || binary.BigEndian.Uint32(got[at:]) != 17 {
		t.Errorf("failure reply not given its post_op_attr: %x", got)
	}
}
