package oncrpc

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
	got, err := ReadRecord(server)
	if err != nil || string(got) != "abcdefgh" {
		t.Fatalf("ReadRecord = %q, %v", got, err)
	}
}
