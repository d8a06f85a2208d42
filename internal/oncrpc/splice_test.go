package oncrpc

import (
	"bytes"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// spliceFixture is a file of size pseudo-random bytes.
func spliceFixture(t *testing.T, size int) (*os.File, []byte) {
	t.Helper()
	data := make([]byte, size)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	p := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f, data
}

// tcpPair is both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.FailNow()
	}
	// A record shorter than its mark would leave the reader waiting: fail instead.
	if err := client.SetReadDeadline(time.Now().Add(20 * time.Second)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

// A record whose data is spliced from a file arrives as the same record copied: mark,
// parts, the file's bytes, padding. The write runs against a small send buffer and a
// reader that starts late, so the splice has to wait for room in the socket.
func TestSplicedRecordOverTCP(t *testing.T) {
	f, data := spliceFixture(t, 3<<20+3)
	ps := NewPipes(1<<20, 4)
	defer ps.Close()
	server, client := tcpPair(t)
	if err := server.(*net.TCPConn).SetWriteBuffer(16 << 10); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		off  int64
		n    int
		want int // bytes Fill moves: fewer at the end of the file
	}{
		{0, 1 << 20, 1 << 20},
		{4096, 150_001, 150_001},                     // padded by 3
		{int64(len(data)) - 70_001, 1 << 20, 70_001}, // the end of the file
	}
	var rw recordWriter
	for _, c := range cases {
		p := ps.Get()
		if p == nil {
			t.Fatal("no pipe from a fresh pool")
		}
		got, err := p.Fill(int(f.Fd()), c.off, c.n)
		if err != nil || got != c.want || p.Len() != c.want {
			t.Fatalf("Fill(%d, %d) = %d, %v (Len %d), want %d", c.off, c.n, got, err, p.Len(), c.want)
		}
		head := []byte("head")
		done := make(chan error, 1)
		go func() { done <- rw.writeSpliced(server, [][]byte{head}, p) }()
		time.Sleep(20 * time.Millisecond) // the socket's buffers fill meanwhile
		record, err := ReadRecord(client)
		if err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil {
			t.Fatalf("writeSpliced: %v", err)
		}
		want := append(append([]byte("head"), data[c.off:c.off+int64(c.want)]...), make([]byte, (4-c.want%4)%4)...)
		if !bytes.Equal(record, want) {
			t.Errorf("record of %d bytes at %d: %d bytes, not the file's (want %d)", c.want, c.off, len(record), len(want))
		}
		if p.Len() != 0 {
			t.Errorf("pipe holds %d bytes after the write", p.Len())
		}
		p.Release()
	}
}

// A connection that is not a socket gets the pipe's bytes copied, in the same record.
func TestSplicedRecordCopiedWithoutSocket(t *testing.T) {
	f, data := spliceFixture(t, 100_000)
	ps := NewPipes(1<<20, 1)
	defer ps.Close()
	p := ps.Get()
	if _, err := p.Fill(int(f.Fd()), 10, 99_990); err != nil {
		t.Fatal(err)
	}
	server, client := net.Pipe()
	defer server.Close()
	defer client.Close()
	if err := client.SetReadDeadline(time.Now().Add(20 * time.Second)); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	var rw recordWriter
	go func() { done <- rw.writeSpliced(server, [][]byte{[]byte("hd")}, p) }()
	record, err := ReadRecord(client)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	want := append(append([]byte("hd"), data[10:]...), 0, 0)
	if !bytes.Equal(record, want) {
		t.Errorf("copied record of %d bytes differs from the file's %d", len(record), len(want))
	}
	p.Release()
}

// The pool hands out at most max pipes, reuses drained ones and closes one that still
// holds bytes (its reply failed part way).
func TestPipesBoundAndReuse(t *testing.T) {
	f, _ := spliceFixture(t, 8192)
	ps := NewPipes(1<<20, 2)
	a, b := ps.Get(), ps.Get()
	if a == nil || b == nil {
		t.Fatal("no pipes from a fresh pool")
	}
	if ps.Get() != nil {
		t.Fatal("a third pipe from a pool of two")
	}
	a.Release()
	if c := ps.Get(); c != a {
		t.Error("a drained pipe was not reused")
	}
	if _, err := b.Fill(int(f.Fd()), 0, 8192); err != nil {
		t.Fatal(err)
	}
	b.Release() // still full: closed
	if c := ps.Get(); c == nil || c == b || c.Len() != 0 {
		t.Errorf("after releasing a full pipe: got %v, want a new empty one", c)
	}
	ps.Close()
	if ps.Get() != nil {
		t.Error("a pipe from a closed pool")
	}
	if !ps.Fits(0, 1<<20) || ps.Fits(1, 1<<20) || !ps.Fits(4096, 1<<20) || !ps.Fits(5, 4000) {
		t.Error("Fits: a pipe of 1 MiB holds 256 whole pages")
	}
}
