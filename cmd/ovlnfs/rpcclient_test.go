package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// A raw ONC RPC client over one TCP connection, for tests that need what the usual clients
// hide: RPC-level reply codes, and many calls in flight on one connection with replies
// matched by XID.

type rpcClient struct {
	t    testing.TB
	conn net.Conn

	wmu sync.Mutex
	mu  sync.Mutex
	xid uint32
	// waiting maps an XID to the channel its reply goes to.
	waiting map[uint32]chan []byte
	err     error
	done    chan struct{}
	// credFlavor and credBody are the credential calls carry: AUTH_UNIX for root
	// unless a test sets another.
	credFlavor uint32
	credBody   []byte
}

// authUnixBody encodes an AUTH_UNIX credential body.
func authUnixBody(uid, gid uint32, groups ...uint32) []byte {
	var cred xdrWriter
	cred.uint32(0)
	cred.opaque([]byte("test"))
	cred.uint32(uid)
	cred.uint32(gid)
	cred.uint32(uint32(len(groups)))
	for _, g := range groups {
		cred.uint32(g)
	}
	return cred.buf
}

// as makes the following calls carry an AUTH_UNIX credential for uid, gid and groups.
func (c *rpcClient) as(uid, gid uint32, groups ...uint32) {
	c.credFlavor, c.credBody = authUnix, authUnixBody(uid, gid, groups...)
}

func dialRPC(t testing.TB, addr string) *rpcClient {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := &rpcClient{t: t, conn: conn, xid: 0x1000, waiting: make(map[uint32]chan []byte), done: make(chan struct{}),
		credFlavor: authUnix, credBody: authUnixBody(0, 0)}
	go c.readLoop()
	t.Cleanup(func() {
		conn.Close()
		<-c.done
	})
	return c
}

func (c *rpcClient) readLoop() {
	defer close(c.done)
	for {
		record, err := readRecord(c.conn)
		if err != nil {
			c.mu.Lock()
			c.err = err
			for xid, ch := range c.waiting {
				close(ch)
				delete(c.waiting, xid)
			}
			c.mu.Unlock()
			return
		}
		xid := binary.BigEndian.Uint32(record)
		c.mu.Lock()
		ch := c.waiting[xid]
		delete(c.waiting, xid)
		c.mu.Unlock()
		if ch != nil {
			ch <- record
		}
	}
}

// start sends a call and returns the channel its reply arrives on (closed if the
// connection ends first). rpcVers lets a test send a wrong RPC version.
func (c *rpcClient) start(rpcVers, prog, vers, proc uint32, args []byte) <-chan []byte {
	c.mu.Lock()
	c.xid++
	xid := c.xid
	ch := make(chan []byte, 1)
	c.waiting[xid] = ch
	c.mu.Unlock()
	var w xdrWriter
	w.uint32(xid)
	w.uint32(rpcCall)
	w.uint32(rpcVers)
	w.uint32(prog)
	w.uint32(vers)
	w.uint32(proc)
	c.mu.Lock()
	w.uint32(c.credFlavor)
	w.opaque(c.credBody)
	c.mu.Unlock()
	w.uint32(0)
	w.uint32(0)
	w.buf = append(w.buf, args...)
	c.wmu.Lock()
	_, err := c.conn.Write(withRecordMark(w.buf))
	c.wmu.Unlock()
	if err != nil {
		c.t.Errorf("sending call: %v", err)
	}
	return ch
}

func (c *rpcClient) wait(ch <-chan []byte) []byte {
	select {
	case r, ok := <-ch:
		if !ok {
			c.t.Fatalf("connection ended before the reply: %v", c.err)
		}
		return r
	case <-time.After(30 * time.Second):
		c.t.Fatal("no reply within 30s")
	}
	return nil
}

func (c *rpcClient) call(prog, vers, proc uint32, args []byte) []byte {
	return c.wait(c.start(rpcVersion, prog, vers, proc, args))
}

// accepted checks a reply is MSG_ACCEPTED with the given accept_stat and returns a reader
// positioned after it.
func accepted(t testing.TB, reply []byte, want uint32) *xdrReader {
	t.Helper()
	r := &xdrReader{buf: reply, pos: 4}
	if r.uint32() != rpcReply || r.uint32() != msgAccepted {
		t.Fatalf("not an accepted reply: %x", reply)
	}
	r.skipAuth()
	if got := r.uint32(); got != want || r.err != nil {
		t.Fatalf("accept_stat = %d (%v), want %d", got, r.err, want)
	}
	return r
}

func opaqueArg(b []byte) []byte {
	var w xdrWriter
	w.opaque(b)
	return w.buf
}

// testServer runs `ovlnfs serve` in-process on 127.0.0.1 over fresh layers and stops it
// at cleanup.
type testServer struct {
	addr   string
	layout layout
	log    *lockedBuffer
}

func startTestServer(t testing.TB, files map[string]string, extraArgs ...string) *testServer {
	t.Helper()
	return startTestServerWith(t, nil, files, extraArgs...)
}

// startTestServerWith lets prepare change the layout (and fill it) before the server starts.
func startTestServerWith(t testing.TB, prepare func(*layout), files map[string]string, extraArgs ...string) *testServer {
	t.Helper()
	root := t.TempDir()
	l := layout{root: root, l1: filepath.Join(root, "l1"), l2: filepath.Join(root, "l2"),
		upper: filepath.Join(root, "upper"), work: filepath.Join(root, "work")}
	if prepare != nil {
		prepare(&l)
	}
	for _, d := range []string{l.l1, l.l2, l.upper, l.work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for name, content := range files {
		p := filepath.Join(l.l1, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	stderr := &lockedBuffer{}
	go func() {
		done <- run(ctx, append([]string{"serve", "--lowerdir=" + l.l1 + ":" + l.l2, "--upperdir=" + l.upper,
			"--workdir=" + l.work, "--listen=" + addr}, extraArgs...), io.Discard, stderr)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-done:
			if code != exitOK {
				t.Errorf("server exit status %d\n%s", code, stderr.String())
			}
		case <-time.After(40 * time.Second):
			t.Errorf("server did not stop")
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server never listened: %v\n%s", err, stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return &testServer{addr: addr, layout: l, log: stderr}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// mountRoot mounts "/" and returns the root file handle.
func (c *rpcClient) mountRoot() []byte {
	c.t.Helper()
	r := accepted(c.t, c.call(progMount, mountVersion, mountProcMnt, opaqueArg([]byte("/"))), acceptSuccess)
	if st := r.uint32(); st != 0 {
		c.t.Fatalf("MNT status %d", st)
	}
	fh := r.opaque()
	if r.err != nil {
		c.t.Fatal(r.err)
	}
	return append([]byte(nil), fh...)
}

// lookup returns the handle of name in dir.
func (c *rpcClient) lookup(dir []byte, name string) []byte {
	c.t.Helper()
	r := accepted(c.t, c.call(progNFS, nfsVersion, 3, append(opaqueArg(dir), opaqueArg([]byte(name))...)), acceptSuccess)
	if st := r.uint32(); st != 0 {
		c.t.Fatalf("LOOKUP %s: status %d", name, st)
	}
	return append([]byte(nil), r.opaque()...)
}

func (e mountEntry) String() string { return fmt.Sprintf("%s:%s", e.host, e.dir) }
